package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

// Placement: a manifest's placement names hosts (any one of them) and
// labels of agent.yaml's host.labels (all of them). A host takes a job
// only when it matches and, on a fleet, can stat the job's local source
// (another host's datastore is not this host's to read). A job the host
// whose folder it came from cannot take is left in the shared store
// marked with no host; every host of the fleet looks at such jobs at each
// heartbeat and the first that matches takes it (compare-and-set). While
// none does, the job's status text says why, from the live hosts'
// heartbeats: "no host matches placement datastore=ds02 (hosts: a[...])".
// The file it came from settles on its own host when the job ends
// wherever it ran (fleetfence.go).

// placementOf is the placement of r's manifest.
func placementOf(r *record) []string {
	var m struct {
		Placement []string `json:"placement"`
	}
	json.Unmarshal(r.VM, &m)
	return m.Placement
}

// matchPlacement reports whether a host named host with labels may run a
// job placed by terms: one of the names given (if any) and every label.
func matchPlacement(terms []string, host string, labels map[string]string) bool {
	named, nameOK := false, false
	for _, t := range terms {
		k, v, isLabel := strings.Cut(t, "=")
		if isLabel {
			if got, ok := labels[k]; !ok || got != v {
				return false
			}
			continue
		}
		named = true
		nameOK = nameOK || t == host
	}
	return !named || nameOK
}

// hostLabel is a host as a waiting reason lists it: name[k=v,...].
func hostLabel(name string, labels map[string]string) string {
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		kv = append(kv, k+"="+labels[k])
	}
	return name + "[" + strings.Join(kv, ",") + "]"
}

// waitingReason says why a job placed by terms waits, given the live
// hosts: none matches, or which would take it.
func waitingReason(terms []string, hosts []apitype.Host) string {
	var all, match []string
	for _, h := range hosts {
		if !h.Alive {
			continue
		}
		all = append(all, hostLabel(h.Name, h.Labels))
		if matchPlacement(terms, h.Name, h.Labels) {
			match = append(match, h.Name)
		}
	}
	p := strings.Join(terms, ",")
	if len(match) == 0 {
		return fmt.Sprintf("no host matches placement %s (hosts: %s)", p, strings.Join(all, ", "))
	}
	return fmt.Sprintf("waiting for a host matching placement %s to take it (%s)", p, strings.Join(match, ", "))
}

// sourceReadable reports whether this host can stat r's local source;
// a job with none (a vSphere source) is readable.
func sourceReadable(r *record) bool {
	var m manifest.Manifest
	if json.Unmarshal(r.VM, &m) != nil || m.Pipeline == nil || m.Pipeline.Load.SourcePath == "" {
		return true
	}
	_, err := os.Stat(m.Pipeline.Load.SourcePath)
	return err == nil
}

// mayTake reports whether this host may run r: its placement matches
// and, on a fleet, its source is readable here. Why not, when not.
func (a *Agent) mayTake(r *record) (bool, string) {
	terms := placementOf(r)
	if !matchPlacement(terms, a.host, a.cfg.Host.Labels) {
		return false, "placement " + strings.Join(terms, ",")
	}
	if a.st.db.shared() && !sourceReadable(r) {
		return false, "its source is not readable on " + a.host
	}
	return true, ""
}

// placeNewLocked decides, for a job just made, whether this host runs
// it; if not, the job is marked with no host (Host "") for a host that
// matches to take, and says why it waits. Called with a.mu held.
func (a *Agent) placeNewLocked(r *record) {
	ok, why := a.mayTake(r)
	if ok {
		return
	}
	r.Host = ""
	r.StatusText = a.reasonLocked(r)
	a.st.touch(r)
	a.log.Infof(jobFields(r), "job %s: %s does not match this host (%s); left for a host of the fleet that does", r.ID, why, hostLabel(a.host, a.cfg.Host.Labels))
}

// reasonLocked is the waiting reason of an unplaced job, from the fleet's
// hosts (this host alone on one host).
func (a *Agent) reasonLocked(r *record) string {
	terms := placementOf(r)
	if len(terms) == 0 {
		return "its source is not readable on " + a.host + "; waiting for a host of the fleet that can read it"
	}
	return waitingReason(terms, a.hostsLocked(context.Background()))
}

// hostsLocked lists the fleet's hosts; on one host, this host alone.
func (a *Agent) hostsLocked(ctx context.Context) []apitype.Host {
	if a.st.db.shared() {
		ctx, cancel := context.WithTimeout(ctx, a.heartbeatEvery())
		defer cancel()
		hs, err := a.st.db.hosts(ctx, a.cfg.Store.LeaseTimeout.D())
		if err == nil {
			return hs
		}
		a.log.Warnf(nil, "cannot read the fleet's hosts: %v", err)
	}
	_, running := a.counts()
	return []apitype.Host{{Name: a.host, Labels: a.cfg.Host.Labels, Busy: running, MaxWorkers: a.cfg.MaxConcurrentJobs,
		Queue: a.queueState(), HeartbeatAt: a.now(), Alive: true}}
}

// Hosts answers the fleet's hosts (D-Bus ListHosts, REST /api/workflow/hosts).
func (a *Agent) Hosts(ctx context.Context) ([]apitype.Host, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st == nil {
		return nil, apierr.New(apierr.Internal, "the job store is not open")
	}
	return a.hostsLocked(ctx), nil
}

// placeTickLocked, at a fleet heartbeat, takes the jobs no host holds
// that this host matches, and refreshes the waiting reason of this
// host's own jobs that none has taken yet. Called with a.mu held.
func (a *Agent) placeTickLocked(ctx context.Context) {
	if a.queueState() != queueRunning {
		return // paused or draining: this host takes no new work
	}
	free, err := a.st.db.unplaced(ctx, 200)
	if err != nil {
		a.log.Warnf(nil, "cannot look for jobs waiting for a host: %v", err)
		return
	}
	var hosts []apitype.Host
	changed := false
	for _, j := range free {
		mine := a.st.Jobs[j.r.ID]
		if ok, _ := a.mayTake(j.r); ok {
			took, err := a.st.db.claimUnplaced(ctx, j.rowid)
			if err != nil {
				a.log.Warnf(nil, "cannot take job %s: %v", j.r.ID, err)
				continue
			}
			if !took {
				continue // another host was first
			}
			r := j.r
			if mine != nil {
				r = mine
			} else {
				a.st.Jobs[r.ID] = r
				a.st.rows[r.ID] = j.rowid
			}
			r.Host, r.StatusText = a.host, ""
			a.st.touch(r)
			a.log.Infof(jobFields(r), "job %s: placement %s matches this host (%s); taken", r.ID, strings.Join(placementOf(r), ","), hostLabel(a.host, a.cfg.Host.Labels))
			a.pend.add(r)
			a.emitLocked(apitype.JobChanged, r, []string{"Host", "StatusText"})
			changed = true
			continue
		}
		if mine == nil || mine.State != jobs.Pending {
			continue
		}
		if hosts == nil {
			hosts = a.hostsLocked(ctx)
		}
		why := "its source is not readable on " + a.host + "; waiting for a host of the fleet that can read it"
		if terms := placementOf(mine); len(terms) > 0 {
			why = waitingReason(terms, hosts)
		}
		if why != mine.StatusText {
			mine.StatusText = why
			a.st.touch(mine)
			a.emitLocked(apitype.JobChanged, mine, []string{"StatusText"})
			changed = true
		}
	}
	if changed {
		a.save()
		a.wake()
	}
}

// takeUnplacedLocked makes a job no host holds this host's when it may
// take it. On a fleet that is the heartbeat's (placeTickLocked: the
// shared row decides); on one host the job is this host's as soon as it
// matches (a job of an old store, made before jobs had hosts, always does
// unless it has a placement).
func (a *Agent) takeUnplacedLocked(r *record) bool {
	if a.st.db.shared() {
		return false
	}
	if ok, _ := a.mayTake(r); !ok {
		if r.StatusText == "" {
			r.StatusText = a.reasonLocked(r)
			a.st.touch(r)
		}
		return false
	}
	r.Host, r.StatusText = a.host, ""
	a.st.touch(r)
	return true
}

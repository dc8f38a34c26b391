package agent

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
)

// maxAttempts bounds how often a job interrupted by a reboot is run again.
const maxAttempts = 2

// recoverLocked makes the store agree with systemd and the queue after a start:
// it re-attaches to job units still running, finishes jobs whose unit
// stopped while the agent was down, queues again jobs that never started,
// completes interrupted settles and claims files left in processing/ that
// no job knows. Called with a.mu held, before READY=1.
func (a *Agent) recoverLocked(ctx context.Context) error {
	loaded, err := a.units.List(ctx)
	if err != nil {
		return err
	}
	var running []*record
	for _, r := range a.st.Jobs {
		if r.State == jobs.Running {
			running = append(running, r)
		}
	}
	sort.Slice(running, func(i, j int) bool { return running[i].ID < running[j].ID })
	for _, r := range running {
		info, err := a.units.Get(ctx, r.Unit)
		if err != nil {
			return err
		}
		a.recoverJobLocked(ctx, r, info)
	}
	for _, u := range loaded {
		if a.jobByUnit(u.Name) == nil {
			a.adoptLocked(ctx, u)
		}
	}
	var open []*claim
	for _, c := range a.st.Claims {
		open = append(open, c)
	}
	sort.Slice(open, func(i, j int) bool { return open[i].Name < open[j].Name })
	for _, c := range open {
		if c.Target == nil && !exists(filepath.Join(a.q.Dir(queue.Processing), c.Name)) {
			a.dropVanishedLocked(c)
			continue
		}
		a.settleClaimLocked(c)
	}
	if removed, err := a.q.RemoveTemps(); err != nil {
		a.log.Warnf(nil, "%v", err)
	} else if len(removed) > 0 {
		a.log.Infof(nil, "removed %d temporary files a cut-short write left in processing/", len(removed))
	}
	names, err := a.q.Processing()
	if err != nil {
		return err
	}
	// Files claimed by a burst the agent died in the middle of: their jobs
	// are saved in batches, as the burst would have.
	run := claimRun{a: a}
	for _, name := range names {
		if _, known := a.st.Claims[name]; known {
			continue
		}
		kind := kindManifest
		if k, ok := queue.KindOf(name); ok && k == queue.Image {
			kind = kindImage
		}
		fi, err := os.Lstat(filepath.Join(a.q.Dir(queue.Processing), name))
		if err != nil {
			continue
		}
		uid := fileOwner(fi)
		a.log.Infof(Fields{FieldManifest: name}, "%s was claimed but has no job; queuing it again", name)
		run.add(name, name, kind, fi.ModTime(), uid, uid)
	}
	run.flush()
	a.save()
	return nil
}

func (a *Agent) recoverJobLocked(ctx context.Context, r *record, info UnitInfo) {
	f := jobFields(r)
	switch {
	case !info.Gone() && !info.Finished():
		if err := a.units.Ref(ctx, r.Unit); err != nil {
			a.log.Warnf(f, "%v", err)
		}
		r.sawActive = true
		a.log.Infof(f, "re-attached to %s (%s)", r.Unit, info.ActiveState)
		a.applyUnitLocked(ctx, r, info, nil)
	case !info.Gone():
		a.log.Infof(f, "%s finished while the agent was not running", r.Unit)
		a.unitEndedLocked(ctx, r, info)
	default:
		rep, _ := readReport(r.JobDir)
		switch {
		case rep != nil:
			a.log.Infof(f, "%s finished while the agent was not running", r.Unit)
			a.unitEndedLocked(ctx, r, UnitInfo{})
		case !a.workerStarted(r):
			a.setStateLocked(r, jobs.Pending, transition{why: "never started", notRun: true})
			a.pend.add(r)
		case r.BootID != "" && r.BootID != a.bootID() && r.Attempt < maxAttempts && !r.Cancel:
			a.requeueLocked(r, nil, "the machine stopped while it ran (a new boot)")
		default:
			a.finishLocked(r, jobs.Failed, r.Stage, "the worker ended without a report while the agent was not running (killed, or the machine stopped)", nil)
		}
	}
}

// adoptLocked takes over a running job unit the store does not know (the store
// was lost or is older than the unit), from the job's directory, so that
// its manifest is not claimed and run a second time.
func (a *Agent) adoptLocked(ctx context.Context, u UnitInfo) {
	id, _ := jobs.IDFromUnit(u.Name) // List gives job units only
	dir := filepath.Join(a.jobsDir(), id)
	data, err := os.ReadFile(filepath.Join(dir, JobFile))
	var spec JobSpec
	if err == nil {
		err = json.Unmarshal(data, &spec)
	}
	vm, verr := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil || verr != nil || spec.ID != id {
		a.log.Warnf(Fields{FieldJobID: id}, "unit %s belongs to no known job; leaving it alone", u.Name)
		return
	}
	if r := a.st.Jobs[id]; r != nil {
		if r.State.Ready() {
			return // settled before the unit was collected
		}
	}
	if a.st.db.shared() {
		// A fleet: the job may be another host's now (this host lost
		// its lease and the agent restarted): fenced, not adopted.
		if owner, found, err := a.st.db.ownerOfJob(ctx, id); err == nil && found && owner != a.host {
			a.log.Warnf(Fields{FieldJobID: id}, "job %s: %s holds it now (this host lost its lease); stopping %s and giving up the claim here", id, owner, u.Name)
			if err := a.units.Stop(ctx, u.Name); err != nil {
				a.log.Warnf(Fields{FieldJobID: id}, "cannot stop %s: %v", u.Name, err)
			}
			return
		}
	}
	r := &record{
		Job: jobs.Job{ID: id, Name: spec.Name, Batch: spec.Batch, Manifest: spec.Claim, Unit: u.Name, SubmittedBy: -1,
			Priority: spec.Priority, CreatedAt: a.now(), Host: a.host},
		Claim: spec.Claim, VM: vm, JobDir: dir, OutputDir: spec.OutputDir,
	}
	r.enterState(jobs.Running, transition{bootID: a.bootID()}, r.CreatedAt)
	a.st.Jobs[id] = r
	a.st.touch(r)
	c := a.st.Claims[spec.Claim]
	if c == nil {
		kind := kindManifest
		if k, ok := queue.KindOf(spec.Claim); ok && k == queue.Image {
			kind = kindImage
		}
		c = &claim{Name: spec.Claim, Original: spec.Claim, Kind: kind, Batch: spec.Batch != "", ClaimedAt: a.now(), SubmittedBy: -1}
		a.st.putClaim(c)
	}
	if !slices.Contains(c.Jobs, id) {
		c.Jobs = append(c.Jobs, id)
		a.st.touchClaim(c)
	}
	a.log.Warnf(jobFields(r), "adopted running unit %s from its job directory", u.Name)
	info, err := a.units.Get(ctx, u.Name)
	if err == nil {
		a.recoverJobLocked(ctx, r, info)
	}
}

// dropVanishedLocked forgets a claim whose file is gone from processing/ before
// anything ran (a Submit cut short by a crash, or an admin removing it).
func (a *Agent) dropVanishedLocked(c *claim) {
	for _, id := range c.Jobs {
		if r := a.st.Jobs[id]; r != nil && r.State == jobs.Running {
			return // settles (with its report) when the job ends
		}
	}
	for _, id := range c.Jobs {
		if r := a.st.Jobs[id]; r != nil && !r.State.Ready() {
			a.setStateLocked(r, jobs.Failed, transition{why: "its manifest disappeared from processing/"})
		}
	}
	a.st.dropClaim(c)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// workDirOf is the scratch directory the worker of the job in jobDir gets
// (engine.Options.WorkDir): FIX's overlay of the source, and more.
func workDirOf(jobDir string) string { return filepath.Join(jobDir, "work") }

// removeScratch removes what the job's worker left in its work directory.
// The engine removes it when Run returns, but a worker killed (kill -9, an
// OOM kill) or cut short with the machine (a crash, a power loss) leaves
// FIX's overlay there, and the job directory is kept. Called when a job
// leaves the running state (settled or queued again), when no worker of
// it runs.
func (a *Agent) removeScratch(r *record) {
	if r.JobDir == "" {
		return
	}
	if err := os.RemoveAll(workDirOf(r.JobDir)); err != nil {
		a.log.Warnf(jobFields(r), "cannot remove the job's scratch directory: %v", err)
	}
}

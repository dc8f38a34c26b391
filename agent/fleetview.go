package agent

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// The fleet view: listing and status stay answered from memory, so the
// other hosts' jobs are read into memory too, at each heartbeat: the
// first time all of them, then the unfinished ones and those finished
// since the last read. JobPage and Job show them beside this host's own
// (each with its host); they are read-only here: cancelling, logs and
// reports are the host's that holds the job.

// fleetView is the other hosts' jobs as last read.
type fleetView struct {
	jobs  map[string]*record
	order []*record // by creation, as state.order
	since time.Time // the database's clock at the last read
}

// refreshFleetLocked reads what changed in the other hosts' jobs and
// announces the changes (the D-Bus objects and the dashboard follow
// events). Called with a.mu held, at a heartbeat.
func (a *Agent) refreshFleetLocked(ctx context.Context) {
	first := a.fleet == nil
	since := time.Time{}
	if !first {
		// Another host's clock may lag the database's: read back a lease.
		since = a.fleet.since.Add(-a.cfg.Store.LeaseTimeout.D())
	}
	rows, now, err := a.st.db.othersSince(ctx, since)
	if err != nil {
		a.log.Warnf(nil, "cannot read the other hosts' jobs: %v", err)
		return
	}
	if first {
		a.fleet = &fleetView{jobs: map[string]*record{}}
	}
	a.fleet.since = now
	// Jobs this host took since (placement, a takeover) are its own now.
	dropped := false
	for id := range a.fleet.jobs {
		if a.st.Jobs[id] != nil {
			delete(a.fleet.jobs, id)
			dropped = true
		}
	}
	if dropped {
		a.fleet.order = slices.DeleteFunc(a.fleet.order, func(r *record) bool { return a.fleet.jobs[r.ID] != r })
	}
	added := false
	for _, j := range rows {
		r := j.r
		r.Host = j.host
		if a.st.Jobs[r.ID] != nil {
			continue // this host's own
		}
		old := a.fleet.jobs[r.ID]
		switch {
		case old == nil:
			a.fleet.jobs[r.ID] = r
			a.fleet.order = append(a.fleet.order, r)
			added = true
			if !first {
				a.emitLocked(apitype.JobNew, r, nil)
			}
		case old.State != r.State || old.Stage != r.Stage || old.Progress != r.Progress || old.Host != r.Host ||
			old.StatusText != r.StatusText || old.Error != r.Error || old.ReportPath != r.ReportPath:
			*old = *r
			a.emitLocked(apitype.JobChanged, old, []string{"State", "Stage", "Progress", "Host", "StatusText", "Error", "ReportPath"})
		}
	}
	if added {
		slices.SortFunc(a.fleet.order, func(x, y *record) int {
			if createdBefore(x, y) {
				return -1
			}
			return 1
		})
	}
}

// fleetPageLocked is JobPage on a fleet: this host's jobs and the other
// hosts' walked together in creation order from the end the page asks
// for, so that a page costs what it skips and shows, not a copy of both
// lists. Called with a.mu held.
func (a *Agent) fleetPageLocked(f apitype.Filter, p apitype.Page) ([]jobs.Job, int) {
	own, other := a.st.ordered(), a.fleet.order
	i, j := 0, 0 // taken from each, counted from the page's end
	next := func() *record {
		var o, w *record
		if i < len(own) {
			o = own[i]
			if !p.OldestFirst {
				o = own[len(own)-1-i]
			}
		}
		if j < len(other) {
			w = other[j]
			if !p.OldestFirst {
				w = other[len(other)-1-j]
			}
		}
		switch {
		case o == nil && w == nil:
			return nil
		case w == nil || o != nil && createdBefore(o, w) == p.OldestFirst:
			i++
			return o
		default:
			j++
			return w
		}
	}
	n := len(own) + len(other)
	if len(f.States) == 0 && f.Batch == "" {
		from, to := p.Bounds(n)
		out := make([]jobs.Job, 0, to-from)
		for k := 0; k < to; k++ {
			r := next()
			if k >= from {
				out = append(out, r.Job)
			}
		}
		return out, n
	}
	out := []jobs.Job{}
	total := 0
	for r := next(); r != nil; r = next() {
		if len(f.States) > 0 && !slices.Contains(f.States, r.State) || f.Batch != "" && r.Batch != f.Batch {
			continue
		}
		if total >= p.Offset && (p.Limit <= 0 || len(out) < p.Limit) {
			out = append(out, r.Job)
		}
		total++
	}
	return out, total
}

// fleetJobLocked is another host's job by id, nil when there is none.
func (a *Agent) fleetJobLocked(id string) *record {
	if a.fleet == nil {
		return nil
	}
	return a.fleet.jobs[id]
}

// othersSince reads the other hosts' jobs (and those no host holds yet)
// that are unfinished or finished at or after since, and the database's
// clock.
func (d *jobDB) othersSince(ctx context.Context, since time.Time) ([]fleetJob, time.Time, error) {
	var now time.Time
	if err := d.pool.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
		return nil, now, err
	}
	rows, err := d.fleetJobs(ctx, `SELECT id, coalesce(metadata ->> 'host', ''), args::text FROM river_job
WHERE kind = $1 AND coalesce(metadata ->> 'host', '') <> $2 AND (state NOT IN ('completed', 'cancelled', 'discarded') OR finalized_at >= $3)`,
		jobKind, d.host, since.UTC())
	return rows, now, err
}

// fleetElsewhere says where to act on another host's job.
func fleetElsewhere(r *record) string {
	if r.Host == "" {
		return fmt.Sprintf("job %s waits for a host its placement matches: cancel it on the host it was submitted to", r.ID)
	}
	return fmt.Sprintf("job %s is %s's (a host of the fleet): cancel it there", r.ID, r.Host)
}

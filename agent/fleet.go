package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// A fleet is several hosts' agents sharing one PostgreSQL store. Each
// host claims the files of its own drop folder and runs their jobs; every
// heartbeatEvery it tells the others it is alive, and takes over the
// unfinished jobs of any host silent for store.lease_timeout (a host that
// died: power, kernel, network). Those run again here from the start,
// their journal and job saying "interrupted on HOST, attempt 2 of N".
// The file they came from stays in the dead host's processing/ and
// settles there when that host comes back and the job is final
// (fleetfence.go).

// heartbeatEvery is how often a host of a fleet beats: a quarter of the
// lease, so that three beats may be late before it is taken for dead.
func (a *Agent) heartbeatEvery() time.Duration {
	return max(a.cfg.Store.LeaseTimeout.D()/4, 250*time.Millisecond)
}

// fleetTickLocked beats, takes over dead hosts' jobs, gives up the jobs
// other hosts took from this one (fleetfence.go), takes the jobs placed
// on this host (fleetplace.go) and settles files whose jobs other hosts
// ran. Only the first beat's failure is an error (the agent cannot
// join). Called with a.mu held.
func (a *Agent) fleetTickLocked(ctx context.Context, first bool) error {
	if !a.st.db.shared() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, max(a.heartbeatEvery(), 5*time.Second))
	defer cancel()
	_, running := a.counts()
	beat := hostBeat{labels: a.cfg.Host.Labels, busy: running, max: a.cfg.MaxConcurrentJobs, queue: a.queueState()}
	err := a.st.db.heartbeat(ctx, first, beat)
	lost := errors.Is(err, errLeaseLost)
	if lost {
		// Cut off past the lease: another host took this host's jobs.
		// Join again, then give up what it holds (below).
		a.log.Warnf(nil, "this host (%s) %v while it could not reach the job store; joining again and giving up the jobs taken", a.host, errLeaseLost)
		err = a.st.db.heartbeat(ctx, true, beat)
	}
	if err != nil {
		if first {
			return fmt.Errorf("cannot join the fleet: %w", err)
		}
		a.log.Warnf(nil, "fleet heartbeat: %v", err)
		return nil
	}
	why := "another host took the job over"
	if lost {
		why = "this host lost its lease while cut off from the job store"
	}
	a.reconcileLocked(ctx, why)
	taken, err := a.st.db.takeOver(ctx, a.cfg.Store.LeaseTimeout.D())
	if err != nil {
		a.log.Warnf(nil, "cannot look for hosts that died: %v", err)
		return nil
	}
	for _, t := range taken {
		a.adoptTakenLocked(t)
	}
	if len(taken) > 0 {
		a.save()
		a.wake()
	}
	a.placeTickLocked(ctx)
	a.settleRemoteLocked(ctx)
	if !first {
		// Not before READY=1: the first read is every other host's job.
		a.refreshFleetLocked(ctx)
	}
	return nil
}

// adoptTakenLocked makes a dead host's job this host's: queued again
// from the start, or failed when it has had all its attempts.
func (a *Agent) adoptTakenLocked(t takenJob) {
	r := t.r
	if old := a.st.Jobs[r.ID]; old != nil {
		return // already ours (a second look at the same row)
	}
	r.Host = a.host
	a.st.Jobs[r.ID] = r
	a.st.rows[r.ID] = t.rowid
	attempt := r.Attempt
	if r.State == jobs.Running {
		attempt++
	}
	why := fmt.Sprintf("interrupted on %s", t.from)
	if r.State == jobs.Pending {
		why = fmt.Sprintf("queued on %s, which stopped answering", t.from)
	}
	if r.State == jobs.Running && r.Attempt >= maxAttempts {
		a.setStateLocked(r, jobs.Failed, transition{why: fmt.Sprintf("%s, attempt %d of %d: no attempts left", why, r.Attempt, maxAttempts), stage: r.Stage})
		return
	}
	r.JobDir, r.OutputDir = "", ""
	a.log.Warnf(jobFields(r), "job %s: %s, attempt %d of %d; taken over by %s", r.ID, why, max(attempt, 1), maxAttempts, a.host)
	a.setStateLocked(r, jobs.Pending, transition{why: why})
	a.pend.add(r)
}

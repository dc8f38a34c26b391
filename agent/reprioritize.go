package agent

import (
	"context"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

// Reprioritize gives a pending job a new priority (-100..100, higher
// first): it starts before every pending job of a lower one. A job that
// already runs or ended keeps its priority.
func (a *Agent) Reprioritize(ctx context.Context, id string, priority int) error {
	if priority < manifest.MinPriority || priority > manifest.MaxPriority {
		return apierr.New(apierr.InvalidArgs, "priority must be between %d and %d, not %d", manifest.MinPriority, manifest.MaxPriority, priority)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.touch()
	r := a.st.Jobs[id]
	if r == nil {
		return apierr.New(apierr.NoSuchJob, "no job %q", id)
	}
	if r.State != jobs.Pending {
		return apierr.New(apierr.InvalidState, "cannot reprioritize job %s: it is already %s", id, r.State)
	}
	if r.Priority == priority {
		return nil
	}
	before := r.Job
	r.Priority = priority
	a.st.touch(r)
	// The pending queue's order keys never change under it: it is built
	// again from the store at the next dispatch.
	a.pend = newPendingQueue()
	a.save()
	a.log.Infof(jobFields(r), "job %s: priority %d -> %d", r.ID, before.Priority, priority)
	a.emitLocked(apitype.JobChanged, r, []string{"Priority"})
	a.wake()
	return nil
}

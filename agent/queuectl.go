package agent

import (
	"context"
	"fmt"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
)

// Queue control, per host: "paused" starts no job (files are still
// claimed into the queue), "draining" also claims no file (running jobs
// finish: for host maintenance), "running" is the default. The state is
// kept in the job store (hyper2kvm_meta, per host), so it survives the
// agent's idle exit and restarts.

// Queue states.
const (
	queueRunning  = "running"
	queuePaused   = "paused"
	queueDraining = "draining"
)

func queueMetaKey(host string) string { return "queue/" + host }

// SetQueue pauses, resumes or drains this host's queue.
func (a *Agent) SetQueue(ctx context.Context, action string) error {
	var to string
	switch action {
	case "pause":
		to = queuePaused
	case "resume":
		to = queueRunning
	case "drain":
		to = queueDraining
	default:
		return apierr.New(apierr.InvalidArgs, "queue action %q: want pause, resume or drain", action)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.touch()
	if a.st.db != nil {
		if err := a.st.db.setMeta(ctx, queueMetaKey(a.host), to); err != nil {
			return apierr.New(apierr.Internal, "cannot %s the queue: %v", action, err)
		}
	}
	if a.queue != to {
		a.log.Infof(nil, "queue of %s: %s -> %s", a.host, a.queueState(), to)
	}
	if a.queue == queueDraining && to != queueDraining {
		a.rescan = true
	}
	a.queue = to
	a.wake()
	return nil
}

// queueState is the queue's state ("running" when never set).
func (a *Agent) queueState() string {
	if a.queue == "" {
		return queueRunning
	}
	return a.queue
}

// loadQueueState reads the queue state saved for this host.
func (a *Agent) loadQueueState(ctx context.Context) error {
	if a.st.db == nil {
		return nil
	}
	v, err := a.st.db.meta(ctx, queueMetaKey(a.host))
	if err != nil {
		return fmt.Errorf("cannot read the queue state: %w", err)
	}
	a.queue = v
	return nil
}

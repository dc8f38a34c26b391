package agent

import (
	"context"
	"fmt"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/gc"
)

// FieldGC marks the journal entries of housekeeping's deletions.
const FieldGC = "HYPER2KVM_GC"

// Housekeep applies agent.yaml's retain section to processed/, failed/
// and (only when retain.outputs says so) the output directory: with
// dryRun it only lists what would go. Every deletion, and every failure
// to delete, is in the journal. The agent runs it at start; the periodic
// sweep comes with the River job store. It is GarbageCollect on the bus.
func (a *Agent) Housekeep(ctx context.Context, dryRun bool) ([]apitype.GCItem, error) {
	p, err := a.cfg.Retain.Policy()
	if err != nil {
		return nil, fmt.Errorf("cannot apply retention: %w", err)
	}
	items, err := gc.Plan(gc.Dirs{Workflow: a.cfg.ManifestWorkflowDir, Output: a.cfg.OutputDir}, p, a.now())
	if err != nil {
		return nil, fmt.Errorf("cannot plan housekeeping: %w", err)
	}
	if dryRun || ctx.Err() != nil {
		return items, ctx.Err()
	}
	done := gc.Remove(items, func(it apitype.GCItem) {
		f := Fields{FieldGC: it.Kind}
		if it.Error != "" {
			a.log.Warnf(f, "housekeeping: cannot remove %s: %s", it.Path, it.Error)
			return
		}
		a.log.Infof(f, "housekeeping: removed %s (%s, %d bytes): %s", it.Path, it.Kind, it.Size, it.Reason)
	})
	return done, nil
}

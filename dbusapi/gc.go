package dbusapi

import (
	"context"

	"github.com/godbus/dbus/v5"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/polkit"
)

// Housekeeper is a Backend that applies the files' retention
// (GarbageCollect). It is a separate interface so that backends without
// housekeeping (test agents) need not implement it.
type Housekeeper interface {
	Housekeep(ctx context.Context, dryRun bool) ([]apitype.GCItem, error)
}

// gcRow is one GCItem on the bus, (sssxbs).
type gcRow struct {
	Path, Kind, Reason string
	Size               int64
	Deleted            bool
	Error              string
}

// garbageCollect is GarbageCollect(dry_run): what retention lets go, or
// with dry_run false its removal. polkit: io.hyper2kvm.agent.manage
// either way (a dry run lists other users' files).
func (s *Server) garbageCollect(msg dbus.Message, sender dbus.Sender, dryRun bool) ([]gcRow, *dbus.Error) {
	s.touch()
	what := "collect garbage"
	if dryRun {
		what = "list what housekeeping would remove"
	}
	if err := s.authorize(msg, sender, polkit.ActionManage, what); err != nil {
		return nil, toDBusError(err)
	}
	h, ok := s.b.(Housekeeper)
	if !ok {
		return nil, toDBusError(apierr.New(apierr.InvalidState, "cannot %s: this agent does no housekeeping", what))
	}
	items, err := h.Housekeep(s.ctx, dryRun)
	if err != nil {
		return nil, toDBusError(apierr.New(apierr.Internal, "cannot %s: %v", what, err))
	}
	rows := make([]gcRow, 0, len(items))
	for _, it := range items {
		rows = append(rows, gcRow{it.Path, it.Kind, it.Reason, it.Size, it.Deleted, it.Error})
	}
	return rows, nil
}

// GarbageCollect asks the agent to apply its retention (docs/WORKFLOW.md):
// with dryRun it only lists what would go. Needs io.hyper2kvm.agent.manage.
func (c *Client) GarbageCollect(ctx context.Context, dryRun, interactive bool) ([]apitype.GCItem, error) {
	what := "collect garbage"
	call, err := c.call(ctx, what, ManagerPath, ManagerIface+".GarbageCollect", interactive, dryRun)
	if err != nil {
		return nil, err
	}
	var rows []gcRow
	if err := call.Store(&rows); err != nil {
		return nil, err
	}
	out := make([]apitype.GCItem, 0, len(rows))
	for _, r := range rows {
		out = append(out, apitype.GCItem{Path: r.Path, Kind: r.Kind, Reason: r.Reason, Size: r.Size, Deleted: r.Deleted, Error: r.Error})
	}
	return out, nil
}

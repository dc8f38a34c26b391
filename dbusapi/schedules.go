package dbusapi

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
)

// ScheduleLister is a Backend that lists schedules.d (ListSchedules).
type ScheduleLister interface {
	Schedules(ctx context.Context) ([]apitype.Schedule, error)
}

// listSchedules is ListSchedules(): every schedule with its next and
// last firing, as JSON {"schedules": [...]}. Open to every caller, as
// ListTemplates: schedules.d is readable by any local user.
func (s *Server) listSchedules() (string, *dbus.Error) {
	s.touch()
	l, ok := s.b.(ScheduleLister)
	if !ok {
		return "", toDBusError(apierr.New(apierr.InvalidState, "cannot list schedules: this agent has none"))
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	ss, err := l.Schedules(ctx)
	if err != nil {
		return "", toDBusError(apierr.New(apierr.Internal, "cannot list schedules: %v", err))
	}
	data, err := json.Marshal(map[string]any{"schedules": ss})
	if err != nil {
		return "", toDBusError(apierr.New(apierr.Internal, "cannot encode schedules: %v", err))
	}
	return string(data), nil
}

// Schedules lists schedules.d as the agent sees it.
func (c *Client) Schedules(ctx context.Context) ([]apitype.Schedule, error) {
	what := "list schedules"
	call, err := c.call(ctx, what, ManagerPath, ManagerIface+".ListSchedules", false)
	if err != nil {
		return nil, err
	}
	var data string
	if err := call.Store(&data); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	var out struct {
		Schedules []apitype.Schedule `json:"schedules"`
	}
	if err := json.Unmarshal([]byte(data), &out); err != nil {
		return nil, fmt.Errorf("%s: cannot read the answer: %w", what, err)
	}
	return out.Schedules, nil
}

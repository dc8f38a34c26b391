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

// HostLister is a Backend that lists the fleet's hosts (ListHosts).
type HostLister interface {
	Hosts(ctx context.Context) ([]apitype.Host, error)
}

// listHosts is ListHosts(): every host of the fleet sharing this agent's
// job store, with its labels, busy and maximum workers, queue state and
// last heartbeat, as JSON {"hosts": [...]} (one host: this one). Open to
// every caller, as GetStatus.
func (s *Server) listHosts() (string, *dbus.Error) {
	s.touch()
	l, ok := s.b.(HostLister)
	if !ok {
		return "", toDBusError(apierr.New(apierr.InvalidState, "cannot list hosts: this agent has no fleet"))
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	hs, err := l.Hosts(ctx)
	if err != nil {
		return "", toDBusError(apierr.New(apierr.Internal, "cannot list hosts: %v", err))
	}
	data, err := json.Marshal(map[string]any{"hosts": hs})
	if err != nil {
		return "", toDBusError(apierr.New(apierr.Internal, "cannot encode hosts: %v", err))
	}
	return string(data), nil
}

// Hosts lists the fleet's hosts as the agent sees them.
func (c *Client) Hosts(ctx context.Context) ([]apitype.Host, error) {
	what := "list hosts"
	call, err := c.call(ctx, what, ManagerPath, ManagerIface+".ListHosts", false)
	if err != nil {
		return nil, err
	}
	var data string
	if err := call.Store(&data); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	var out struct {
		Hosts []apitype.Host `json:"hosts"`
	}
	if err := json.Unmarshal([]byte(data), &out); err != nil {
		return nil, fmt.Errorf("%s: cannot read the answer: %w", what, err)
	}
	return out.Hosts, nil
}

package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
)

// hostLister is a Client that lists the fleet's hosts (dbusapi.Client,
// through Lazy): optional, so that fakes without it still serve the rest.
type hostLister interface {
	Hosts(ctx context.Context) ([]apitype.Host, error)
}

// listHosts is GET /api/workflow/hosts: every host of the fleet with its
// labels, busy and maximum workers, queue state and last heartbeat.
func (s *Server) listHosts(w http.ResponseWriter, r *http.Request) {
	l, ok := s.cfg.Client.(hostLister)
	if !ok {
		fail(w, r, "list hosts", apierr.New(apierr.InvalidState, "this agent cannot list hosts"))
		return
	}
	hs, err := l.Hosts(r.Context())
	if err != nil {
		fail(w, r, "list hosts", err)
		return
	}
	if hs == nil {
		hs = []apitype.Host{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"hosts": hs})
}

// Hosts is the agent's ListHosts, through the lazily dialled bus.
func (l *Lazy) Hosts(ctx context.Context) ([]apitype.Host, error) {
	c, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	h, ok := c.(hostLister)
	if !ok {
		return nil, errors.New("the agent's client cannot list hosts")
	}
	hs, err := h.Hosts(ctx)
	return hs, l.check(c, err)
}

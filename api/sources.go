package api

import (
	"context"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
)

// SourceClient is what a Client that reads sources adds (dbusapi.Client
// and Lazy have it); without it the bridge lists no source.
type SourceClient interface {
	ListSources(ctx context.Context, interactive bool) ([]apitype.Source, error)
	BrowseSource(ctx context.Context, name, path string, interactive bool) ([]apitype.InventoryEntry, error)
}

// GET /api/workflow/sources: the agent's sources, never a password.
func (s *Server) listSources(w http.ResponseWriter, r *http.Request) {
	// The token owner's connection for a per-user token: polkit's
	// use-source is then asked about them, not about the bridge.
	sc, ok := s.client(r).(SourceClient)
	if !ok {
		writeJSON(w, http.StatusOK, map[string]any{"sources": []apitype.Source{}})
		return
	}
	list, err := sc.ListSources(r.Context(), false)
	if err != nil {
		fail(w, r, "list sources", err)
		return
	}
	if list == nil {
		list = []apitype.Source{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"sources": list})
}

// GET /api/workflow/sources/{name}/vms?path=/DC0/vm: the folders and VMs
// at an inventory path.
func (s *Server) browseSource(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["name"]
	p := r.URL.Query().Get("path")
	if p == "" {
		p = "/"
	}
	sc, ok := s.client(r).(SourceClient)
	if !ok {
		writeError(w, http.StatusNotFound, apierr.NoSuchSource, "cannot browse source "+name+": the agent reads no sources", nil)
		return
	}
	list, err := sc.BrowseSource(r.Context(), name, p, false)
	if err != nil {
		fail(w, r, "browse source "+name, err)
		return
	}
	if list == nil {
		list = []apitype.InventoryEntry{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"source": name, "path": p, "entries": list})
}

// ListSources is the agent's ListSources; none when the agent's
// connection has no sources.
func (l *Lazy) ListSources(ctx context.Context, interactive bool) ([]apitype.Source, error) {
	c, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	sc, ok := c.(SourceClient)
	if !ok {
		return []apitype.Source{}, nil
	}
	list, err := sc.ListSources(ctx, interactive)
	return list, l.check(c, err)
}

// BrowseSource is the agent's BrowseSource.
func (l *Lazy) BrowseSource(ctx context.Context, name, path string, interactive bool) ([]apitype.InventoryEntry, error) {
	c, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	sc, ok := c.(SourceClient)
	if !ok {
		return nil, apierr.New(apierr.NoSuchSource, "cannot browse source %s: the agent reads no sources", name)
	}
	list, err := sc.BrowseSource(ctx, name, path, interactive)
	return list, l.check(c, err)
}

package api

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/templates"
)

// templateList is the answer of GET /api/workflow/templates.
type templateList struct {
	Templates []*templates.Template `json:"templates"`
}

// listTemplates: GET /api/workflow/templates, every template with its
// parameters, partial manifest and problems (the bridge reads the same
// directories hyperctl does; a template is no secret).
func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request) {
	ts, err := s.cfg.Templates.List()
	if err != nil {
		writeError(w, http.StatusInternalServerError, apierr.Internal, "cannot list templates: "+err.Error(), nil)
		return
	}
	writeJSON(w, http.StatusOK, templateList{Templates: ts})
}

// getTemplate: GET /api/workflow/templates/{name}.
func (s *Server) getTemplate(w http.ResponseWriter, r *http.Request) {
	t, ok := s.template(w, r)
	if ok {
		writeJSON(w, http.StatusOK, t)
	}
}

func (s *Server) template(w http.ResponseWriter, r *http.Request) (*templates.Template, bool) {
	t, err := s.cfg.Templates.Get(mux.Vars(r)["name"])
	switch {
	case errors.Is(err, templates.ErrNotFound):
		writeError(w, http.StatusNotFound, CodeNotFound, err.Error(), nil)
		return nil, false
	case err != nil:
		writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error(), nil)
		return nil, false
	}
	return t, true
}

// renderRequest is the body of POST /api/workflow/templates/{name}/render.
type renderRequest struct {
	Set map[string]string `json:"set"`
}

// renderAnswer is its answer: the filled manifest, ready to submit.
type renderAnswer struct {
	Manifest json.RawMessage `json:"manifest"`
}

// renderTemplate: POST /api/workflow/templates/{name}/render with
// {"set": {"load.source_path": "/srv/web01.vmdk"}}: 200 and the manifest,
// 422 with the problems by field as validate gives them.
func (s *Server) renderTemplate(w http.ResponseWriter, r *http.Request) {
	t, ok := s.template(w, r)
	if !ok {
		return
	}
	body, release, ok := s.readBody(w, r)
	if !ok {
		return
	}
	defer release()
	var req renderRequest
	if len(body) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			writeError(w, http.StatusBadRequest, CodeBadRequest, "cannot read the body: want {\"set\": {\"FIELD\": \"VALUE\"}}: "+err.Error(), nil)
			return
		}
	}
	data, err := t.Apply(req.Set)
	var ps manifest.Problems
	switch {
	case errors.As(err, &ps):
		writeJSON(w, http.StatusUnprocessableEntity, validateAnswer{Errors: ps.Strings(), Problems: problems(ps.Strings())})
		return
	case err != nil:
		writeError(w, http.StatusUnprocessableEntity, apierr.InvalidManifest, err.Error(), []string{err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, renderAnswer{Manifest: data})
}

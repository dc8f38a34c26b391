package api

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

// readBody reads the request body up to the configured limit, answering 413
// when it is larger, 503 when the bridge already holds MaxInFlight bytes of
// bodies, and 400 when it is empty or neither JSON nor YAML. On success the
// caller calls release once it no longer holds the body.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) (body []byte, release func(), ok bool) {
	if r.ContentLength > s.cfg.MaxBody {
		writeError(w, http.StatusRequestEntityTooLarge, CodeBodyTooLarge,
			fmt.Sprintf("cannot accept a body of %d bytes: the limit is %d", r.ContentLength, s.cfg.MaxBody), nil)
		return nil, nil, false
	}
	give, reserved := s.reserveBody(w, r)
	if !reserved {
		return nil, nil, false
	}
	defer func() {
		if !ok {
			give()
		}
	}()
	// Sized from Content-Length when there is one, so that reading does
	// not grow the buffer by doubling.
	buf := bytes.NewBuffer(make([]byte, 0, max(0, min(r.ContentLength, s.cfg.MaxBody))+bytes.MinRead))
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, s.cfg.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, CodeBodyTooLarge,
				fmt.Sprintf("cannot accept the body: the limit is %d bytes", s.cfg.MaxBody), nil)
			return nil, nil, false
		}
		writeError(w, http.StatusBadRequest, CodeBadRequest, "cannot read the request body: "+err.Error(), nil)
		return nil, nil, false
	}
	body = buf.Bytes()
	turn, err := s.parseTurn(r.Context())
	if err != nil {
		s.writeBusy(w, r, "cannot check the body: the request ended while waiting for its turn")
		return nil, nil, false
	}
	err = checkSyntax(body)
	turn()
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error(), nil)
		return nil, nil, false
	}
	return body, give, true
}

// checkSyntax tells broken JSON/YAML (400) apart from a well-formed document
// that is not a valid manifest (the agent's validation: 200 or 422), with
// the same parser and messages as the agent and hyperctl.
func checkSyntax(body []byte) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return errors.New("cannot parse the manifest: the body is empty")
	}
	_, err := manifest.Parse(body)
	var se *manifest.SyntaxError
	if errors.As(err, &se) {
		return se
	}
	return nil
}

// Problem is one validation error split into its field path and message,
// so that a form can show it beside its field.
type Problem struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

// splitProblem reads the agent's "field.path: message" form.
func splitProblem(p string) Problem {
	path, msg, ok := strings.Cut(p, ": ")
	if !ok || path == "" || strings.ContainsAny(path, " \t") {
		return Problem{Message: p}
	}
	return Problem{Path: path, Message: msg}
}

func problems(errs []string) []Problem {
	out := make([]Problem, 0, len(errs))
	for _, e := range errs {
		out = append(out, splitProblem(e))
	}
	return out
}

// validateAnswer is the answer of /manifest/validate.
type validateAnswer struct {
	Valid    bool      `json:"valid"`
	Errors   []string  `json:"errors"`
	Problems []Problem `json:"problems"`
}

// validateManifest: POST /api/workflow/manifest/validate. Always 200 for a
// well-formed body, valid or not; 400 only for broken JSON/YAML.
func (s *Server) validateManifest(w http.ResponseWriter, r *http.Request) {
	body, release, ok := s.readBody(w, r)
	if !ok {
		return
	}
	defer release()
	valid, errs, err := s.client(r).Validate(r.Context(), body)
	if err != nil {
		fail(w, r, "validate the manifest", err)
		return
	}
	if errs == nil {
		errs = []string{}
	}
	writeJSON(w, http.StatusOK, validateAnswer{Valid: valid && len(errs) == 0, Errors: errs, Problems: problems(errs)})
}

// submitAnswer is the answer of /manifest/submit.
type submitAnswer struct {
	Success      bool     `json:"success"`
	ManifestPath string   `json:"manifest_path"`
	JobID        string   `json:"job_id"`
	JobIDs       []string `json:"job_ids"`
	Batch        string   `json:"batch,omitempty"`
	Jobs         []Job    `json:"jobs"`
}

// submitManifest: POST /api/workflow/manifest/submit[?name=FILE]. The body is
// the manifest (JSON or YAML). 202 with the new job ids; 422 with the field
// paths when the agent finds the manifest invalid.
func (s *Server) submitManifest(w http.ResponseWriter, r *http.Request) {
	body, release, ok := s.readBody(w, r)
	if !ok {
		return
	}
	defer release()
	list, err := s.client(r).Submit(r.Context(), body, apitype.SubmitOptions{Name: r.URL.Query().Get("name")}, false)
	if err != nil {
		var ae *apierr.Error
		if errors.As(err, &ae) && ae.Kind == apierr.InvalidManifest {
			writeJSON(w, apierr.Lookup(ae.Kind).HTTP, struct {
				errorBody
				Problems []Problem `json:"problems"`
			}{errorBody{errorJSON{Code: ae.Kind, Message: ae.Message, Details: nonNil(ae.Details)}}, problems(ae.Details)})
			return
		}
		fail(w, r, "submit the manifest", err)
		return
	}
	if len(list) == 0 {
		writeError(w, http.StatusInternalServerError, apierr.Internal, "cannot submit the manifest: the agent created no job", nil)
		return
	}
	now := s.cfg.Now()
	ans := submitAnswer{Success: true, ManifestPath: s.manifestPath(list[0]), JobID: list[0].ID, Batch: list[0].Batch}
	for _, j := range list {
		ans.JobIDs = append(ans.JobIDs, j.ID)
		ans.Jobs = append(ans.Jobs, jobJSON(j, now, s.cfg.Hostname))
	}
	w.Header().Set("Location", "/api/workflow/jobs/"+list[0].ID)
	writeJSON(w, http.StatusAccepted, ans)
}

func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

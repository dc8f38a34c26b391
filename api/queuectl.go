package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
)

// The fleet's controls through the bridge: reprioritize a pending job,
// pause/resume/drain this host's queue, list the recurring schedules. Each
// is the agent's D-Bus method of the same name (Reprioritize, SetQueue,
// ListSchedules), so the agent's polkit check decides, as for hyperctl.

// Reprioritizer is a Client that can change a pending job's priority.
type Reprioritizer interface {
	Reprioritize(ctx context.Context, id string, priority int, interactive bool) error
}

// QueueController is a Client that can pause, resume and drain the
// agent's queue.
type QueueController interface {
	SetQueue(ctx context.Context, action string, interactive bool) error
}

// ScheduleLister is a Client that lists schedules.d.
type ScheduleLister interface {
	Schedules(ctx context.Context) ([]apitype.Schedule, error)
}

// priorityBody is the body of POST /jobs/{id}/priority.
type priorityBody struct {
	Priority *int `json:"priority"`
}

// reprioritizeJob: POST /api/workflow/jobs/{id}/priority with
// {"priority": N}. 200 with the job as it now is.
func (s *Server) reprioritizeJob(w http.ResponseWriter, r *http.Request) {
	id, ok := jobID(w, r)
	if !ok {
		return
	}
	var b priorityBody
	// A priority is a few bytes: no need to take a share of the body
	// budget the manifests use.
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSmallBody))
	if err != nil {
		bodyError(w, err)
		return
	}
	if err := json.Unmarshal(data, &b); err != nil || b.Priority == nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest,
			`cannot reprioritize job `+id+`: the body must be JSON {"priority": N}, N a whole number from -100 to 100`, nil)
		return
	}
	rp, ok := s.client(r).(Reprioritizer)
	if !ok {
		writeError(w, http.StatusNotImplemented, apierr.Internal, "cannot reprioritize jobs through this bridge", nil)
		return
	}
	if err := rp.Reprioritize(r.Context(), id, *b.Priority, false); err != nil {
		fail(w, r, "reprioritize job "+id, err)
		return
	}
	ans := actionAnswer{Success: true, JobID: id}
	if j, err := s.client(r).GetJob(r.Context(), id); err == nil {
		jj := jobJSON(j, s.cfg.Now(), s.cfg.Hostname)
		ans.Job = &jj
	}
	writeJSON(w, http.StatusOK, ans)
}

// queueStates are the states the queue actions lead to.
var queueStates = map[string]string{"pause": "paused", "resume": "running", "drain": "draining"}

// setQueue: POST /api/workflow/queue/{action}, action pause, resume or
// drain, for this host (the bridge's agent). 200 {"success", "queue"}.
func (s *Server) setQueue(w http.ResponseWriter, r *http.Request) {
	action := mux.Vars(r)["action"]
	to, ok := queueStates[action]
	if !ok {
		writeError(w, http.StatusNotFound, CodeNotFound, "cannot find queue action "+action+": use pause, resume or drain", nil)
		return
	}
	qc, ok := s.client(r).(QueueController)
	if !ok {
		writeError(w, http.StatusNotImplemented, apierr.Internal, "cannot control the queue through this bridge", nil)
		return
	}
	if err := qc.SetQueue(r.Context(), action, false); err != nil {
		fail(w, r, action+" the queue", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"success": true, "queue": to, "host": s.cfg.Hostname})
}

// listSchedules: GET /api/workflow/schedules, schedules.d with each
// schedule's next and last firing; a file that does not parse is a row
// without a name whose error names the file and the field.
func (s *Server) listSchedules(w http.ResponseWriter, r *http.Request) {
	l, ok := s.client(r).(ScheduleLister)
	if !ok {
		fail(w, r, "list schedules", apierr.New(apierr.InvalidState, "this agent cannot list schedules"))
		return
	}
	ss, err := l.Schedules(r.Context())
	if err != nil {
		fail(w, r, "list schedules", err)
		return
	}
	if ss == nil {
		ss = []apitype.Schedule{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"schedules": ss})
}

// maxSmallBody bounds the bodies of the small control requests.
const maxSmallBody = 4096

// bodyError answers a body that could not be read (too large, or cut).
func bodyError(w http.ResponseWriter, err error) {
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		writeError(w, http.StatusRequestEntityTooLarge, CodeBodyTooLarge, fmt.Sprintf("cannot accept the body: the limit is %d bytes", mb.Limit), nil)
		return
	}
	writeError(w, http.StatusBadRequest, CodeBadRequest, "cannot read the body: "+err.Error(), nil)
}

// Reprioritize is the agent's Reprioritize, through the lazily dialled bus.
func (l *Lazy) Reprioritize(ctx context.Context, id string, priority int, interactive bool) error {
	c, err := l.get(ctx)
	if err != nil {
		return err
	}
	rp, ok := c.(Reprioritizer)
	if !ok {
		return apierr.New(apierr.Internal, "cannot reprioritize job %s: the agent's client cannot", id)
	}
	return l.check(c, rp.Reprioritize(ctx, id, priority, interactive))
}

// SetQueue is the agent's SetQueue.
func (l *Lazy) SetQueue(ctx context.Context, action string, interactive bool) error {
	c, err := l.get(ctx)
	if err != nil {
		return err
	}
	qc, ok := c.(QueueController)
	if !ok {
		return apierr.New(apierr.Internal, "cannot %s the queue: the agent's client cannot", action)
	}
	return l.check(c, qc.SetQueue(ctx, action, interactive))
}

// Schedules is the agent's ListSchedules.
func (l *Lazy) Schedules(ctx context.Context) ([]apitype.Schedule, error) {
	c, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	sl, ok := c.(ScheduleLister)
	if !ok {
		return nil, apierr.New(apierr.Internal, "cannot list schedules: the agent's client cannot")
	}
	ss, err := sl.Schedules(ctx)
	return ss, l.check(c, err)
}

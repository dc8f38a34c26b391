package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
)

// heartbeat is how often an idle event stream gets a comment line, so
// proxies keep it open and a vanished client is noticed.
const heartbeat = 15 * time.Second

// eventNames are the SSE event names of the agent's event kinds.
var eventNames = map[apitype.EventKind]string{
	apitype.JobNew:     "job-new",
	apitype.JobChanged: "job-changed",
	apitype.JobRemoved: "job-removed",
}

// Event is the data of one SSE event.
type Event struct {
	Type    string    `json:"type"`
	Job     Job       `json:"job"`
	Changed []string  `json:"changed"`
	At      time.Time `json:"at"`
}

// events: GET /api/workflow/events, Server-Sent Events relaying the agent's
// job signals. Each event is named job-new, job-changed or job-removed and
// its data is an Event. The stream ends when the bus connection does; an
// EventSource reconnects by itself.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "internal", "cannot stream events over this connection", nil)
		return
	}
	ch, err := s.cfg.Client.Watch(r.Context())
	if err != nil {
		fail(w, r, "watch the agent's jobs", err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// retry: how long an EventSource waits before reconnecting.
	details := s.mayReadDetails(r)
	fmt.Fprint(w, "retry: 3000\n: subscribed to io.hyper2kvm.Agent1\n\n")
	fl.Flush()
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil {
				return
			}
			fl.Flush()
		case ev, ok := <-ch:
			if !ok {
				return
			}
			name := eventNames[ev.Kind]
			if name == "" {
				name = "job-changed"
			}
			at := ev.At
			if at.IsZero() {
				at = s.cfg.Now()
			}
			changed := ev.Changed
			if changed == nil {
				changed = []string{}
			}
			data, err := json.Marshal(Event{Type: name, Job: s.jobView(ev.Job, s.cfg.Now(), details), Changed: changed, At: at})
			if err != nil {
				return
			}
			// data never holds a newline (json.Marshal escapes them), but
			// keep the framing right whatever it holds.
			payload := strings.ReplaceAll(string(data), "\n", "\ndata: ")
			if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, payload); err != nil {
				return
			}
			fl.Flush()
		}
	}
}

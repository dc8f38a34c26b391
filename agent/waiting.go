package agent

import (
	"fmt"
	"strings"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
)

// A pending job that the dispatcher passes over says why in its status
// text, which every door shows (D-Bus StatusText, hyperctl show and jobs,
// REST status_text, the dashboard under the job): waiting for its window,
// or for a slot under limits.per_source. Placement has its own reasons
// (fleetplace.go) and a retry its "attempt N of M failed; retrying at".

// Prefixes of the notes set here, so that a job that starts drops them.
const (
	noteWindow = "waiting for its window: "
	noteSource = "waiting for its source: "
)

// windowNote is why r waits for its not_before.
func windowNote(r *record) string {
	return noteWindow + "starts no earlier than " + r.NotBefore.UTC().Format(time.RFC3339) + " (schedule.not_before)"
}

// sourceNote is why r waits under limits.per_source.
func sourceNote(r *record, limit int) string {
	return fmt.Sprintf("%s%d job(s) already read from %s (limits.per_source: %d)", noteSource, limit, sourceDir(r), limit)
}

// waitNoteLocked makes why r's status text, telling watchers when it
// changed. A retried job keeps its "retrying at" text, which says more.
// Called with a.mu held.
func (a *Agent) waitNoteLocked(r *record, why string) {
	if r.StatusText == why || len(r.Attempts) > 0 && strings.HasPrefix(why, noteWindow) {
		return
	}
	r.StatusText = why
	a.st.touch(r) // saved: a fleet's other hosts show it too
	a.emitLocked(apitype.JobChanged, r, []string{"StatusText"})
}

// clearWaitNoteLocked drops a note of this file from a job about to start.
func (a *Agent) clearWaitNoteLocked(r *record) {
	if strings.HasPrefix(r.StatusText, noteWindow) || strings.HasPrefix(r.StatusText, noteSource) {
		r.StatusText = ""
		a.st.touch(r)
	}
}

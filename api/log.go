package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// LogEntry is one journal message of a job.
type LogEntry struct {
	Time       time.Time `json:"time"`
	Priority   int       `json:"priority"`
	Identifier string    `json:"identifier,omitempty"`
	PID        string    `json:"pid,omitempty"`
	Message    string    `json:"message"`
}

type logAnswer struct {
	JobID   string     `json:"job_id"`
	Unit    string     `json:"unit"`
	Entries []LogEntry `json:"entries"`
	// Cursor is where the next ?after= goes on from.
	Cursor string `json:"cursor"`
}

// maxLogLines bounds one answer; ?lines= can ask for fewer.
const maxLogLines = 5000

// getJobLog: GET /api/workflow/jobs/{id}/log[?format=short|json][&lines=N][&after=CURSOR].
// short (the default) is journalctl's text; json is {"entries":[...]}.
func (s *Server) getJobLog(w http.ResponseWriter, r *http.Request) {
	id, ok := jobID(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	format := q.Get("format")
	if format == "" {
		format = "short"
	}
	if format != "short" && format != "json" {
		writeError(w, http.StatusBadRequest, apierr.InvalidArgs, "cannot use format "+strconv.Quote(format)+": use short or json", nil)
		return
	}
	lines := maxLogLines
	if v := q.Get("lines"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			writeError(w, http.StatusBadRequest, apierr.InvalidArgs, "cannot use lines "+strconv.Quote(v)+": want a positive number", nil)
			return
		}
		lines = min(n, maxLogLines)
	}
	// Ask the agent first: only a job it knows has a log here, and the
	// unit name comes from the id, never from the client's text.
	j, err := s.client(r).GetJob(r.Context(), id)
	if err != nil {
		fail(w, r, "get job "+id, err)
		return
	}
	unit := jobs.UnitName(j.ID)
	// The agent reads the journal (the bridge's user cannot) and decides
	// who may: the route already demanded the token on TCP.
	got, cursor, err := s.client(r).JobLog(r.Context(), j.ID, lines, q.Get("after"), format, false)
	if err != nil {
		fail(w, r, "read the log of job "+id, err)
		return
	}
	w.Header().Set("Journal-Cursor", cursor)
	if format == "short" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		for _, l := range got {
			_, _ = io.WriteString(w, l+"\n")
		}
		return
	}
	entries, err := parseJournalJSON([]byte(strings.Join(got, "\n")))
	if err != nil {
		fail(w, r, "read the log of job "+id, err)
		return
	}
	writeJSON(w, http.StatusOK, logAnswer{JobID: j.ID, Unit: unit, Entries: entries, Cursor: cursor})
}

// parseJournalJSON reads journalctl -o json: one object per line, where a
// field is a string, or an array of bytes when it is not valid text.
func parseJournalJSON(raw []byte) ([]LogEntry, error) {
	entries := []LogEntry{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(line, &m); err != nil {
			return nil, fmt.Errorf("cannot parse journalctl output: %w", err)
		}
		e := LogEntry{
			Message:    field(m["MESSAGE"]),
			Identifier: field(m["SYSLOG_IDENTIFIER"]),
			PID:        field(m["_PID"]),
			Priority:   6,
		}
		if p, err := strconv.Atoi(field(m["PRIORITY"])); err == nil {
			e.Priority = p
		}
		if us, err := strconv.ParseInt(field(m["__REALTIME_TIMESTAMP"]), 10, 64); err == nil {
			e.Time = time.UnixMicro(us).UTC()
		}
		entries = append(entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cannot read journalctl output: %w", err)
	}
	return entries, nil
}

// field decodes one journal JSON field: a string, a byte array, or (for
// repeated fields) an array of those, of which the first is kept.
func field(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var b []byte
	var ints []int
	if json.Unmarshal(raw, &ints) == nil {
		for _, i := range ints {
			b = append(b, byte(i))
		}
		return string(b)
	}
	var many []json.RawMessage
	if json.Unmarshal(raw, &many) == nil && len(many) > 0 {
		return field(many[0])
	}
	return ""
}

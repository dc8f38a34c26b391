package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// Journalctl reads a unit's journal with the journalctl command (the
// bridge has no cgo, so no sd-journal). The bridge's user must be able to
// read the system journal: the service has SupplementaryGroups=systemd-journal.
type Journalctl struct {
	// Path of journalctl; empty means "journalctl" from PATH.
	Path string
}

// Read runs journalctl -u UNIT for the unit's messages and systemd's
// messages about it.
func (j Journalctl) Read(ctx context.Context, unit, format string, lines int) ([]byte, error) {
	bin := j.Path
	if bin == "" {
		bin = "journalctl"
	}
	out := "short-iso"
	if format == "json" {
		out = "json"
	}
	args := []string{"--no-pager", "--quiet", "--output=" + out, "--unit=" + unit}
	if lines > 0 {
		args = append(args, "--lines="+strconv.Itoa(lines))
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("cannot read the journal of %s: %v: %s", unit, err, strings.TrimSpace(stderr.String()))
	}
	return b, nil
}

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
}

// maxLogLines bounds one answer; ?lines= can ask for fewer.
const maxLogLines = 5000

// getJobLog: GET /api/workflow/jobs/{id}/log[?format=short|json][&lines=N].
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
	j, err := s.cfg.Client.GetJob(r.Context(), id)
	if err != nil {
		fail(w, r, "get job "+id, err)
		return
	}
	unit := jobs.UnitName(j.ID)
	raw, err := s.cfg.Journal.Read(r.Context(), unit, format, lines)
	if err != nil {
		fail(w, r, "read the log of job "+id, err)
		return
	}
	if format == "short" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(raw)
		return
	}
	entries, err := parseJournalJSON(raw)
	if err != nil {
		fail(w, r, "read the log of job "+id, err)
		return
	}
	writeJSON(w, http.StatusOK, logAnswer{JobID: j.ID, Unit: unit, Entries: entries})
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

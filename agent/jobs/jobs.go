// Package jobs holds the job record the agent keeps for every conversion and
// the states it moves through. It is a leaf package: the agent, the D-Bus API,
// the REST bridge and hyperctl all read the same record.
package jobs

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// State is where a job is in its life.
type State string

const (
	Pending   State = "pending"
	Running   State = "running"
	Completed State = "completed"
	Failed    State = "failed"
	Cancelled State = "cancelled"
)

// Ready reports whether the state is final.
func (s State) Ready() bool { return s == Completed || s == Failed || s == Cancelled }

// Valid reports whether s is one of the known states.
func (s State) Valid() bool {
	switch s {
	case Pending, Running, Completed, Failed, Cancelled:
		return true
	}
	return false
}

// ProgressUnknown is the Progress value while a stage cannot tell how far it is.
const ProgressUnknown = -1

// Job is one conversion of one VM. A batch manifest becomes one job per VM
// sharing the same Batch id.
type Job struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Batch       string `json:"batch,omitempty"` // id of the batch this VM belongs to
	Manifest    string `json:"manifest"`        // file name of the manifest in the queue
	State       State  `json:"state"`
	Stage       string `json:"stage"`    // load inspect fix convert validate, "" before start
	Progress    int    `json:"progress"` // 0-100, ProgressUnknown when unknown
	StatusText  string `json:"status_text"`
	Unit        string `json:"unit"`         // hyper2kvm-job-<id>.service
	SubmittedBy int64  `json:"submitted_by"` // uid of the caller, or of the dropped file's owner; -1 when unknown
	Priority    int    `json:"priority"`
	// Host is the host that claimed the job and runs it (config
	// host.name): in a fleet sharing one store, which machine to look at.
	Host string `json:"host,omitempty"`
	// Attempts are the runs of the job that failed and were retried
	// (manifest retry), oldest first.
	Attempts   []Attempt `json:"attempts,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	Error      string    `json:"error,omitempty"`
	ErrorStage string    `json:"error_stage,omitempty"`
	Outputs    []string  `json:"outputs,omitempty"`     // converted disks and domain XML
	ReportPath string    `json:"report_path,omitempty"` // processed/<date>/NAME.report.json or failed/.../NAME.error.json
	BytesDone  int64     `json:"bytes_done,omitempty"`
	BytesTotal int64     `json:"bytes_total,omitempty"`

	// What the worker's report said, kept when the job ended so that the
	// agent's metrics read no report file: the size of the converted disks
	// (completed jobs) and the time of each stage that ran. Jobs that ended
	// before these were recorded have neither. Not a D-Bus property.
	ConvertedBytes int64       `json:"converted_bytes,omitempty"`
	StageTimes     []StageTime `json:"stage_times,omitempty"`
	// Warnings are the report's warnings, kept when the job ended so that
	// every view shows them without reading the report: at most
	// MaxWarnings, each cut to MaxWarningBytes.
	Warnings []string `json:"warnings,omitempty"`
}

// The bounds of Job.Warnings: a hostile guest can make a report say a lot.
const (
	MaxWarnings     = 50
	MaxWarningBytes = 500
)

// KeepWarnings is ws bounded for a job record: the first MaxWarnings, each
// cut to MaxWarningBytes on a UTF-8 boundary, with a last line saying how
// many were left out.
func KeepWarnings(ws []string) []string {
	if len(ws) == 0 {
		return nil
	}
	n := min(len(ws), MaxWarnings)
	if len(ws) > MaxWarnings {
		n = MaxWarnings - 1
	}
	out := make([]string, 0, n+1)
	for _, w := range ws[:n] {
		out = append(out, cutUTF8(w, MaxWarningBytes))
	}
	if n < len(ws) {
		out = append(out, fmt.Sprintf("%d more warnings in the report", len(ws)-n))
	}
	return out
}

// cutUTF8 is s cut to at most n bytes without splitting a character.
func cutUTF8(s string, n int) string {
	s = strings.ToValidUTF8(s, "\ufffd")
	if len(s) <= n {
		return s
	}
	const ell = "…"
	i := n - len(ell)
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + ell
}

// StageTime is how long one pipeline stage of a job ran.
type StageTime struct {
	Stage   string  `json:"stage"`
	Seconds float64 `json:"seconds"`
}

// The name of a job's unit is unitPrefix + id + unitSuffix.
const (
	unitPrefix = "hyper2kvm-job-"
	unitSuffix = ".service"
)

// UnitName is the transient unit that runs job id.
func UnitName(id string) string { return unitPrefix + id + unitSuffix }

// IDFromUnit is the job id in the name of its unit, the inverse of
// UnitName; ok is false when unit is not a job unit.
func IDFromUnit(unit string) (id string, ok bool) {
	id, ok = strings.CutPrefix(unit, unitPrefix)
	if !ok {
		return "", false
	}
	id, ok = strings.CutSuffix(id, unitSuffix)
	if !ok || id == "" {
		return "", false
	}
	return id, true
}

// Attempt is one failed run of a job that was run again.
type Attempt struct {
	Attempt int       `json:"attempt"`
	Host    string    `json:"host,omitempty"`
	Error   string    `json:"error"`
	Stage   string    `json:"stage,omitempty"`
	EndedAt time.Time `json:"ended_at"`
	RetryAt time.Time `json:"retry_at"`
}

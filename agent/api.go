// Package agent is the hyper2kvm daemon: it watches the drop folder, claims
// manifests, keeps the job store, runs each job as a transient systemd unit,
// follows the units over D-Bus and settles every manifest into processed/ or
// failed/. dbusapi exports it on the bus; it never imports the engine.
package agent

import (
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// Status is the manager's GetStatus answer.
type Status struct {
	Mode           string  `json:"mode"` // "manifest"
	Running        bool    `json:"running"`
	QueueDepth     int     `json:"queue_depth"`
	ActiveJobs     int     `json:"active_jobs"`
	ProcessedToday int     `json:"processed_today"`
	FailedToday    int     `json:"failed_today"`
	MaxWorkers     int     `json:"max_workers"`
	UptimeSeconds  float64 `json:"uptime_seconds"`
	Version        string  `json:"version"`
}

// Filter selects jobs for ListJobs. Empty fields match everything.
type Filter struct {
	States []jobs.State
	Batch  string
}

// SubmitOptions go with Submit (a{sv} on the bus).
type SubmitOptions struct {
	Name string // file name to keep in the queue, default derived from the manifest's name
}

// EventKind says what happened to a job.
type EventKind int

const (
	JobNew EventKind = iota
	JobChanged
	JobRemoved
)

// Event is one job change. Changed names the properties (D-Bus names,
// e.g. "State", "Progress") that differ from the previous event.
type Event struct {
	Kind    EventKind
	Job     jobs.Job
	Changed []string
	At      time.Time
}

// Package dbusapi is the agent's D-Bus interface, io.hyper2kvm.Agent1: the
// server side that exports the manager and one object per job (with polkit
// checks on every mutating method), and the Go client that hyperctl and the
// REST bridge use. The introspection XML beside this file is the contract.
package dbusapi

import (
	"context"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// Bus names and paths.
const (
	BusName      = "io.hyper2kvm.Agent1"
	ManagerPath  = "/io/hyper2kvm/Agent1"
	ManagerIface = "io.hyper2kvm.Agent1.Manager"
	JobIface     = "io.hyper2kvm.Agent1.Job"
	JobPathBase  = "/io/hyper2kvm/Agent1/job"
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

// SubmitOptions go with Submit as a{sv}.
type SubmitOptions struct {
	Name string // file name to keep in the queue, default derived from the manifest's name
}

// Backend is what the server exports; *agent.Agent implements it. uid is
// the caller's, already authorized by polkit when the method needs it.
type Backend interface {
	Status() Status
	Jobs(f Filter) []jobs.Job
	Job(id string) (jobs.Job, error)
	Submit(ctx context.Context, manifest []byte, o SubmitOptions, uid int64) ([]jobs.Job, error)
	Validate(manifest []byte) (valid bool, problems []string)
	Cancel(ctx context.Context, id string) error
	Retry(ctx context.Context, id string, uid int64) (jobs.Job, error)
	// Subscribe delivers every job change until cancel is called.
	Subscribe() (events <-chan Event, cancel func())
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

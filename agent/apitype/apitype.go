// Package apitype holds the wire types the daemon, its D-Bus interface, the
// REST bridge and hyperctl share: the manager's status and metrics, the job
// filter and page of a list, submit options and job events. It is a leaf
// package (it imports only agent/jobs) so that a client links none of the
// daemon: hyperctl and the bridge import it and dbusapi, never agent. The
// split follows tailscale's ipn beside ipnlocal and snapd's client/.
package apitype

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
	FailedToday    int     `json:"failed_today"` // failed only: a cancel is no failure
	CancelledToday int     `json:"cancelled_today"`
	MaxWorkers     int     `json:"max_workers"`
	UptimeSeconds  float64 `json:"uptime_seconds"`
	Version        string  `json:"version"`
	// PathUnitState is hyper2kvmd.path's ActiveState ("active" while the
	// drop folder is watched; "" when the agent could not read it) and
	// PathUnitResult its Result ("unit-start-limit-hit" and the like when
	// it failed).
	PathUnitState  string `json:"path_unit_state"`
	PathUnitResult string `json:"path_unit_result"`
	// Host is this agent's host.name; Queue its queue control state:
	// running, paused (starts no job) or draining (claims no file either).
	Host  string `json:"host,omitempty"`
	Queue string `json:"queue,omitempty"`
}

// Filter selects jobs for ListJobs. Empty fields match everything.
type Filter struct {
	States []jobs.State
	Batch  string
}

// SubmitOptions go with Submit (a{sv} on the bus).
type SubmitOptions struct {
	Name string // file name to keep in the queue, default derived from the manifest's name
	// Image is the absolute path of a disk image to convert as the drop
	// folder would: the agent writes the manifest (the configured
	// default pipeline, the image's format from its bytes, a name from
	// its file name) and the manifest argument must be empty.
	Image string
}

// EventKind says what happened to a job.
type EventKind int

const (
	JobNew EventKind = iota
	JobChanged
	// JobRemoved comes only from dbusapi's Watch: a pending or running job
	// it followed is gone from an agent that started again (its store was
	// lost). The agent itself never forgets a job while it runs.
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

// DefaultPageLimit is how many jobs a list gives when its caller names no
// limit (ListJobs on the bus, GET /api/workflow/jobs, hyperctl jobs).
const DefaultPageLimit = 100

// Page selects part of a job list: the first Offset jobs are skipped,
// then at most Limit are given (0: all the rest). Lists are newest first
// (by creation time, then id) unless OldestFirst.
type Page struct {
	Offset      int
	Limit       int
	OldestFirst bool
}

// Slice applies p to list, which is oldest first, and returns the page
// and len(list): paging for a backend that holds a plain list.
func (p Page) Slice(list []jobs.Job) ([]jobs.Job, int) {
	n := len(list)
	from, to := p.Bounds(n)
	out := make([]jobs.Job, 0, to-from)
	for i := from; i < to; i++ {
		if p.OldestFirst {
			out = append(out, list[i])
		} else {
			out = append(out, list[n-1-i])
		}
	}
	return out, n
}

// Bounds are the positions [from, to) of the page in a list of n, counted
// in the page's order.
func (p Page) Bounds(n int) (from, to int) {
	from = min(max(p.Offset, 0), n)
	to = n
	if p.Limit > 0 && p.Limit < n-from {
		to = from + p.Limit
	}
	return from, to
}

// Image is one disk image under the agent's import directories
// (ListImages): its path, its source_type as its bytes say, its size in
// bytes and the manifest (JSON) the drop folder would give it.
type Image struct {
	Path     string `json:"path"`
	Format   string `json:"format"`
	Size     int64  `json:"size"`
	Manifest string `json:"manifest"`
}

// Token is a per-user API token as the agent keeps it (never the token
// itself, which only CreateToken's answer holds): its id, the name its
// owner gave it, the owner's uid and login name, when it was made and
// last used (zero: never).
type Token struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	UID      int64     `json:"uid"`
	User     string    `json:"user"`
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"last_used,omitzero"`
}

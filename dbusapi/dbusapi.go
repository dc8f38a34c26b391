// Package dbusapi is the agent's D-Bus interface, io.hyper2kvm.Agent1: the
// server side that exports the manager and one object per job (with polkit
// checks on every mutating method), and the Go client that hyperctl and the
// REST bridge use. The introspection XML beside this file is the contract.
package dbusapi

import (
	"context"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
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

// Backend is what the server exports; *agent.Agent implements it. uid is
// the caller's, already authorized by polkit when the method needs it.
// Errors are *apierr.Error where the caller can act on the kind.
type Backend interface {
	Status() apitype.Status
	// Metrics is GetMetrics: totals over every job the backend keeps.
	Metrics() apitype.Metrics
	// Jobs is every job f selects, oldest first (the server's snapshot).
	Jobs(f apitype.Filter) []jobs.Job
	// JobPage is page p of the jobs f selects, and how many f selects.
	JobPage(f apitype.Filter, p apitype.Page) ([]jobs.Job, int)
	Job(id string) (jobs.Job, error)
	Submit(ctx context.Context, manifest []byte, o apitype.SubmitOptions, uid int64) ([]jobs.Job, error)
	// Validate makes the checks Submit makes, the files' included, for
	// the caller uid, without queueing anything.
	Validate(manifest []byte, uid int64) (valid bool, problems []string)
	Cancel(ctx context.Context, id string) error
	Retry(ctx context.Context, id string, uid int64) (jobs.Job, error)
	// JobLog is GetJobLog: up to lines journal lines of job id after the
	// cursor after ("" for the last lines), and the cursor to go on from.
	JobLog(ctx context.Context, id string, lines int, after, format string) ([]string, string, error)
	// Subscribe delivers every job change until cancel is called.
	Subscribe() (events <-chan apitype.Event, cancel func())
}

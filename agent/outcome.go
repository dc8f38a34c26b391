package agent

import (
	"fmt"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// The rules that decide how a job ended, as pure functions of what is
// known when its unit stopped: no I/O, no agent, so that outcome_test.go
// walks every case.

// ending is what the agent knows when a job's unit stopped.
type ending struct {
	cancelled  bool           // a user cancelled the job (recorded before its unit was stopped)
	unitResult string         // systemd's Result= of the unit ("oom-kill" also when the cgroup counted one)
	stage      string         // the last stage the job reported
	attempt    int            // runs so far, this one included
	report     *report.Report // the worker's report, nil when it wrote none
	stopping   bool           // the machine is shutting down
}

// endingOf is what r and rep say about a run that stopped.
func endingOf(r *record, rep *report.Report, stopping bool) ending {
	return ending{cancelled: r.Cancel, unitResult: r.UnitResult, stage: r.Stage, attempt: r.Attempt, report: rep, stopping: stopping}
}

// reportSays reports whether the worker wrote a report with status s.
func (e ending) reportSays(s report.Status) bool { return e.report != nil && e.report.Status == s }

// interrupted reports whether systemd, not a user, stopped the job: the
// worker got SIGTERM (its report says cancelled) but nobody cancelled the
// job through the API (recorded in the store before the unit is stopped),
// and the unit did not run out of time. That is a shutdown of the machine,
// or `systemctl stop` of the job's unit or of hyper2kvm.slice.
//
// While the machine shuts down (e.stopping) systemd sends SIGTERM to every
// process of the unit at once, and a helper of the engine (a
// qemu-storage-daemon, the libguestfs appliance) may die of it before the
// worker has seen its own: the report says failed, or there is none. A
// run that did not complete while the machine goes down was cut short by
// it, whatever the report says (a memory-limit kill aside).
func interrupted(e ending) bool {
	if e.cancelled || e.unitResult == "timeout" {
		return false
	}
	if e.reportSays(report.Cancelled) {
		return true
	}
	return e.stopping && e.unitResult != "oom-kill" && !e.reportSays(report.Completed)
}

// outcome decides how a job ended: its new state, the stage it ended in
// and, unless it completed, why. The worker's report says what the
// pipeline did; the unit's result says why a worker without a report died.
// jobs.Pending means the run was cut short and runs again.
func outcome(e ending) (jobs.State, string, string) {
	stage := e.stage
	if e.report != nil && e.report.Error != nil {
		stage = e.report.Error.Stage
	}
	switch {
	case e.cancelled:
		return jobs.Cancelled, stage, "cancelled"
	case e.reportSays(report.Completed) && (e.unitResult == "" || e.unitResult == "success"):
		return jobs.Completed, "", ""
	case e.unitResult == "timeout":
		return jobs.Failed, stage, "the job ran longer than its runtime limit (RuntimeMaxSec) and was stopped"
	case interrupted(e) && e.attempt < maxAttempts:
		return jobs.Pending, stage, "interrupted" // run again: see unitEndedLocked
	case interrupted(e):
		during := ""
		if stage != "" {
			during = " during " + stage
		}
		return jobs.Failed, stage, fmt.Sprintf("systemd stopped the job's unit (the machine shut down, or systemctl stop of the unit or of %s)%s, %d times; not run again", SliceName, during, e.attempt)
	case e.unitResult == "oom-kill" && e.report != nil && e.report.Error != nil:
		return jobs.Failed, stage, "the worker was killed for going over its memory limit (MemoryMax): " + e.report.Error.Message
	case e.report != nil && e.report.Error != nil:
		return jobs.Failed, stage, e.report.Error.Message
	}
	switch e.unitResult {
	case "oom-kill":
		return jobs.Failed, stage, "the worker was killed for going over its memory limit (MemoryMax)"
	case "signal", "core-dump":
		return jobs.Failed, stage, "the worker was killed by a signal before writing its report"
	case "exit-code":
		return jobs.Failed, stage, "the worker failed before writing its report; see its journal"
	case "protocol":
		return jobs.Failed, stage, "the worker exited without telling systemd it had started (protocol); see its journal"
	case "resources":
		return jobs.Failed, stage, "systemd could not set up the job unit (resources); see its journal"
	case "", "success":
		return jobs.Failed, stage, "the worker ended without writing its report"
	}
	return jobs.Failed, stage, "the job unit failed with result " + e.unitResult
}

package agent

import (
	"context"
	"slices"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// A job's state changes in one place, setStateLocked (after snapd's
// Task.SetStatus and tailscale's enterStateLocked): the fields that belong
// to a state are set and those that do not are cleared there, so that the
// paths leading to a state cannot disagree on what a job in it carries.
// transition_test.go walks every transition against that table:
//
//	pending    no StartedAt, FinishedAt, Stage, StatusText, Progress,
//	           UnitResult, Invocation, Cursor, BootID, byte counts,
//	           Error, ErrorStage, ReportStatus, Outputs or report figures
//	running    StartedAt and BootID of this run, Attempt counted; the rest
//	           as pending until the unit's signals fill it in
//	completed  FinishedAt, Progress 100, no Error or ErrorStage; the run's
//	           fields stay as the run left them
//	failed,    FinishedAt, Error (why), ErrorStage, no Outputs
//	cancelled

// transition is what a change of state carries besides the new state.
type transition struct {
	// why is logged; for failed and cancelled it is the job's Error.
	why string
	// stage is the stage a failed or cancelled job ended in (ErrorStage).
	stage string
	// rep is the worker's report of the run that ended, nil when none.
	rep *report.Report
	// notRun says a run that was to start never began (pending again): it
	// does not count as an attempt.
	notRun bool
	// bootID is the boot a run starts in.
	bootID string
	// at is when the change happened, when not now: a run's start as its
	// job file says.
	at time.Time
}

// enterState sets the fields of r that belong to state to and clears the
// ones that do not. It does no I/O: setStateLocked does the rest, and a
// new record takes its first state through it.
func (r *record) enterState(to jobs.State, t transition, now time.Time) {
	r.State = to
	switch to {
	case jobs.Pending, jobs.Running:
		// A run starts from nothing: what an earlier run learnt goes.
		r.FinishedAt = time.Time{}
		r.Stage, r.StatusText, r.Progress = "", "", jobs.ProgressUnknown
		r.BytesDone, r.BytesTotal = 0, 0
		r.UnitResult, r.Invocation, r.Cursor = "", "", ""
		r.Error, r.ErrorStage, r.ReportStatus = "", "", ""
		r.Outputs, r.ConvertedBytes, r.StageTimes, r.Warnings = nil, 0, nil, nil
		r.sawActive = false
		if to == jobs.Pending {
			r.StartedAt, r.BootID = time.Time{}, ""
			if t.notRun && r.Attempt > 0 {
				r.Attempt--
			}
		} else {
			r.StartedAt, r.BootID = now, t.bootID
			r.Attempt++
		}
	case jobs.Completed, jobs.Failed, jobs.Cancelled:
		r.FinishedAt = now
		r.Error, r.ErrorStage = "", ""
		if to != jobs.Completed {
			r.Error, r.ErrorStage = t.why, t.stage
		}
		keepReport(r, to, t.rep)
		if t.rep != nil {
			r.ReportStatus = t.rep.Status
			r.Outputs = nil
			for _, art := range t.rep.Artifacts {
				r.Outputs = append(r.Outputs, art.Path)
			}
		}
		if to == jobs.Completed {
			r.Progress = 100
		} else {
			// Removed with the rest of what the job wrote (finishLocked).
			r.Outputs = nil
		}
	}
}

// setStateLocked moves r to state to: the fields of the new state
// (enterState), the journal cursor of a run that ended, the store saved,
// a log line and a JobChanged event naming what changed. Every state
// change of a job after its creation goes through it. Called with a.mu
// held.
func (a *Agent) setStateLocked(r *record, to jobs.State, t transition) {
	from, before := r.State, r.Job
	at := t.at
	if at.IsZero() {
		at = a.now()
	}
	r.enterState(to, t, at)
	if to.Ready() && r.Unit != "" && !r.StartedAt.IsZero() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r.Cursor = a.cursor(ctx, r.Unit)
		cancel()
	}
	a.st.touch(r)
	a.save()
	f := jobFields(r)
	switch {
	case to == jobs.Running:
		a.log.Debugf(f, "job %s: %s -> running (attempt %d)", r.ID, from, r.Attempt)
	case to == jobs.Pending && t.notRun:
		a.log.Infof(f, "job %s: %s; queued again", r.ID, t.why)
	case to == jobs.Pending:
		a.log.Warnf(f, "job %s: %s; queued again (attempt %d of %d)", r.ID, t.why, r.Attempt+1, maxAttempts)
	case to == jobs.Completed:
		a.log.Infof(f, "job %s completed", r.ID)
	default:
		a.log.Warnf(f, "job %s %s: %s", r.ID, to, t.why)
	}
	a.emitLocked(apitype.JobChanged, r, changedFields(before, r.Job))
}

// changedFields names the fields of a job (as its D-Bus properties and
// REST events name them) that differ between old and new.
func changedFields(old, new jobs.Job) []string {
	var out []string
	add := func(differ bool, name string) {
		if differ {
			out = append(out, name)
		}
	}
	add(old.State != new.State, "State")
	add(old.Stage != new.Stage, "Stage")
	add(old.Progress != new.Progress || old.BytesDone != new.BytesDone || old.BytesTotal != new.BytesTotal, "Progress")
	add(old.StatusText != new.StatusText, "StatusText")
	add(old.Unit != new.Unit, "Unit")
	add(!old.StartedAt.Equal(new.StartedAt), "StartedAt")
	add(!old.FinishedAt.Equal(new.FinishedAt), "FinishedAt")
	add(old.Error != new.Error || old.ErrorStage != new.ErrorStage, "Error")
	add(!slices.Equal(old.Outputs, new.Outputs), "Outputs")
	add(old.ReportPath != new.ReportPath, "ReportPath")
	return out
}

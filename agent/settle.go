package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// finishLocked makes a job final, cleans up what a failed job left and
// settles its claim when it was the last job of it. msg is why a job did
// not complete and stage where. Called with a.mu held.
func (a *Agent) finishLocked(r *record, state jobs.State, stage, msg string, rep *report.Report) {
	a.removeScratch(r)
	if note := leftSnapshotNote(r); note != "" && state != jobs.Completed {
		a.log.Warnf(jobFields(r), "job %s: %s", r.ID, note)
		if msg != "" {
			note = msg + "; " + note
		}
		msg = note
	}
	if state != jobs.Completed && r.OutputDir != "" {
		// Nothing of a failed or cancelled job stays under the output
		// directory the agent gave it.
		if err := os.RemoveAll(r.OutputDir); err != nil {
			a.log.Warnf(jobFields(r), "cannot remove partial output: %v", err)
		}
		// Nor of what it wrote into its manifest's own output_dir.
		a.cleanOutputsLocked(r, rep)
	}
	a.setStateLocked(r, state, transition{why: msg, stage: stage, rep: rep})
	if c := a.st.Claims[r.Claim]; c != nil && slices.Contains(c.Jobs, r.ID) {
		a.settleClaimLocked(c)
	}
	a.wake()
}

// settleClaimLocked moves a claimed file whose jobs are all final to processed/
// (every job completed) or failed/, beside its report. The target is
// reserved and saved first, so a settle cut short by a crash completes
// under the same name. Called with a.mu held.
func (a *Agent) settleClaimLocked(c *claim) {
	var recs []*record
	for _, id := range c.Jobs {
		r := a.st.Jobs[id]
		if r == nil && a.remote[id] != nil {
			r = a.remote[id] // run by another host of the fleet, final there
		}
		if r == nil {
			if a.st.db.shared() {
				return // another host of the fleet holds it: settled when it is final (fleetfence.go)
			}
			continue
		}
		if !r.State.Ready() {
			return
		}
		recs = append(recs, r)
	}
	status := "completed"
	for _, r := range recs {
		switch {
		case r.State == jobs.Failed:
			status = "failed"
		case r.State == jobs.Cancelled && status == "completed":
			status = "cancelled"
		}
	}
	if c.Error != "" {
		status = "failed"
	}
	if c.Target == nil {
		t, err := a.q.Reserve(c.Name, status == "completed", a.now())
		if err != nil {
			a.settleFailedLocked(c, err)
			return
		}
		c.Target = &t
		a.st.touchClaim(c)
		a.save()
	}
	if err := a.q.Finish(a.q.Dir(queue.Processing), c.Name, *c.Target, a.settlement(c, recs, status)); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			a.settleFailedLocked(c, err)
			return
		}
		// Someone removed the file; the report still says what happened.
		a.log.Errorf(Fields{FieldManifest: c.Name}, "%v", err)
	}
	for _, r := range recs {
		r.ReportPath = c.Target.ReportPath()
		r.Manifest = c.Target.Name
		a.st.touch(r)
	}
	a.st.dropClaim(c)
	a.save()
	a.log.Infof(Fields{FieldManifest: c.Name}, "%s settled: %s", c.Original, c.Target.Path())
	for _, r := range recs {
		if a.st.Jobs[r.ID] == r { // not a job another host ran
			a.emitLocked(apitype.JobChanged, r, []string{"ReportPath"})
		}
	}
}

// Settlement is NAME.report.json in processed/ and NAME.error.json in
// failed/: the claimed file's outcome, with one entry per job (one per VM
// of a batch) and each job's own report.
type Settlement struct {
	JobID            string      `json:"job_id"`
	OriginalName     string      `json:"original_name"`
	Status           string      `json:"status"` // completed | failed | cancelled
	Batch            bool        `json:"batch,omitempty"`
	FailedAt         *time.Time  `json:"failed_at,omitempty"`
	FinishedAt       time.Time   `json:"finished_at"`
	Error            string      `json:"error,omitempty"`
	Stage            string      `json:"stage,omitempty"`
	Unit             string      `json:"unit,omitempty"`
	JournalCursor    string      `json:"journal_cursor,omitempty"`
	ValidationErrors []string    `json:"validation_errors,omitempty"`
	SubmittedBy      int64       `json:"submitted_by"`
	Jobs             []JobResult `json:"jobs"`
}

// JobResult is one job's line in a Settlement.
type JobResult struct {
	JobID         string         `json:"job_id"`
	Name          string         `json:"name"`
	Host          string         `json:"host,omitempty"` // the host that ran it (a fleet)
	Status        string         `json:"status"`
	Stage         string         `json:"stage,omitempty"`
	Error         string         `json:"error,omitempty"`
	Unit          string         `json:"unit,omitempty"`
	UnitResult    string         `json:"unit_result,omitempty"`
	InvocationID  string         `json:"invocation_id,omitempty"`
	JournalCursor string         `json:"journal_cursor,omitempty"`
	StartedAt     *time.Time     `json:"started_at,omitempty"`
	FinishedAt    time.Time      `json:"finished_at"`
	OutputDir     string         `json:"output_dir,omitempty"`
	Outputs       []string       `json:"outputs,omitempty"`
	Report        *report.Report `json:"report,omitempty"`
}

func (a *Agent) settlement(c *claim, recs []*record, status string) []byte {
	now := a.now()
	s := Settlement{OriginalName: c.Original, Status: status, Batch: c.Batch, FinishedAt: now,
		ValidationErrors: c.Validation, Error: c.Error, SubmittedBy: c.SubmittedBy}
	if status != "completed" {
		s.FailedAt = &now
	}
	for _, r := range recs {
		jr := JobResult{JobID: r.ID, Name: r.Name, Host: r.Host, Status: string(r.State), Stage: r.ErrorStage, Error: r.Error,
			UnitResult: r.UnitResult, InvocationID: r.Invocation, JournalCursor: r.Cursor, FinishedAt: r.FinishedAt}
		if !r.StartedAt.IsZero() {
			t := r.StartedAt
			jr.StartedAt, jr.Unit, jr.OutputDir, jr.Outputs = &t, r.Unit, r.OutputDir, r.Outputs
			if r.State != jobs.Completed {
				jr.OutputDir = ""
			}
		}
		if r.JobDir != "" {
			jr.Report, _ = readReport(r.JobDir)
			if jr.Report != nil && r.State != jobs.Completed {
				// Removed with the rest of what the job wrote (cleanOutputsLocked):
				// this settlement is the failure report.
				jr.Report.ReportPath = ""
			}
		}
		s.Jobs = append(s.Jobs, jr)
		if s.JobID == "" {
			s.JobID, s.Unit, s.JournalCursor = r.ID, jr.Unit, r.Cursor
		}
		if s.Error == "" && r.State != jobs.Completed {
			s.Error, s.Stage = r.Error, r.ErrorStage
			s.Unit, s.JournalCursor = jr.Unit, r.Cursor
			if c.Batch {
				s.Error = fmt.Sprintf("%s: %s", r.Name, r.Error)
			}
		}
	}
	if c.Error != "" && s.Stage == "" {
		s.Stage = "claim"
	}
	data, _ := json.MarshalIndent(s, "", "  ")
	return append(data, '\n')
}

// journalCursor is the cursor of the unit's last journal entry, so that
// `journalctl --after-cursor`/`--cursor` finds its log.
func journalCursor(ctx context.Context, unit string) string {
	out, err := exec.CommandContext(ctx, "journalctl", "-q", "--no-pager", "-o", "json", "-n", "1", "-u", unit).Output()
	if err != nil {
		return ""
	}
	var e struct {
		Cursor string `json:"__CURSOR"`
	}
	if json.Unmarshal(out, &e) != nil {
		return ""
	}
	return e.Cursor
}

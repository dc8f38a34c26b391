package agent

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/config"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// jobProblems lists what a job in its state must carry and does not, or
// carries and must not (the table in transition.go).
func jobProblems(j jobs.Job) []string {
	var p []string
	want := func(ok bool, format string, a ...any) {
		if !ok {
			p = append(p, fmt.Sprintf(format, a...))
		}
	}
	switch j.State {
	case jobs.Pending:
		want(j.StartedAt.IsZero(), "StartedAt %v", j.StartedAt)
		want(j.FinishedAt.IsZero(), "FinishedAt %v", j.FinishedAt)
		want(j.Stage == "", "Stage %q", j.Stage)
		want(j.StatusText == "", "StatusText %q", j.StatusText)
		want(j.Progress == jobs.ProgressUnknown, "Progress %d", j.Progress)
		want(j.BytesDone == 0 && j.BytesTotal == 0, "bytes %d/%d", j.BytesDone, j.BytesTotal)
		want(j.Error == "" && j.ErrorStage == "", "Error %q at %q", j.Error, j.ErrorStage)
		want(len(j.Outputs) == 0, "Outputs %v", j.Outputs)
		want(j.ConvertedBytes == 0 && len(j.StageTimes) == 0, "report figures %d %v", j.ConvertedBytes, j.StageTimes)
	case jobs.Running:
		want(!j.StartedAt.IsZero(), "no StartedAt")
		want(j.FinishedAt.IsZero(), "FinishedAt %v", j.FinishedAt)
		want(j.Unit == jobs.UnitName(j.ID), "Unit %q", j.Unit)
		want(j.Error == "" && j.ErrorStage == "", "Error %q at %q", j.Error, j.ErrorStage)
		want(len(j.Outputs) == 0, "Outputs %v", j.Outputs)
		want(j.ConvertedBytes == 0 && len(j.StageTimes) == 0, "report figures %d %v", j.ConvertedBytes, j.StageTimes)
	case jobs.Completed:
		want(!j.StartedAt.IsZero(), "no StartedAt")
		want(!j.FinishedAt.IsZero() && !j.FinishedAt.Before(j.StartedAt), "FinishedAt %v (started %v)", j.FinishedAt, j.StartedAt)
		want(j.Progress == 100, "Progress %d", j.Progress)
		want(j.Error == "" && j.ErrorStage == "", "Error %q at %q", j.Error, j.ErrorStage)
	case jobs.Failed, jobs.Cancelled:
		want(!j.FinishedAt.IsZero(), "no FinishedAt")
		want(j.StartedAt.IsZero() || !j.FinishedAt.Before(j.StartedAt), "FinishedAt %v before StartedAt %v", j.FinishedAt, j.StartedAt)
		want(j.Error != "", "no Error")
		want(len(j.Outputs) == 0, "Outputs %v of a job that did not complete", j.Outputs)
	default:
		p = append(p, "unknown state")
	}
	return p
}

// recordProblems adds what only the agent's record holds.
func recordProblems(r *record) []string {
	p := jobProblems(r.Job)
	want := func(ok bool, format string, a ...any) {
		if !ok {
			p = append(p, fmt.Sprintf(format, a...))
		}
	}
	switch r.State {
	case jobs.Pending:
		want(r.UnitResult == "" && r.Invocation == "" && r.Cursor == "", "unit result %q, invocation %q, cursor %q", r.UnitResult, r.Invocation, r.Cursor)
		want(r.BootID == "", "BootID %q", r.BootID)
		want(r.ReportStatus == "", "ReportStatus %q", r.ReportStatus)
		want(!r.sawActive, "sawActive")
	case jobs.Running:
		want(r.BootID != "", "no BootID")
		want(r.Attempt >= 1, "Attempt %d", r.Attempt)
		want(r.Cursor == "" && r.ReportStatus == "", "cursor %q, report status %q of an earlier run", r.Cursor, r.ReportStatus)
	case jobs.Completed:
		want(r.Cursor != "", "no journal cursor")
		want(r.ReportStatus == report.Completed, "ReportStatus %q", r.ReportStatus)
	}
	return p
}

// watcher records every event of every job, and what was wrong with it.
type watcher struct {
	mu       sync.Mutex
	states   map[string][]jobs.State // per job, consecutive repeats folded
	problems []string
}

func watch(t *testing.T, a *Agent) *watcher {
	w := &watcher{states: map[string][]jobs.State{}}
	ch, cancel := a.Subscribe()
	t.Cleanup(cancel)
	go func() {
		for ev := range ch {
			w.mu.Lock()
			s := w.states[ev.Job.ID]
			if len(s) == 0 || s[len(s)-1] != ev.Job.State {
				w.states[ev.Job.ID] = append(s, ev.Job.State)
			}
			for _, p := range jobProblems(ev.Job) {
				w.problems = append(w.problems, fmt.Sprintf("event %v %v of job %s (%s): %s", ev.Kind, ev.Changed, ev.Job.ID, ev.Job.State, p))
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// path is what the events said of job id so far. Starts refused while
// the machine shuts down (running, pending, again each time the agent
// schedules) count once: more than two (running, pending) in a row are
// folded.
func (w *watcher) path(id string) []jobs.State {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []jobs.State
	s := w.states[id]
	R, P := jobs.Running, jobs.Pending
	for i := 0; i < len(s); i++ {
		if n := len(out); n >= 4 && i+1 < len(s) && slices.Equal(out[n-4:], []jobs.State{R, P, R, P}) && s[i] == R && s[i+1] == P {
			i++
			continue
		}
		out = append(out, s[i])
	}
	return out
}

// checkRecord checks the record of job id once it is in state st.
func (e *env) checkRecord(id string, st jobs.State) {
	e.t.Helper()
	var problems []string
	e.waitFor(fmt.Sprintf("job %s %s", id, st), func() bool {
		e.a.mu.Lock()
		defer e.a.mu.Unlock()
		r := e.a.st.Jobs[id]
		if r == nil || r.State != st {
			return false
		}
		problems = recordProblems(r)
		return true
	})
	for _, p := range problems {
		e.t.Errorf("job %s %s: %s", id, st, p)
	}
}

// TestStateTransitions walks every way a job's state changes, through the
// agent, and checks on every event and on the record what each state
// must and must not carry. A run fills in what a later state must clear
// (stage, progress, status text, byte counts, unit result).
func TestStateTransitions(t *testing.T) {
	P, R, C, F, X := jobs.Pending, jobs.Running, jobs.Completed, jobs.Failed, jobs.Cancelled
	progressOf := func(e *env, unit string) {
		e.units.status(unit, "convert 42% 42/100: web01.qcow2")
		id, _ := jobs.IDFromUnit(unit)
		e.waitFor("progress", func() bool {
			e.a.mu.Lock()
			defer e.a.mu.Unlock()
			return e.a.st.Jobs[id].Progress == 42
		})
	}
	for _, tt := range []struct {
		name string
		edit func(*config.Config)
		// walk drives one job (named web01) and returns its id.
		walk func(e *env) string
		want []jobs.State
	}{
		{"completed", nil, func(e *env) string {
			e.drop("web01.json", e.manifest("web01", ""))
			unit := e.nextStart()
			progressOf(e, unit)
			e.units.finish(e.t, unit, "success", completed("web01"))
			e.waitSettled(queue.Processed, "web01.json")
			return e.jobID("web01")
		}, []jobs.State{P, R, C}},
		{"failed", nil, func(e *env) string {
			e.drop("web01.json", e.manifest("web01", ""))
			unit := e.nextStart()
			progressOf(e, unit)
			e.units.finish(e.t, unit, "exit-code", failedReport("convert", "boom"))
			e.waitSettled(queue.Failed, "web01.json")
			return e.jobID("web01")
		}, []jobs.State{P, R, F}},
		{"cancelled while running", nil, func(e *env) string {
			e.drop("web01.json", e.manifest("web01", ""))
			unit := e.nextStart()
			progressOf(e, unit)
			if err := e.a.Cancel(context.Background(), e.jobID("web01")); err != nil {
				e.t.Fatal(err)
			}
			e.waitSettled(queue.Failed, "web01.json")
			return e.jobID("web01")
		}, []jobs.State{P, R, X}},
		{"cancelled while pending", func(c *config.Config) { c.MaxConcurrentJobs = 1 }, func(e *env) string {
			e.drop("db01.json", e.manifest("db01", ""))
			first := e.nextStart()
			e.drop("web01.json", e.manifest("web01", ""))
			e.waitFor("web01 queued", func() bool { return len(e.a.Jobs(apitype.Filter{})) == 2 })
			if err := e.a.Cancel(context.Background(), e.jobID("web01")); err != nil {
				e.t.Fatal(err)
			}
			e.waitSettled(queue.Failed, "web01.json")
			e.units.finish(e.t, first, "success", completed("db01"))
			return e.jobID("web01")
		}, []jobs.State{P, X}},
		{"failed at claim", nil, func(e *env) string {
			e.drop("web01.json", `{"version":"1.0","name":"web01"}`)
			e.waitSettled(queue.Failed, "web01.json")
			return e.jobID("web01")
		}, []jobs.State{F}},
		{"requeued after an interruption", nil, func(e *env) string {
			e.drop("web01.json", e.manifest("web01", ""))
			unit := e.nextStart()
			progressOf(e, unit)
			e.units.finish(e.t, unit, "exit-code", interruptedReport("convert"))
			unit = e.nextStart()
			e.checkRecord(e.jobID("web01"), R)
			e.units.finish(e.t, unit, "success", completed("web01"))
			e.waitSettled(queue.Processed, "web01.json")
			return e.jobID("web01")
		}, []jobs.State{P, R, P, R, C}},
		{"requeued in a shutdown, kept pending", nil, func(e *env) string {
			e.drop("web01.json", e.manifest("web01", ""))
			unit := e.nextStart()
			progressOf(e, unit)
			e.units.setStopping(true)
			e.units.finish(e.t, unit, "exit-code", failedReport("convert", "qemu-storage-daemon: terminated"))
			id := e.jobID("web01")
			// Queued again, refused a start while the machine stops: pending.
			e.waitFor("a refused start", func() bool {
				return len(e.units.started) == 0 && len(e.path(id)) >= 5
			})
			e.checkRecord(id, P)
			e.units.setStopping(false)
			e.a.wake()
			e.units.finish(e.t, e.nextStart(), "success", completed("web01"))
			e.waitSettled(queue.Processed, "web01.json")
			return id
		}, []jobs.State{P, R, P, R, P, R, C}}, // interrupted, refused a start, run
		{"retried", nil, func(e *env) string {
			e.drop("db01.json", e.manifest("web01", ""))
			unit := e.nextStart()
			progressOf(e, unit)
			e.units.finish(e.t, unit, "exit-code", failedReport("convert", "boom"))
			e.waitSettled(queue.Failed, "db01.json")
			old := e.jobID("web01")
			j, err := e.a.Retry(context.Background(), old, 0)
			if err != nil {
				e.t.Fatal(err)
			}
			e.checkRecord(old, F)
			unit = e.nextStart()
			e.units.finish(e.t, unit, "success", completed("web01"))
			e.checkRecord(j.ID, C)
			return j.ID
		}, []jobs.State{P, R, C}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.edit)
			e.start()
			e.w = watch(t, e.a)
			id := tt.walk(e)
			e.checkRecord(id, tt.want[len(tt.want)-1])
			for deadline := time.Now().Add(20 * time.Second); !slices.Equal(e.path(id), tt.want) && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
			if got := e.path(id); !slices.Equal(got, tt.want) {
				t.Errorf("job %s went through %v, want %v", id, got, tt.want)
			}
			e.w.mu.Lock()
			defer e.w.mu.Unlock()
			for _, p := range e.w.problems {
				t.Error(p)
			}
		})
	}
}

func (e *env) path(id string) []jobs.State { return e.w.path(id) }

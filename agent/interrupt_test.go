package agent

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// interruptedReport is what the worker writes when SIGTERM reaches it:
// the engine's context was cancelled.
func interruptedReport(stage string) *report.Report {
	return &report.Report{ReportVersion: report.Version, Name: "x", Status: "cancelled",
		Error: &report.Failure{Stage: stage, Message: "cancelled during " + stage + ": terminated signal received"}}
}

// A job unit stopped by systemd (shutdown, systemctl stop), not through
// Cancel, is run again, and fails saying so when it happens at every try.
func TestStoppedBySystemdIsRunAgain(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	e.drop("web01.json", e.manifest("web01", ""))
	unit := e.nextStart()
	id := e.jobID("web01")
	e.a.mu.Lock()
	out := e.a.st.Jobs[id].OutputDir
	e.a.mu.Unlock()
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(out, "web01.qcow2.part"), nil, 0o644)
	e.units.finish(t, unit, "exit-code", interruptedReport("convert"))
	if again := e.nextStart(); again != unit {
		t.Fatalf("started %s, want %s again", again, unit)
	}
	if _, err := os.Stat(filepath.Join(out, "web01.qcow2.part")); err == nil {
		t.Errorf("the interrupted run's partial output is left for the next run")
	}
	if _, ok := e.settled(queue.Failed, "web01.json"); ok {
		t.Fatal("settled as failed although it runs again")
	}
	e.units.finish(t, unit, "success", &report.Report{ReportVersion: report.Version, Name: "web01", Status: "completed"})
	if s := e.waitSettled(queue.Processed, "web01.json"); s.Status != "completed" {
		t.Errorf("second run: %+v", s)
	}

	e.drop("db01.json", e.manifest("db01", ""))
	unit = e.nextStart()
	e.units.finish(t, unit, "exit-code", interruptedReport("convert"))
	unit = e.nextStart()
	e.units.finish(t, unit, "exit-code", interruptedReport("load"))
	s := e.waitSettled(queue.Failed, "db01.json")
	if s.Status != "failed" || !strings.Contains(s.Error, "systemd stopped the job's unit") || !strings.Contains(s.Error, "2 times") || s.Stage != "load" {
		t.Errorf("stopped at both tries: %+v", s)
	}
}

// A unit over its RuntimeMaxSec is stopped by systemd too, but that is a
// failure, not an interruption; a cancel through the API stays a cancel.
func TestTimeoutAndCancelAreNotInterruptions(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	e.drop("slow.json", e.manifest("slow", ""))
	e.units.finish(t, e.nextStart(), "timeout", interruptedReport("convert"))
	if s := e.waitSettled(queue.Failed, "slow.json"); s.Status != "failed" || !strings.Contains(s.Error, "runtime limit") {
		t.Errorf("timeout: %+v", s)
	}
	e.drop("gone.json", e.manifest("gone", ""))
	e.nextStart()
	if err := e.a.Cancel(context.Background(), e.jobID("gone")); err != nil {
		t.Fatal(err)
	}
	if s := e.waitSettled(queue.Failed, "gone.json"); s.Status != "cancelled" {
		t.Errorf("cancel: %+v", s)
	}
	if n := len(e.units.starts); n != 2 {
		t.Errorf("%d unit starts, want 2 (nothing run again)", n)
	}
}

// A worker that died with the machine (its unit is gone, it started and
// wrote no report) runs again after a new boot, and fails in the same boot.
func TestDiedWithTheMachineIsRunAgain(t *testing.T) {
	for _, tc := range []struct {
		boot string
		want string
	}{{"boot-2", queue.Processed}, {"boot-1", queue.Failed}} {
		t.Run(tc.boot, func(t *testing.T) {
			e := newEnv(t, nil)
			e.start()
			e.drop("web01.json", e.manifest("web01", ""))
			unit := e.nextStart()
			e.stop()
			e.units.mu.Lock()
			delete(e.units.units, unit) // the machine stopped: no unit, no report
			e.units.mu.Unlock()
			a, err := New(e.cfg, WithUnits(e.units), WithLogger(NewLogger(io.Discard, true)),
				WithNotify(func(s string) { e.notes <- s }),
				WithJournalCursor(func(context.Context, string) string { return "s=cursor" }),
				WithBootID(func() string { return tc.boot }))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			e.a, e.cancel, e.done = a, cancel, make(chan error, 1)
			go func() { e.done <- a.Run(ctx) }()
			e.waitNote("READY=1")
			if tc.want == queue.Processed {
				e.units.finish(t, e.nextStart(), "success", &report.Report{ReportVersion: report.Version, Name: "web01", Status: "completed"})
			}
			s := e.waitSettled(tc.want, "web01.json")
			if tc.want == queue.Failed && !strings.Contains(s.Error, "without a report") {
				t.Errorf("same boot: %+v", s)
			}
		})
	}
}

func TestBootIDMarker(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "agent")
	first := bootIDIn(dir)
	if len(first) != 32 || bootIDIn(dir) != first {
		t.Fatalf("boot id %q, then %q: want one id for the whole boot", first, bootIDIn(dir))
	}
	// A reboot empties /run.
	os.RemoveAll(dir)
	if again := bootIDIn(dir); again == first || len(again) != 32 {
		t.Errorf("after the marker is gone: %q, want a new id", again)
	}
}

func TestRemoveNoFollow(t *testing.T) {
	dir := t.TempDir()
	real, other := filepath.Join(dir, "out"), filepath.Join(dir, "other")
	for _, d := range []string{real, other} {
		os.Mkdir(d, 0o755)
		os.WriteFile(filepath.Join(d, ReportFile), []byte("{}"), 0o644)
	}
	if err := os.Symlink(other, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	removeNoFollow(filepath.Join(real, ReportFile))
	removeNoFollow(filepath.Join(dir, "link", ReportFile))
	if _, err := os.Stat(filepath.Join(real, ReportFile)); err == nil {
		t.Error("the report in a plain directory was not removed")
	}
	if _, err := os.Stat(filepath.Join(other, ReportFile)); err != nil {
		t.Error("a report reached through a symbolic link was removed")
	}
}

// A run that fails while the machine shuts down was cut short by it: a
// helper of the engine may die of the shutdown's SIGTERM before the worker
// sees its own, and the report then says failed (or there is none). It is
// run again, not failed; the same failure at another time is a failure.
func TestFailedDuringShutdownIsRunAgain(t *testing.T) {
	failed := &report.Report{ReportVersion: report.Version, Name: "x", Status: "failed",
		Error: &report.Failure{Stage: "fix", Message: "cannot read /etc/fstab: transport endpoint is not connected"}}
	e := newEnv(t, nil)
	e.start()

	e.drop("web01.json", e.manifest("web01", ""))
	unit := e.nextStart()
	e.units.setStopping(true)
	e.units.finish(t, unit, "exit-code", failed)
	// While the machine goes down nothing starts; the job waits, pending.
	id := e.jobID("web01")
	deadline := time.Now().Add(20 * time.Second)
	for {
		j, err := e.a.Job(id)
		if err != nil {
			t.Fatal(err)
		}
		if j.State == jobs.Pending {
			break
		}
		if j.State.Ready() || time.Now().After(deadline) {
			t.Fatalf("job is %s (%s), want pending again", j.State, j.Error)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, ok := e.settled(queue.Failed, "web01.json"); ok {
		t.Fatal("settled as failed although the machine was stopping")
	}
	// The next boot (here: the machine did not go down after all, and
	// another file arrives) runs it again.
	e.units.setStopping(false)
	e.drop("db01.json", e.manifest("db01", ""))
	starts := map[string]bool{e.nextStart(): true, e.nextStart(): true}
	if !starts[unit] {
		t.Fatalf("started %v, want %s again", starts, unit)
	}
	for u := range starts {
		e.units.finish(t, u, "success", &report.Report{ReportVersion: report.Version, Name: "x", Status: "completed"})
	}
	if s := e.waitSettled(queue.Processed, "web01.json"); s.Status != "completed" {
		t.Errorf("second run: %+v", s)
	}

	// Not shutting down: the same failure fails the job.
	e.drop("app01.json", e.manifest("app01", ""))
	e.units.finish(t, e.nextStart(), "exit-code", failed)
	if s := e.waitSettled(queue.Failed, "app01.json"); s.Status != "failed" || !strings.Contains(s.Error, "transport endpoint") {
		t.Errorf("failure outside a shutdown: %+v", s)
	}
}

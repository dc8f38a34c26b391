package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/config"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
)

// testClock is a clock the test moves; it never sleeps.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestScheduleWindow: a job is not started before its not_before (River
// has it as scheduled) and starts once the clock passes it; a job whose
// not_after passes while it waits fails with that reason, never started.
func TestScheduleWindow(t *testing.T) {
	clock := &testClock{t: time.Date(2026, 12, 24, 1, 0, 0, 0, time.UTC)}
	e := newEnv(t, nil)
	e.opts = []Option{WithClock(clock.now)}
	e.start()
	e.drop("later.json", e.manifest("later", `"schedule":{"not_before":"2026-12-24T02:00:00Z"},`))
	e.drop("window.json", e.manifest("window", `"schedule":{"not_before":"2026-12-24T03:00:00Z","not_after":"2026-12-24T04:00:00Z"},`))
	waitJobs := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); len(e.a.Jobs(apitype.Filter{})) < n; {
			if time.Now().After(deadline) {
				t.Fatalf("%d jobs, want %d", len(e.a.Jobs(apitype.Filter{})), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitJobs(2)
	e.a.mu.Lock()
	st := riverStates(t, e.a.st)
	e.a.mu.Unlock()
	for id, s := range st {
		if s != "scheduled" {
			t.Errorf("job %s waiting for its window is %q in River, want scheduled", id, s)
		}
	}
	e.a.wake()
	select {
	case u := <-e.units.started:
		t.Fatalf("%s started before its not_before", u)
	case <-time.After(300 * time.Millisecond):
	}
	// Waiting, it says so and until when, wherever its status text shows.
	if j, _ := e.a.Job(e.jobID("later")); j.StatusText != "waiting for its window: starts no earlier than 2026-12-24T02:00:00Z (schedule.not_before)" {
		t.Errorf("later, waiting for its window, says %q", j.StatusText)
	}
	clock.add(time.Hour) // 02:00: later is due
	if j, _ := e.a.Job(unitJobID(e.nextStart())); j.Name != "later" {
		t.Errorf("started %s at 02:00, want later", j.Name)
	}
	clock.add(3 * time.Hour) // 05:00: window closed before it ran
	id := e.jobID("window")
	for deadline := time.Now().Add(20 * time.Second); ; {
		j, _ := e.a.Job(id)
		if j.State == jobs.Failed {
			if !strings.Contains(j.Error, "window closed") || j.ErrorStage != "schedule" {
				t.Errorf("window failed with %q in %q", j.Error, j.ErrorStage)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("window is %s after its not_after", j.State)
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case u := <-e.units.started:
		if j, _ := e.a.Job(unitJobID(u)); j.Name == "window" {
			t.Error("a job whose window closed was started")
		}
	default:
	}
	// Settled on the agent's clock's day, with its report.
	p := filepath.Join(e.cfg.ManifestWorkflowDir, queue.Failed, "2026-12-24", "window.json")
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(p + queue.ErrorSuffix); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("window.json not settled in failed/: no %s", p+queue.ErrorSuffix)
		}
	}
}

// TestIdleExitArmsTheWakeTimer: an agent with only jobs waiting for their
// window exits idle, having armed the wake timer for the earliest one.
func TestIdleExitArmsTheWakeTimer(t *testing.T) {
	clock := &testClock{t: time.Date(2026, 12, 24, 1, 0, 0, 0, time.UTC)}
	e := newEnv(t, func(c *config.Config) { c.IdleTimeout = config.Duration(time.Second) })
	armed := make(chan time.Time, 1)
	e.opts = []Option{WithClock(clock.now), WithWake(func(_ context.Context, at time.Time) error { armed <- at; return nil })}
	e.start()
	e.drop("b.json", e.manifest("b", `"schedule":{"not_before":"2026-12-24T05:00:00Z"},`))
	e.drop("a.json", e.manifest("a", `"schedule":{"not_before":"2026-12-24T03:00:00Z"},`))
	for deadline := time.Now().Add(20 * time.Second); len(e.a.Jobs(apitype.Filter{})) < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("jobs not claimed")
		}
	}
	clock.add(time.Minute) // idle for longer than idle_timeout
	select {
	case at := <-armed:
		if want := time.Date(2026, 12, 24, 3, 0, 0, 0, time.UTC); !at.Equal(want) {
			t.Errorf("wake timer armed for %s, want %s", at, want)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the idle agent did not arm the wake timer (or did not exit)")
	}
	select {
	case err := <-e.done:
		e.cancel = nil
		if err != nil {
			t.Errorf("idle exit: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not exit idle")
	}
}

// TestReprioritizeReordersPendingJobs: a pending job given a higher
// priority starts before older ones; a running one cannot be changed.
func TestReprioritizeReordersPendingJobs(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.MaxConcurrentJobs = 1 })
	if _, err := queue.Open(e.cfg.ManifestWorkflowDir, queue.Options{}); err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(-time.Hour)
	for i, n := range []string{"a", "b", "c"} {
		e.drop(n+".json", e.manifest(n, ""))
		p := filepath.Join(e.cfg.ManifestWorkflowDir, queue.ToBeProcessed, n+".json")
		os.Chtimes(p, base.Add(time.Duration(i)*time.Minute), base.Add(time.Duration(i)*time.Minute))
	}
	e.start()
	first := e.nextStart()
	if j, _ := e.a.Job(unitJobID(first)); j.Name != "a" {
		t.Fatalf("first started %s, want a", j.Name)
	}
	if err := e.a.Reprioritize(context.Background(), unitJobID(first), 9); err == nil {
		t.Error("a running job was reprioritized")
	}
	if err := e.a.Reprioritize(context.Background(), e.jobID("c"), 101); err == nil {
		t.Error("priority 101 was accepted")
	}
	if err := e.a.Reprioritize(context.Background(), e.jobID("c"), 50); err != nil {
		t.Fatal(err)
	}
	e.units.finish(t, first, "success", completed("a"))
	if j, _ := e.a.Job(unitJobID(e.nextStart())); j.Name != "c" || j.Priority != 50 {
		t.Errorf("after a, %s (priority %d) started; want c, reprioritized to 50", j.Name, j.Priority)
	}
}

// TestQueuePauseDrainResume: paused, a dropped file is claimed but its
// job does not start; draining, a dropped file is not even claimed;
// resumed, both go on. The state survives a restart.
func TestQueuePauseDrainResume(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	ctx := context.Background()
	if err := e.a.SetQueue(ctx, "pause"); err != nil {
		t.Fatal(err)
	}
	e.drop("p.json", e.manifest("p", ""))
	for deadline := time.Now().Add(20 * time.Second); len(e.a.Jobs(apitype.Filter{})) < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a paused queue did not claim the file")
		}
	}
	select {
	case u := <-e.units.started:
		t.Fatalf("%s started while the queue is paused", u)
	case <-time.After(300 * time.Millisecond):
	}
	if s := e.a.Status(); s.Queue != "paused" {
		t.Errorf("status says queue %q", s.Queue)
	}
	e.stop()
	e.start() // the state is the store's, not the process's
	if s := e.a.Status(); s.Queue != "paused" {
		t.Errorf("after a restart the queue is %q", s.Queue)
	}
	if err := e.a.SetQueue(ctx, "drain"); err != nil {
		t.Fatal(err)
	}
	e.drop("d.json", e.manifest("d", ""))
	time.Sleep(300 * time.Millisecond) // several scans' worth: nothing may be claimed
	if n := len(e.a.Jobs(apitype.Filter{})); n != 1 {
		t.Errorf("a draining queue claimed a file: %d jobs", n)
	}
	if err := e.a.SetQueue(ctx, "resume"); err != nil {
		t.Fatal(err)
	}
	started := map[string]bool{}
	for range 2 {
		j, _ := e.a.Job(unitJobID(e.nextStart()))
		started[j.Name] = true
	}
	if !started["p"] || !started["d"] {
		t.Errorf("after resume started %v, want p and d", started)
	}
	if err := e.a.SetQueue(ctx, "stop"); err == nil {
		t.Error(`queue action "stop" accepted`)
	}
}

// TestPerSourceCap: with limits.per_source 1, two jobs reading from one
// directory run one after the other while a job from another directory
// runs beside them.
func TestPerSourceCap(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Limits.PerSource = 1 })
	if _, err := queue.Open(e.cfg.ManifestWorkflowDir, queue.Options{}); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "ds02", "disk.raw")
	os.MkdirAll(filepath.Dir(other), 0o755)
	os.Chmod(filepath.Dir(filepath.Dir(other)), 0o755)
	os.WriteFile(other, make([]byte, 1<<20), 0o644)
	base := time.Now().Add(-time.Hour)
	drops := map[string]string{"a": e.manifest("a", ""), "b": e.manifest("b", ""),
		"c": strings.Replace(e.manifest("c", ""), e.image, other, 1)}
	for i, n := range []string{"a", "b", "c"} {
		e.drop(n+".json", drops[n])
		p := filepath.Join(e.cfg.ManifestWorkflowDir, queue.ToBeProcessed, n+".json")
		os.Chtimes(p, base.Add(time.Duration(i)*time.Minute), base.Add(time.Duration(i)*time.Minute))
	}
	e.start()
	first, second := e.nextStart(), e.nextStart()
	names := map[string]string{}
	for _, u := range []string{first, second} {
		j, _ := e.a.Job(unitJobID(u))
		names[j.Name] = u
	}
	if names["a"] == "" || names["c"] == "" {
		t.Fatalf("started %v; want a and c (b shares a's source directory)", names)
	}
	select {
	case u := <-e.units.started:
		t.Fatalf("%s started while a reads from its source directory", u)
	case <-time.After(300 * time.Millisecond):
	}
	if j, _ := e.a.Job(e.jobID("b")); !strings.HasPrefix(j.StatusText, "waiting for its source: 1 job(s) already read from ") || !strings.HasSuffix(j.StatusText, "(limits.per_source: 1)") {
		t.Errorf("b, held by limits.per_source, says %q", j.StatusText)
	}
	e.units.finish(t, names["a"], "success", completed("a"))
	if j, _ := e.a.Job(unitJobID(e.nextStart())); j.Name != "b" {
		t.Errorf("after a, %s started; want b", j.Name)
	}
}

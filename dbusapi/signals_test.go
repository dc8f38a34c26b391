package dbusapi

import (
	"context"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/polkit"
)

// subscribe collects every signal the agent sends on conn.
func subscribe(t *testing.T, conn *dbus.Conn) <-chan *dbus.Signal {
	t.Helper()
	if err := conn.AddMatchSignal(dbus.WithMatchSender(BusName)); err != nil {
		t.Fatal(err)
	}
	ch := make(chan *dbus.Signal, 1000)
	conn.Signal(ch)
	return ch
}

// next returns the next signal, failing the test when none comes. The
// deadline only guards against a hang; the tests never assert on timing.
func next(t *testing.T, ch <-chan *dbus.Signal) *dbus.Signal {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(20 * time.Second):
		t.Fatal("no signal arrived")
		return nil
	}
}

// TestSignals follows one job's life on the bus: its announcement, each
// property change with only the changed properties, and its removal.
func TestSignals(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	sigs := subscribe(t, f.conn)
	f.authz.set(map[string]bool{polkit.ActionSubmit: true}, nil)

	got, err := f.client.Submit(ctx, []byte(`{}`), apitype.SubmitOptions{}, false)
	if err != nil {
		t.Fatal(err)
	}
	j := got[0]
	p := JobPath(j.ID)

	s := next(t, sigs)
	if s.Name != ifaceObjectManager+".InterfacesAdded" || s.Path != ManagerPath || s.Body[0] != p {
		t.Fatalf("first signal %s %s %v, want InterfacesAdded for %s", s.Name, s.Path, s.Body, p)
	}
	ifaces := s.Body[1].(map[string]map[string]dbus.Variant)
	if added, err := jobFromProps(ifaces[JobIface]); err != nil || !reflect.DeepEqual(added, j) {
		t.Errorf("InterfacesAdded carries %+v, %v; want %+v", added, err, j)
	}
	for _, name := range jobObjectIfaces {
		if _, ok := ifaces[name]; !ok {
			t.Errorf("InterfacesAdded lacks %s", name)
		}
	}
	s = next(t, sigs)
	if s.Name != ManagerIface+".JobNew" || !reflect.DeepEqual(s.Body, []any{j.ID, p}) {
		t.Fatalf("second signal %s %v, want JobNew(%s, %s)", s.Name, s.Body, j.ID, p)
	}

	steps := []func(*jobs.Job){
		func(j *jobs.Job) {
			j.State, j.Stage, j.Progress, j.StartedAt = jobs.Running, "load", 0, time.UnixMicro(1700000001000000)
		},
		func(j *jobs.Job) { j.Progress = 50 },
		func(j *jobs.Job) {}, // no change: no signal
		func(j *jobs.Job) { j.Stage, j.Progress, j.StatusText = "convert", 10, "convert 10%" },
		func(j *jobs.Job) {
			j.State, j.Progress, j.FinishedAt, j.Outputs = jobs.Completed, 100, time.UnixMicro(1700000002000000), []string{"/out/a.qcow2"}
		},
	}
	wantChanged := [][]string{
		{"Progress", "Stage", "StartedAt", "State"},
		{"Progress"},
		{"Progress", "Stage", "StatusText"},
		{"FinishedAt", "Progress", "State"},
	}
	// Details (paths, errors, warnings) are for the submitter, root and
	// group hyper2kvm, while every local user receives signals: a change
	// names them as invalidated, without their values.
	wantInvalidated := [][]string{{}, {}, {}, {"Outputs"}}
	for _, step := range steps {
		step(&j)
		f.b.put(j)
	}
	for i, want := range wantChanged {
		s := next(t, sigs)
		if s.Name != ifaceProperties+".PropertiesChanged" || s.Path != p || s.Body[0] != JobIface {
			t.Fatalf("got %s on %s (%v), want PropertiesChanged of %s on %s", s.Name, s.Path, s.Body, JobIface, p)
		}
		changed := s.Body[1].(map[string]dbus.Variant)
		var names []string
		for k := range changed {
			names = append(names, k)
		}
		slices.Sort(names)
		if !slices.Equal(names, want) {
			t.Errorf("PropertiesChanged names %v, want %v", names, want)
		}
		if inv := s.Body[2].([]string); !slices.Equal(inv, wantInvalidated[i]) {
			t.Errorf("PropertiesChanged invalidates %v, want %v", inv, wantInvalidated[i])
		}
	}
	// What Get answers matches the last signal.
	if v, err := f.conn.Object(BusName, p).GetProperty(JobIface + ".State"); err != nil || v.Value() != "completed" {
		t.Errorf("State after the signals = %v, %v", v, err)
	}

	select {
	case s := <-sigs:
		t.Errorf("unexpected extra signal %s %v", s.Name, s.Body)
	default:
	}
}

func TestGetManagedObjects(t *testing.T) {
	a, b := fullJob(), jobs.Job{ID: "b", State: jobs.Pending, SubmittedBy: -1}
	f := newFixture(t, a, b)
	var objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant
	if err := f.conn.Object(BusName, ManagerPath).Call(ifaceObjectManager+".GetManagedObjects", 0).Store(&objs); err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("GetManagedObjects returned %d objects, want 2", len(objs))
	}
	for _, j := range []jobs.Job{a, b} {
		got, err := jobFromProps(objs[JobPath(j.ID)][JobIface])
		if err != nil || !reflect.DeepEqual(got, j) {
			t.Errorf("GetManagedObjects[%s] = %+v, %v; want %+v", JobPath(j.ID), got, err, j)
		}
	}
}

// TestWatch is what hyperctl and the bridge see: a job appears, moves
// through every stage with rising progress and ends, in order, complete.
func TestWatch(t *testing.T) {
	f := newFixture(t, jobs.Job{ID: "old", State: jobs.Running, Stage: "fix", SubmittedBy: -1})
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	events, err := f.client.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.authz.set(map[string]bool{polkit.ActionSubmit: true}, nil)
	got, err := f.client.Submit(ctx, []byte(`{}`), apitype.SubmitOptions{Name: "w"}, false)
	if err != nil {
		t.Fatal(err)
	}
	j := got[0]
	stages := []string{"load", "inspect", "fix", "convert", "validate"}
	j.State = jobs.Running
	for _, st := range stages {
		for _, p := range []int{0, 30, 60, 100} {
			j.Stage, j.Progress = st, p
			f.b.put(j)
		}
	}
	j.State = jobs.Completed
	f.b.put(j)
	old, _ := f.b.Job("old")
	old.Progress = 77
	f.b.put(old)

	recv := func() apitype.Event {
		t.Helper()
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("watch channel closed early")
			}
			return ev
		case <-time.After(20 * time.Second):
			t.Fatal("no event arrived")
		}
		return apitype.Event{}
	}
	ev := recv()
	if ev.Kind != apitype.JobNew || ev.Job.ID != j.ID || ev.Job.Name != "w" {
		t.Fatalf("first event %+v, want JobNew of %s", ev, j.ID)
	}
	var seenStages []string
	last := -1
	for {
		ev = recv()
		if ev.Job.ID != j.ID {
			t.Fatalf("event for %s before %s ended", ev.Job.ID, j.ID)
		}
		if ev.Kind != apitype.JobChanged {
			t.Fatalf("event %+v, want JobChanged", ev)
		}
		if ev.Job.State == jobs.Completed {
			if !slices.Equal(ev.Changed, []string{"State"}) {
				t.Errorf("final Changed = %v, want [State]", ev.Changed)
			}
			break
		}
		if len(seenStages) == 0 || seenStages[len(seenStages)-1] != ev.Job.Stage {
			seenStages = append(seenStages, ev.Job.Stage)
			last = -1
		}
		if ev.Job.Progress <= last {
			t.Errorf("stage %s progress went from %d to %d", ev.Job.Stage, last, ev.Job.Progress)
		}
		last = ev.Job.Progress
	}
	if !slices.Equal(seenStages, stages) {
		t.Errorf("stages seen %v, want %v", seenStages, stages)
	}
	ev = recv()
	if ev.Kind != apitype.JobChanged || ev.Job.ID != "old" || ev.Job.Progress != 77 || ev.Job.Stage != "fix" {
		t.Errorf("event %+v, want a JobChanged of the pre-existing job with its whole record", ev)
	}
	cancel()
	for range events {
	}
}

// TestWatchAcrossRestart: after an agent restart (idle exit, then D-Bus
// activation) a watcher learns what changed while it was away.
func TestWatchAcrossRestart(t *testing.T) {
	keep := jobs.Job{ID: "keep", State: jobs.Running, Stage: "convert", Progress: 10, SubmittedBy: -1}
	gone := jobs.Job{ID: "gone", State: jobs.Pending, SubmittedBy: -1}
	done := jobs.Job{ID: "done", State: jobs.Running, Stage: "validate", SubmittedBy: -1}
	history := jobs.Job{ID: "history", State: jobs.Completed, SubmittedBy: -1}
	f := newFixture(t, keep, gone, done, history)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	events, err := f.client.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.srv.Close(); err != nil {
		t.Fatal(err)
	}
	keep.Progress = 90
	fresh := jobs.Job{ID: "fresh", State: jobs.Pending, SubmittedBy: -1}
	done.State = jobs.Completed
	b2 := &fakeBackend{jobs: []jobs.Job{keep, fresh, done, history}}
	srv2, err := NewServer(connect(t, f.addr), b2, f.authz)
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Close()

	// "done" finished while the agent was away: changed, not removed;
	// "history" was finished all along and changes nothing.
	want := map[string]apitype.EventKind{"keep": apitype.JobChanged, "fresh": apitype.JobNew, "gone": apitype.JobRemoved, "done": apitype.JobChanged}
	for len(want) > 0 {
		select {
		case ev := <-events:
			k, ok := want[ev.Job.ID]
			if !ok || k != ev.Kind {
				t.Fatalf("unexpected event %+v", ev)
			}
			if ev.Job.ID == "keep" && (ev.Job.Progress != 90 || !slices.Equal(ev.Changed, []string{"Progress"})) {
				t.Errorf("keep changed to %+v (%v), want progress 90", ev.Job, ev.Changed)
			}
			if ev.Job.ID == "done" && (ev.Job.State != jobs.Completed || !slices.Equal(ev.Changed, []string{"State"})) {
				t.Errorf("done changed to %+v (%v), want completed", ev.Job, ev.Changed)
			}
			delete(want, ev.Job.ID)
		case <-time.After(20 * time.Second):
			t.Fatalf("events missing: %v", want)
		}
	}
	// Nothing more: the finished history is not replayed. The next event
	// is the next change.
	fresh.Progress = 5
	b2.put(fresh)
	select {
	case ev := <-events:
		if ev.Job.ID != "fresh" || ev.Kind != apitype.JobChanged {
			t.Errorf("event %+v, want fresh changed", ev)
		}
	case <-time.After(20 * time.Second):
		t.Error("the change of fresh did not arrive")
	}
}

// TestWatchSlowReader: a burst of changes read after the fact arrives
// complete and in order.
func TestWatchSlowReader(t *testing.T) {
	j := jobs.Job{ID: "burst", State: jobs.Running, Stage: "convert", SubmittedBy: -1}
	f := newFixture(t, j)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	events, err := f.client.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const n = 1500
	for i := 1; i <= n; i++ {
		j.BytesDone = int64(i)
		f.b.put(j)
	}
	for i := 1; i <= n; i++ {
		select {
		case ev := <-events:
			if ev.Job.BytesDone != int64(i) {
				t.Fatalf("event %d carries BytesDone %d", i, ev.Job.BytesDone)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("only %d of %d events arrived", i-1, n)
		}
	}
}

package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/config"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// fakeUnits is systemd as the agent sees it: transient units that run
// until the test finishes them.
type fakeUnits struct {
	mu        sync.Mutex
	units     map[string]*fakeUnit
	starts    []string
	active    int
	maxActive int
	changes   chan UnitChange
	started   chan string
	stopping  bool // what Stopping says: the machine is shutting down
}

// Stopping is systemState: the fake machine is shutting down when the
// test says so.
func (f *fakeUnits) Stopping(ctx context.Context) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stopping
}

func (f *fakeUnits) setStopping(v bool) {
	f.mu.Lock()
	f.stopping = v
	f.mu.Unlock()
}

type fakeUnit struct {
	info   UnitInfo
	props  map[string]any
	jobDir string
}

func newFakeUnits() *fakeUnits {
	return &fakeUnits{units: map[string]*fakeUnit{}, changes: make(chan UnitChange, 4096), started: make(chan string, 4096)}
}

func (f *fakeUnits) Start(ctx context.Context, name string, props []sd.Property) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopping {
		// As systemd answers while the machine shuts down.
		return dbus.Error{Name: "org.freedesktop.systemd1.TransactionIsDestructive", Body: []any{"transaction is destructive"}}
	}
	if u, ok := f.units[name]; ok && !u.info.Finished() {
		return dbus.Error{Name: "org.freedesktop.systemd1.UnitExists", Body: []any{"unit exists"}}
	}
	u := &fakeUnit{props: map[string]any{}, info: UnitInfo{Name: name, LoadState: "loaded", ActiveState: "active", SubState: "running", Result: "success", MainStarted: 1}}
	for _, p := range props {
		u.props[p.Name] = p.Value.Value()
	}
	if ex, ok := u.props["ExecStart"].([]execStart); ok {
		_ = ex
	}
	for i, a := range execArgs(u.props["ExecStart"]) {
		if a == "--job-dir" {
			u.jobDir = execArgs(u.props["ExecStart"])[i+1]
		}
	}
	os.WriteFile(filepath.Join(u.jobDir, StartedFile), []byte("now"), 0o600)
	f.units[name] = u
	f.starts = append(f.starts, name)
	f.active++
	f.maxActive = max(f.maxActive, f.active)
	// systemd creates the unit inactive and then starts it; the first
	// signal may show it before it ran.
	f.changes <- UnitChange{Info: UnitInfo{Name: name, ActiveState: "inactive", SubState: "dead", Result: "success"}, Has: map[string]bool{"ActiveState": true, "SubState": true, "Result": true}}
	f.changes <- UnitChange{Info: u.info, Has: map[string]bool{"ActiveState": true, "SubState": true}}
	f.started <- name
	return nil
}

type execStart struct {
	Path             string
	Args             []string
	UncleanIsFailure bool
}

// execArgs digs the argv out of go-systemd's ExecStart value.
func execArgs(v any) []string {
	b, _ := json.Marshal(v)
	var es []struct {
		Path string
		Args []string
	}
	if json.Unmarshal(b, &es) != nil || len(es) == 0 {
		return nil
	}
	return es[0].Args
}

// finish ends a unit: the worker wrote rep (nil: none) and systemd says result.
func (f *fakeUnits) finish(t *testing.T, name, result string, rep *report.Report) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	u := f.units[name]
	if u == nil || u.info.Finished() {
		t.Fatalf("finish %s: not running", name)
	}
	if rep != nil {
		data, _ := json.Marshal(rep)
		if err := queue.WriteFileAtomic(filepath.Join(u.jobDir, ReportFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	u.info.ActiveState, u.info.Result, u.info.InactiveEnter = "inactive", result, 1
	if result != "success" {
		u.info.ActiveState = "failed"
	}
	f.active--
	f.changes <- UnitChange{Info: u.info, Has: map[string]bool{"ActiveState": true, "SubState": true, "Result": true}}
}

func (f *fakeUnits) status(name, text string) {
	f.mu.Lock()
	if u := f.units[name]; u != nil {
		u.info.StatusText = text // as systemd keeps it
	}
	f.mu.Unlock()
	f.changes <- UnitChange{Info: UnitInfo{Name: name, StatusText: text}, Has: map[string]bool{"StatusText": true}}
}

func (f *fakeUnits) Stop(ctx context.Context, name string) error {
	f.mu.Lock()
	u := f.units[name]
	f.mu.Unlock()
	if u == nil {
		return fmt.Errorf("no unit %s", name)
	}
	// The worker sees SIGTERM, its engine cancels and it reports so.
	os.MkdirAll(filepath.Join(u.jobDir, "partial"), 0o755)
	rep := &report.Report{ReportVersion: report.Version, Status: "cancelled"}
	go func() {
		f.mu.Lock()
		data, _ := json.Marshal(rep)
		queue.WriteFileAtomic(filepath.Join(u.jobDir, ReportFile), data, 0o644)
		u.info.ActiveState, u.info.Result, u.info.InactiveEnter = "failed", "exit-code", 1
		f.active--
		f.mu.Unlock()
		f.changes <- UnitChange{Info: u.info, Has: map[string]bool{"ActiveState": true, "Result": true}}
	}()
	return nil
}

func (f *fakeUnits) Get(ctx context.Context, name string) (UnitInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if u, ok := f.units[name]; ok {
		return u.info, nil
	}
	return UnitInfo{Name: name, LoadState: "not-found", ActiveState: "inactive"}, nil
}

func (f *fakeUnits) List(ctx context.Context) ([]UnitInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []UnitInfo
	for _, u := range f.units {
		out = append(out, u.info)
	}
	return out, nil
}

func (f *fakeUnits) Ref(ctx context.Context, name string) error { return nil }
func (f *fakeUnits) Release(ctx context.Context, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if u, ok := f.units[name]; ok && u.info.Finished() {
		delete(f.units, name) // CollectMode=inactive-or-failed once unreferenced
	}
}
func (f *fakeUnits) Changes() <-chan UnitChange { return f.changes }
func (f *fakeUnits) Close()                     {}

func (f *fakeUnits) props(name string) map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.units[name].props
}

// env is one agent on temporary directories.
type env struct {
	t      *testing.T
	cfg    config.Config
	units  *fakeUnits
	a      *Agent
	cancel context.CancelFunc
	done   chan error
	notes  chan string
	image  string
	w      *watcher // events, when a test watches them
	opts   []Option // more options for New
}

func newEnv(t *testing.T, edit func(*config.Config)) *env {
	t.Helper()
	root := t.TempDir()
	cfg := config.Default()
	cfg.ManifestWorkflowDir = filepath.Join(root, "queue")
	cfg.OutputDir = filepath.Join(root, "output")
	cfg.StateDir = filepath.Join(root, "state")
	cfg.StableTime = config.Duration(10 * time.Millisecond)
	cfg.IdleTimeout = 0
	cfg.WorkerPath = "/usr/bin/hyper2kvmd"
	if edit != nil {
		edit(&cfg)
	}
	e := &env{t: t, cfg: cfg, units: newFakeUnits(), notes: make(chan string, 4096)}
	// Let other uids reach the source, as in a real source directory.
	os.Chmod(root, 0o755)
	os.Chmod(filepath.Dir(root), 0o755)
	e.image = filepath.Join(root, "src", "disk.raw")
	os.MkdirAll(filepath.Dir(e.image), 0o755)
	if err := os.WriteFile(e.image, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) start() {
	e.t.Helper()
	a, err := New(e.cfg, append([]Option{WithUnits(e.units), WithLogger(NewLogger(io.Discard, true)),
		WithNotify(func(s string) { e.notes <- s }),
		WithJournalCursor(func(context.Context, string) string { return "s=cursor" }),
		WithBootID(func() string { return "boot-1" })}, e.opts...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.a, e.cancel, e.done = a, cancel, make(chan error, 1)
	checkSaved(e.t, a.st)
	go func() { e.done <- a.Run(ctx) }()
	e.waitNote("READY=1")
	e.t.Cleanup(e.stop)
}

func (e *env) stop() {
	if e.cancel != nil {
		e.cancel()
		<-e.done
		e.cancel = nil
	}
}

func (e *env) waitNote(want string) {
	e.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case n := <-e.notes:
			if n == want {
				return
			}
		case <-deadline:
			e.t.Fatalf("no %q from the agent", want)
		}
	}
}

// waitFor waits (with a generous deadline) until cond holds.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	e.t.Fatalf("timed out waiting for %s", what)
}

func (e *env) nextStart() string {
	e.t.Helper()
	select {
	case n := <-e.units.started:
		return n
	case <-time.After(20 * time.Second):
		e.t.Fatal("no job unit started")
	}
	return ""
}

func (e *env) manifest(name string, extra string) string {
	return fmt.Sprintf(`{"version":"1.0","name":%q,%s"pipeline":{"load":{"source_type":"raw","source_path":%q},"fix":{"enabled":false}}}`, name, extra, e.image)
}

func (e *env) drop(name, content string) {
	e.t.Helper()
	tmp := filepath.Join(e.cfg.ManifestWorkflowDir, queue.ToBeProcessed, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(e.cfg.ManifestWorkflowDir, queue.ToBeProcessed, name)); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) settled(dir, name string) (Settlement, bool) {
	day := time.Now().Format(queue.DateLayout)
	suffix := queue.ReportSuffix
	if dir == queue.Failed {
		suffix = queue.ErrorSuffix
	}
	p := filepath.Join(e.cfg.ManifestWorkflowDir, dir, day, name)
	data, err := os.ReadFile(p + suffix)
	if err != nil || !exists(p) {
		return Settlement{}, false
	}
	var s Settlement
	if err := json.Unmarshal(data, &s); err != nil {
		e.t.Fatalf("%s%s: %v", p, suffix, err)
	}
	return s, true
}

func (e *env) waitSettled(dir, name string) Settlement {
	e.t.Helper()
	var s Settlement
	e.waitFor(name+" in "+dir, func() bool {
		var ok bool
		s, ok = e.settled(dir, name)
		return ok
	})
	return s
}

func completed(name string) *report.Report {
	return &report.Report{ReportVersion: report.Version, Name: name, Status: "completed",
		Artifacts: []report.Artifact{{Path: "/out/" + name + ".qcow2", Kind: "disk"}}}
}

func failedReport(stage, msg string) *report.Report {
	return &report.Report{ReportVersion: report.Version, Name: "x", Status: "failed",
		Error: &report.Failure{Stage: stage, Message: msg}}
}

func TestDroppedManifestRunsAsUnitAndSettles(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Job.MemoryMax = "512M"; c.Job.CPUQuota = "50%"; c.Job.TasksMax = 64 })
	e.start()
	e.drop("web01.json", e.manifest("web01", `"resources":{"tasks_max":32},`))
	unit := e.nextStart()
	p := e.units.props(unit)
	if p["MemoryMax"] != uint64(512<<20) || p["CPUQuotaPerSecUSec"] != uint64(500000) || p["TasksMax"] != uint64(32) {
		t.Errorf("limits MemoryMax=%v CPUQuotaPerSecUSec=%v TasksMax=%v; want config 512M, 50%%, manifest 32", p["MemoryMax"], p["CPUQuotaPerSecUSec"], p["TasksMax"])
	}
	if p["Slice"] != SliceName || p["Type"] != "notify" || p["CollectMode"] != "inactive-or-failed" {
		t.Errorf("unit settings %v", p)
	}
	if extra, _ := p["LogExtraFields"].([][]byte); len(extra) != 1 || !strings.HasPrefix(string(extra[0]), "HYPER2KVM_JOB_ID=") {
		t.Errorf("LogExtraFields = %v", p["LogExtraFields"])
	}
	args := execArgs(p["ExecStart"])
	if len(args) != 4 || args[0] != "/usr/bin/hyper2kvmd" || args[1] != "worker" || args[2] != "--job-dir" {
		t.Errorf("ExecStart = %v", args)
	}
	spec, m, err := ReadJobDir(args[3])
	if err != nil || m.Name != "web01" || spec.Claim != "web01.json" {
		t.Fatalf("job dir: %+v %v %v", spec, m, err)
	}
	e.units.status(unit, "convert 42% 42/100: web01.qcow2")
	e.waitFor("progress", func() bool {
		j := e.a.Jobs(apitype.Filter{})[0]
		return j.Stage == "convert" && j.Progress == 42
	})
	e.units.finish(t, unit, "success", completed("web01"))
	s := e.waitSettled(queue.Processed, "web01.json")
	if s.Status != "completed" || len(s.Jobs) != 1 || s.Jobs[0].Report == nil || s.Unit != unit || s.JournalCursor != "s=cursor" {
		t.Errorf("report = %+v", s)
	}
	if names, _ := os.ReadDir(filepath.Join(e.cfg.ManifestWorkflowDir, queue.Processing)); len(names) != 0 {
		t.Errorf("processing/ not empty: %v", names)
	}
	j := e.a.Jobs(apitype.Filter{})[0]
	if j.State != jobs.Completed || len(j.Outputs) != 1 || !strings.HasSuffix(j.ReportPath, "web01.json.report.json") {
		t.Errorf("job = %+v", j)
	}
}

func TestInvalidAndRefusedGoToFailed(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	e.drop("broken.json", `{"version":"1.0",`)
	e.drop("bad.json", `{"version":"1.0","name":"bad","pipeline":{"load":{"source_type":"floppy","source_path":"/nope"}}}`)
	e.drop("missing.json", strings.Replace(e.manifest("missing", ""), e.image, "/nonexistent/disk.raw", 1))
	e.drop("wrongtype.json", strings.Replace(e.manifest("wrongtype", ""), `"raw"`, `"vmdk"`, 1))
	e.drop("inqueue.json", strings.Replace(e.manifest("inqueue", ""), e.image, filepath.Join(e.cfg.ManifestWorkflowDir, "x.raw"), 1))
	os.Symlink(e.image, filepath.Join(e.cfg.ManifestWorkflowDir, queue.ToBeProcessed, "link.raw"))
	for name, want := range map[string]string{
		"broken.json":    "",
		"bad.json":       "pipeline.load.source_type",
		"missing.json":   "does not exist",
		"wrongtype.json": "pipeline.load.source_type",
		"inqueue.json":   "drop folder",
		"link.raw":       "symbolic links",
	} {
		s := e.waitSettled(queue.Failed, name)
		all := s.Error + strings.Join(s.ValidationErrors, "\n")
		if s.Status != "failed" || s.FailedAt == nil || !strings.Contains(all, want) || s.OriginalName != name || s.JobID == "" {
			t.Errorf("%s: error report %+v, want status failed mentioning %q", name, s, want)
		}
	}
	if len(e.units.starts) != 0 {
		t.Errorf("units started for invalid input: %v", e.units.starts)
	}
}

func TestPriorityOrderAndConcurrencyBound(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.MaxConcurrentJobs = 2 })
	// Dropped while the agent is down, so all are claimed in one scan.
	q, _ := queue.Open(e.cfg.ManifestWorkflowDir, queue.Options{})
	_ = q
	prio := map[string]int{"a": 0, "b": 5, "c": 0, "d": 9, "e": -1}
	base := time.Now().Add(-time.Hour)
	for i, n := range []string{"a", "b", "c", "d", "e"} {
		e.drop(n+".json", e.manifest(n, fmt.Sprintf(`"priority":%d,`, prio[n])))
		p := filepath.Join(e.cfg.ManifestWorkflowDir, queue.ToBeProcessed, n+".json")
		os.Chtimes(p, base.Add(time.Duration(i)*time.Minute), base.Add(time.Duration(i)*time.Minute))
	}
	e.start()
	var order []string
	name := func(u string) string {
		j, _ := e.a.Job(unitJobID(u))
		return j.Name
	}
	running := []string{e.nextStart(), e.nextStart()}
	order = append(order, name(running[0]), name(running[1]))
	for len(order) < 5 {
		if got := e.a.Status().ActiveJobs; got > 2 {
			t.Errorf("%d jobs active, max_concurrent_jobs is 2", got)
		}
		select {
		case extra := <-e.units.started:
			t.Fatalf("%s started while 2 were running", extra)
		default:
		}
		// One finishes, so the next can start.
		e.units.finish(t, running[0], "success", completed(name(running[0])))
		next := e.nextStart()
		running = append(running[1:], next)
		order = append(order, name(next))
	}
	if want := []string{"d", "b", "a", "c", "e"}; !slices.Equal(order, want) {
		t.Errorf("start order %v, want %v (priority, then file time)", order, want)
	}
	if e.units.maxActive > 2 {
		t.Errorf("%d units were active at once", e.units.maxActive)
	}
}

func (e *env) jobID(name string) string {
	for _, j := range e.a.Jobs(apitype.Filter{}) {
		if j.Name == name {
			return j.ID
		}
	}
	e.t.Fatalf("no job %s", name)
	return ""
}

func TestBatchRunsWithItsConcurrencyAndReportsEveryVM(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	vm := func(n string) string {
		return fmt.Sprintf(`{"name":%q,"pipeline":{"load":{"source_type":"raw","source_path":%q},"fix":{"enabled":false}}}`, n, e.image)
	}
	e.drop("batch.json", fmt.Sprintf(`{"version":"1.0","batch":true,"concurrency":1,"vms":[%s,%s,%s]}`, vm("v1"), vm("v2"), vm("v3")))
	u1 := e.nextStart()
	select {
	case u := <-e.units.started:
		t.Fatalf("%s started beside %s; batch concurrency is 1", u, u1)
	case <-time.After(200 * time.Millisecond):
	}
	e.units.finish(t, u1, "success", completed("v1"))
	u2 := e.nextStart()
	e.units.finish(t, u2, "failed", &report.Report{Status: "failed", Error: &report.Failure{Stage: "convert", Message: "disk full"}})
	u3 := e.nextStart()
	e.units.finish(t, u3, "success", completed("v3"))
	s := e.waitSettled(queue.Failed, "batch.json")
	if !s.Batch || len(s.Jobs) != 3 || s.Jobs[1].Status != "failed" || s.Jobs[1].Stage != "convert" || !strings.Contains(s.Error, "v2: disk full") {
		t.Errorf("batch report %+v", s)
	}
}

func TestCancelRunningLeavesNoOutput(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	e.drop("web01.json", e.manifest("web01", ""))
	unit := e.nextStart()
	id := e.jobID("web01")
	rec := e.a.st.Jobs[id]
	os.MkdirAll(rec.OutputDir, 0o755)
	os.WriteFile(filepath.Join(rec.OutputDir, "web01.qcow2.part"), []byte("half"), 0o644)
	if err := e.a.Cancel(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	s := e.waitSettled(queue.Failed, "web01.json")
	if s.Status != "cancelled" || s.Jobs[0].Status != "cancelled" {
		t.Errorf("report %+v", s)
	}
	if exists(rec.OutputDir) {
		t.Errorf("partial output left in %s", rec.OutputDir)
	}
	if err := e.a.Cancel(context.Background(), id); !apierr.Is(err, apierr.InvalidState) {
		t.Errorf("second cancel: %v, want InvalidState", err)
	}
	if err := e.a.Cancel(context.Background(), "nope"); !apierr.Is(err, apierr.NoSuchJob) {
		t.Errorf("cancel of unknown job: %v", err)
	}
	_ = unit
	j, err := e.a.Retry(context.Background(), id, 0)
	if err != nil || j.ID == id || j.State != jobs.Pending && j.State != jobs.Running {
		t.Fatalf("Retry = %+v, %v", j, err)
	}
	e.units.finish(t, e.nextStart(), "success", completed("web01"))
	e.waitSettled(queue.Processed, "web01.retry.json")
}

func TestRestartReattachesAndSettlesOnce(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	e.drop("web01.json", e.manifest("web01", ""))
	unit := e.nextStart()
	e.stop() // the agent goes away; the unit keeps running

	e.start()
	select {
	case u := <-e.units.started:
		t.Fatalf("restarted agent started %s again", u)
	case <-time.After(100 * time.Millisecond):
	}
	if j := e.a.Jobs(apitype.Filter{})[0]; j.State != jobs.Running {
		t.Fatalf("after restart job is %s, want running", j.State)
	}
	e.units.finish(t, unit, "success", completed("web01"))
	e.waitSettled(queue.Processed, "web01.json")
	if n := len(e.a.Jobs(apitype.Filter{})); n != 1 || len(e.units.starts) != 1 {
		t.Errorf("%d jobs, %d unit starts; want one of each", n, len(e.units.starts))
	}
}

func TestRestartAfterUnitFinishedWhileDown(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	e.drop("web01.json", e.manifest("web01", ""))
	unit := e.nextStart()
	e.stop()
	e.units.finish(t, unit, "success", completed("web01"))
	e.units.Release(context.Background(), unit) // collected: nobody holds a reference
	for len(e.units.changes) > 0 {
		<-e.units.changes
	}
	e.start()
	s := e.waitSettled(queue.Processed, "web01.json")
	if s.Status != "completed" {
		t.Errorf("report %+v", s)
	}
}

func TestRestartRequeuesNeverStartedAndOrphans(t *testing.T) {
	e := newEnv(t, nil)
	// A job the store says runs, whose unit never came up (no "started").
	st := newState()
	proc := filepath.Join(e.cfg.ManifestWorkflowDir, queue.Processing)
	os.MkdirAll(proc, 0o755)
	os.WriteFile(filepath.Join(proc, "a.json"), []byte(e.manifest("a", "")), 0o644)
	raw, _ := json.Marshal(json.RawMessage(e.manifest("a", "")))
	st.Jobs["0000000a"] = &record{Job: jobs.Job{ID: "0000000a", Name: "a", State: jobs.Running, Unit: jobs.UnitName("0000000a"), Manifest: "a.json"},
		Claim: "a.json", VM: raw, JobDir: filepath.Join(e.cfg.StateDir, "jobs", "0000000a"), Attempt: 1}
	st.Claims["a.json"] = &claim{Name: "a.json", Original: "a.json", Kind: kindManifest, Jobs: []string{"0000000a"}}
	// Written as the agent before River did: the start imports it.
	writeLegacy(t, e.cfg.StateDir, st.Jobs, st.Claims)
	// A claimed manifest no job knows (the agent died right after the rename).
	os.WriteFile(filepath.Join(proc, "b.json"), []byte(e.manifest("b", "")), 0o644)
	e.start()
	got := map[string]bool{}
	for range 2 {
		u := e.nextStart()
		j, _ := e.a.Job(unitJobID(u))
		got[j.Name] = true
		e.units.finish(t, u, "success", completed(j.Name))
	}
	if !got["a"] || !got["b"] {
		t.Errorf("started %v, want a and b", got)
	}
	e.waitSettled(queue.Processed, "a.json")
	e.waitSettled(queue.Processed, "b.json")
}

func TestWorkerKilledWithoutReport(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	e.drop("big.json", e.manifest("big", `"resources":{"memory_max":"64M"},`))
	unit := e.nextStart()
	e.units.status(unit, "convert 10%: big.qcow2")
	e.units.finish(t, unit, "oom-kill", nil)
	s := e.waitSettled(queue.Failed, "big.json")
	if !strings.Contains(s.Error, "memory limit") || s.Stage != "convert" || s.Jobs[0].UnitResult != "oom-kill" {
		t.Errorf("report %+v", s)
	}
}

// On cgroup v1 systemd reports a worker killed by the OOM killer as
// "signal" (or, when a child died, "exit-code" with the worker's report);
// the unit's ExecStopPost counted the kills in its memory cgroup.
func TestWorkerOOMKilledOnCgroupV1(t *testing.T) {
	for _, tc := range []struct {
		name, result string
		rep          *report.Report
		oomKills     string
		want         string
		wantResult   string
	}{
		{"killed worker", "signal", nil, "1\n", "memory limit", "oom-kill"},
		{"killed child", "exit-code", failedReport("convert", "qemu-img convert: killed by signal 9"), "2\n", "memory limit (MemoryMax): qemu-img", "oom-kill"},
		{"plain kill", "signal", nil, "0\n", "killed by a signal", "signal"},
		{"no probe", "signal", nil, "", "killed by a signal", "signal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.start()
			e.drop("big.json", e.manifest("big", `"resources":{"memory_max":"64M"},`))
			unit := e.nextStart()
			p := e.units.props(unit)
			post, _ := p["ExecStopPost"].([]execCommand)
			if len(post) != 1 || !post[0].IgnoreFailure || !strings.Contains(post[0].Args[2], "oom_kill") || strings.Contains(strings.ReplaceAll(post[0].Args[2], "$$", ""), "$") {
				t.Fatalf("ExecStopPost = %+v; want the OOM probe, failure ignored, every $ escaped", post)
			}
			if start, _ := p["ExecStart"].([]execCommand); len(start) != 1 || start[0].IgnoreFailure {
				t.Fatalf("ExecStart = %+v; a failing worker must fail the unit", start)
			}
			if tc.oomKills != "" {
				os.WriteFile(filepath.Join(e.units.units[unit].jobDir, OOMFile), []byte(tc.oomKills), 0o644)
			}
			e.units.finish(t, unit, tc.result, tc.rep)
			s := e.waitSettled(queue.Failed, "big.json")
			if !strings.Contains(s.Error, tc.want) || s.Jobs[0].UnitResult != tc.wantResult {
				t.Errorf("error %q result %q; want %q and %s", s.Error, s.Jobs[0].UnitResult, tc.want, tc.wantResult)
			}
		})
	}
}

func TestSubmitAndValidate(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	ok, problems := e.a.Validate([]byte(`{"version":"2"}`), 0)
	if ok || len(problems) == 0 {
		t.Errorf("Validate of a bad manifest = %v %v", ok, problems)
	}
	_, err := e.a.Submit(context.Background(), []byte(`{"version":"1.0","name":"x"}`), apitype.SubmitOptions{}, 0)
	var ae *apierr.Error
	if !apierr.Is(err, apierr.InvalidManifest) || !errorsAs(err, &ae) || len(ae.Details) == 0 {
		t.Errorf("Submit of an invalid manifest: %v", err)
	}
	js, err := e.a.Submit(context.Background(), []byte(e.manifest("web01", "")), apitype.SubmitOptions{}, 1000)
	if os.Geteuid() == 0 && (err != nil || len(js) != 1 || js[0].SubmittedBy != 1000) {
		t.Fatalf("Submit = %+v, %v", js, err)
	}
	// A source the submitter cannot read is refused, though root could.
	os.Chmod(e.image, 0o600)
	_, err = e.a.Submit(context.Background(), []byte(e.manifest("web02", "")), apitype.SubmitOptions{}, 1000)
	if !apierr.Is(err, apierr.InvalidManifest) || !strings.Contains(strings.Join(ae2(err).Details, "\n"), "cannot read") {
		t.Errorf("Submit of another user's file: %v", err)
	}
	// Validate makes the same checks for the caller: "valid" means
	// Submit accepts it, and each fault is one problem.
	if os.Geteuid() == 0 {
		ok, problems = e.a.Validate([]byte(e.manifest("web02", "")), 1000)
		if ok || len(problems) != 1 || !strings.Contains(problems[0], "pipeline.load.source_path: the submitter cannot read it") {
			t.Errorf("Validate of a file uid 1000 cannot read, as uid 1000 = %v %q; want one problem saying so", ok, problems)
		}
		if ok, problems = e.a.Validate([]byte(e.manifest("web02", "")), 0); !ok {
			t.Errorf("Validate of the same manifest as root = %v %q", ok, problems)
		}
	}
	missing := strings.Replace(e.manifest("web04", ""), e.image, filepath.Join(filepath.Dir(e.image), "missing.img"), 1)
	ok, problems = e.a.Validate([]byte(missing), 1000)
	if ok || len(problems) != 1 || !strings.Contains(problems[0], "pipeline.load.source_path:") || !strings.Contains(problems[0], "does not exist") {
		t.Errorf("Validate of a missing source = %v %q; want one problem: does not exist", ok, problems)
	}
	if _, err := e.a.Submit(context.Background(), []byte(e.manifest("web03", "")), apitype.SubmitOptions{Name: "../x.json"}, 0); !apierr.Is(err, apierr.InvalidArgs) {
		t.Errorf("Submit with name ../x.json: %v", err)
	}
}

func errorsAs(err error, ae **apierr.Error) bool {
	e, ok := err.(*apierr.Error)
	*ae = e
	return ok
}

func ae2(err error) *apierr.Error {
	if e, ok := err.(*apierr.Error); ok {
		return e
	}
	return &apierr.Error{}
}

func TestStatePersistence(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	s.Jobs["abc"] = &record{Job: jobs.Job{ID: "abc", State: jobs.Running, Name: "web01"}, Claim: "web01.json", Cancel: true, Attempt: 2}
	s.putClaim(&claim{Name: "web01.json", Jobs: []string{"abc"}, Target: &queue.Target{Dir: "/d", Name: "web01.json", Suffix: queue.ReportSuffix}})
	if err := s.save(); err != nil {
		t.Fatal(err)
	}
	got := openTestStore(t, dir)
	r := got.Jobs["abc"]
	if r == nil || r.Name != "web01" || !r.Cancel || r.Attempt != 2 || got.Claims["web01.json"].Target.Name != "web01.json" {
		t.Errorf("round trip lost data: %+v %+v", r, got.Claims)
	}
}

// unitJobID is the id of the job unit u runs.
func unitJobID(u string) string {
	id, _ := jobs.IDFromUnit(u)
	return id
}

// TestSubmitImage: an image submitted by path becomes the job a drop of it
// would (the configured default pipeline, its format from its bytes, its
// name from the file), left where it is; a text file named .vmdk is
// refused at once, saying so, and so is a manifest given with an image.
func TestSubmitImage(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	ctx := context.Background()
	disk := filepath.Join(filepath.Dir(e.image), "web 07.vmdk") // raw bytes, a .vmdk name
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	js, err := e.a.Submit(ctx, nil, apitype.SubmitOptions{Image: disk}, 0)
	if err != nil || len(js) != 1 {
		t.Fatalf("Submit of an image = %+v, %v", js, err)
	}
	if js[0].Name != "web_07" {
		t.Errorf("job name %q, want web_07 (from the file name)", js[0].Name)
	}
	data, err := os.ReadFile(filepath.Join(e.cfg.ManifestWorkflowDir, queue.Processing, js[0].Manifest))
	if err != nil || !strings.Contains(string(data), `"source_type":"raw"`) || !strings.Contains(string(data), disk) {
		t.Errorf("the written manifest %s: %s %v; want source_type raw (from the bytes) and the image's own path", js[0].Manifest, data, err)
	}
	if _, err := os.Stat(disk); err != nil {
		t.Errorf("the submitted image moved: %v", err)
	}
	// The same image again, and again: jobs a user can tell apart.
	for _, want := range []string{"web_07-2", "web_07-3"} {
		js, err := e.a.Submit(ctx, nil, apitype.SubmitOptions{Image: disk}, 0)
		if err != nil || len(js) != 1 || js[0].Name != want {
			t.Errorf("Submit of the same image again = %+v, %v; want a job named %s", js, err, want)
		}
	}

	notes := filepath.Join(filepath.Dir(e.image), "notes.vmdk")
	os.WriteFile(notes, []byte("this is not a disk\n"), 0o644)
	_, err = e.a.Submit(ctx, nil, apitype.SubmitOptions{Image: notes}, 0)
	if d := strings.Join(ae2(err).Details, "\n"); !apierr.Is(err, apierr.InvalidManifest) || !strings.Contains(d, "pipeline.load.source_path: "+notes+" is a text file") {
		t.Errorf("Submit of a text file named .vmdk: %v %q", err, d)
	}
	if _, err := e.a.Submit(ctx, []byte(e.manifest("x", "")), apitype.SubmitOptions{Image: disk}, 0); !apierr.Is(err, apierr.InvalidArgs) {
		t.Errorf("Submit of a manifest and an image: %v", err)
	}
	if _, err := e.a.Submit(ctx, nil, apitype.SubmitOptions{Image: "rel/disk.vmdk"}, 0); !apierr.Is(err, apierr.InvalidArgs) {
		t.Errorf("Submit of a relative image path: %v", err)
	}
}

// TestJobReport: GetJobReport answers the engine's report from the
// settlement: the guest found and every change with before and after.
func TestJobReport(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	e.drop("web01.json", e.manifest("web01", ""))
	unit := e.nextStart()
	id := e.a.Jobs(apitype.Filter{})[0].ID
	if rep, err := e.a.JobReport(id); err != nil || rep != nil {
		t.Errorf("report of a running job = %s, %v; want none yet", rep, err)
	}
	rep := completed("web01")
	rep.JobID = id
	rep.Guest = &report.Guest{OS: &report.OS{Type: "linux", ID: "debian", VersionID: "12", Pretty: "Debian GNU/Linux 12 (bookworm)"}}
	rep.Changes = []report.Change{{Fix: "fstab", File: "/etc/fstab", Before: "/dev/sda1 / ext4 defaults 0 1\n", After: "UUID=1234 / ext4 defaults 0 1\n"}}
	e.units.finish(t, unit, "success", rep)
	e.waitSettled(queue.Processed, "web01.json")
	data, err := e.a.JobReport(id)
	var got report.Report
	if err != nil || json.Unmarshal(data, &got) != nil || got.Guest == nil || got.Guest.OS.Pretty != "Debian GNU/Linux 12 (bookworm)" ||
		len(got.Changes) != 1 || got.Changes[0].After != rep.Changes[0].After {
		t.Errorf("JobReport = %s, %v", data, err)
	}
	if _, err := e.a.JobReport("nope"); !apierr.Is(err, apierr.NoSuchJob) {
		t.Errorf("report of no job: %v", err)
	}
}

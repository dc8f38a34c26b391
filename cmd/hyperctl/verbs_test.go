package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/dbusapi"
)

var t0 = time.Date(2025, 1, 2, 3, 0, 0, 0, time.UTC)

func sampleJobs() []jobs.Job {
	return []jobs.Job{
		{ID: "a1", Name: "web01", State: jobs.Completed, Stage: "validate", Progress: 100, CreatedAt: t0, StartedAt: t0, FinishedAt: t0.Add(3 * time.Minute), Outputs: []string{"/var/lib/hyper2kvm/output/web01.qcow2"}},
		{ID: "b2", Name: "database-server-01", State: jobs.Running, Stage: "convert", Progress: 42, CreatedAt: t0, StatusText: "convert 42%"},
		{ID: "c3", Name: "mail", State: jobs.Failed, Stage: "fix", ErrorStage: "fix", Error: "cannot mount root", CreatedAt: t0},
		{ID: "d4", Name: "queued", State: jobs.Pending, Progress: jobs.ProgressUnknown, CreatedAt: t0},
	}
}

func jsonKeys(t *testing.T, s string) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("not a JSON object: %v\n%s", err, s)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func TestStatus(t *testing.T) {
	f := &fakeClient{status: apitype.Status{Mode: "manifest", Running: true, QueueDepth: 2, ActiveJobs: 1, MaxWorkers: 3, ProcessedToday: 5, FailedToday: 1, UptimeSeconds: 3725, Version: "1.2"}}
	r := runCLI(t, f, "status")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"running", "1.2", "1h02m05s", "2 waiting", "1 of 3 workers", "5 processed, 1 failed"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, r.stdout)
		}
	}
	r = runCLI(t, f, "status", "-o", "json")
	want := []string{"active_jobs", "cancelled_today", "failed_today", "max_workers", "mode", "path_unit_result", "path_unit_state", "processed_today", "queue_depth", "running", "uptime_seconds", "version"}
	if got := jsonKeys(t, r.stdout); !reflect.DeepEqual(got, want) {
		t.Errorf("status json keys %v, want %v", got, want)
	}
	if !f.closed {
		t.Errorf("connection not closed")
	}
}

func TestStatusDropFolder(t *testing.T) {
	for _, c := range []struct {
		state, result string
		want          string
	}{
		{"active", "success", "Drop folder:  watched (hyper2kvmd.path active)"},
		{"failed", "unit-start-limit-hit", "not watched: hyper2kvmd.path is failed (unit-start-limit-hit); run: systemctl reset-failed hyper2kvmd.path"},
		{"inactive", "success", "not watched: hyper2kvmd.path is inactive; run: systemctl enable --now hyper2kvmd.path"},
		{"", "", ""},
	} {
		f := &fakeClient{status: apitype.Status{Mode: "manifest", Running: true, PathUnitState: c.state, PathUnitResult: c.result}}
		r := runCLI(t, f, "status")
		if r.code != 0 {
			t.Fatalf("%s: exit %d: %s", c.state, r.code, r.stderr)
		}
		if c.want == "" {
			if strings.Contains(r.stdout, "Drop folder") {
				t.Errorf("no path unit state, but status says %q", r.stdout)
			}
			continue
		}
		if !strings.Contains(r.stdout, c.want) {
			t.Errorf("%s: status lacks %q:\n%s", c.state, c.want, r.stdout)
		}
	}
}

func TestJobs(t *testing.T) {
	f := &fakeClient{jobs: sampleJobs()}
	r := runCLI(t, f, "jobs")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("want header + 4 rows:\n%s", r.stdout)
	}
	// Aligned: every column starts at the same offset on every line.
	col := strings.Index(lines[0], "STATE")
	for _, l := range lines[1:] {
		if l[col-2:col] != "  " || l[col] == ' ' {
			t.Errorf("STATE column not aligned at %d:\n%s", col, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "\x1b[") {
		t.Errorf("colour without a terminal")
	}

	r = runCLI(t, f, "jobs", "--state", "failed,running", "-o", "json")
	if got := f.filters[len(f.filters)-1].States; !reflect.DeepEqual(got, []jobs.State{jobs.Failed, jobs.Running}) {
		t.Errorf("filter sent %v", got)
	}
	var list jobList
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || list.Total != 2 || len(list.Jobs) != 2 {
		t.Fatalf("json %v: %s", err, r.stdout)
	}
	if got := jsonKeys(t, r.stdout); !reflect.DeepEqual(got, []string{"jobs", "total"}) {
		t.Errorf("keys %v", got)
	}
	// A job's JSON uses the jobs.Job field names.
	var raw struct {
		Jobs []map[string]any `json:"jobs"`
	}
	_ = json.Unmarshal([]byte(r.stdout), &raw)
	for _, k := range []string{"id", "name", "status", "state", "stage", "progress", "created_at", "error", "error_stage"} {
		if _, ok := raw.Jobs[1][k]; !ok {
			t.Errorf("failed job's JSON lacks %q: %v", k, raw.Jobs[1])
		}
	}

	r = runCLI(t, &fakeClient{}, "jobs", "-o", "json")
	if strings.TrimSpace(r.stdout) != "{\n  \"jobs\": [],\n  \"total\": 0\n}" {
		t.Errorf("empty list: %q", r.stdout)
	}
	// -state, the legacy spelling.
	if r := runCLI(t, f, "jobs", "-state", "pending"); r.code != 0 || !strings.Contains(r.stdout, "queued") || strings.Contains(r.stdout, "web01") {
		t.Errorf("-state pending: %d %s", r.code, r.stdout)
	}
}

func TestShow(t *testing.T) {
	f := &fakeClient{jobs: sampleJobs()}
	r := runCLI(t, f, "show", "c3")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"c3", "mail", "failed", "in fix: cannot mount root"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("show lacks %q:\n%s", want, r.stdout)
		}
	}
	r = runCLI(t, f, "show", "a1", "--output", "json")
	var j jobs.Job
	if err := json.Unmarshal([]byte(r.stdout), &j); err != nil || !reflect.DeepEqual(j, sampleJobs()[0]) {
		t.Errorf("json round trip: %v %+v", err, j)
	}
	r = runCLI(t, f, "show", "zz")
	if r.code != 1 || !strings.Contains(r.stderr, "zz") {
		t.Errorf("unknown job: exit %d %q", r.code, r.stderr)
	}
}

func TestExitCodesFromTheAgent(t *testing.T) {
	dir := t.TempDir()
	m := writeFile(t, dir, "web01.yaml", goodYAML)
	denied := apierr.New(apierr.AccessDenied, "cannot submit: not authorized")
	tests := []struct {
		name string
		err  error
		args []string
		code int
		want []string
	}{
		{"no bus", errNoBusForTest, []string{"status"}, 3, []string{"system D-Bus"}},
		{"no bus on submit", errNoBusForTest, []string{"submit", m}, 3, []string{"system D-Bus"}},
		{"agent not installed", dbus.Error{Name: "org.freedesktop.DBus.Error.ServiceUnknown", Body: []any{"The name io.hyper2kvm.Agent1 was not provided"}},
			[]string{"jobs"}, 3, []string{"io.hyper2kvm.Agent1", "hyper2kvmd.service"}},
		{"activation failed, wrapped", fmt.Errorf("call: %w", &dbus.Error{Name: "org.freedesktop.DBus.Error.Spawn.ChildExited"}),
			[]string{"show", "x"}, 3, []string{"cannot reach the hyper2kvm agent"}},
		{"agent cannot start (client's error)", fmt.Errorf("get status: %w: activation failed", dbusapi.ErrNoAgent),
			[]string{"status"}, 3, []string{"io.hyper2kvm.Agent1", "activation failed"}},
		{"denied submit", denied, []string{"submit", m}, 4, []string{"not authorized", "io.hyper2kvm.agent.submit"}},
		{"denied manifest submit -file", denied, []string{"manifest", "submit", "-file", m}, 4, []string{"io.hyper2kvm.agent.submit"}},
		{"denied cancel", apierr.New(apierr.AccessDenied, "cannot cancel"), []string{"cancel", "b2"}, 4, []string{"io.hyper2kvm.agent.cancel"}},
		{"denied message keeps the agent's action", apierr.New(apierr.AccessDenied, "io.hyper2kvm.agent.cancel-any is required"),
			[]string{"cancel", "b2"}, 4, []string{"io.hyper2kvm.agent.cancel-any is required"}},
		{"denied retry", apierr.New(apierr.AccessDenied, "cannot retry"), []string{"retry", "c3"}, 4, []string{"io.hyper2kvm.agent.manage"}},
		{"invalid manifest from agent", &apierr.Error{Kind: apierr.InvalidManifest, Message: "cannot accept manifest", Details: []string{"pipeline.load.source_path: does not exist"}},
			[]string{"submit", m}, 1, []string{"cannot accept manifest", "pipeline.load.source_path: does not exist"}},
		{"wrong state", apierr.New(apierr.InvalidState, "cannot cancel a completed job"), []string{"cancel", "a1"}, 1, []string{"completed"}},
		{"no such job", apierr.New(apierr.NoSuchJob, "cannot find job q"), []string{"retry", "q"}, 1, []string{"cannot find job q"}},
		{"internal", errors.New("boom"), []string{"status"}, 1, []string{"boom"}},
		{"config invalid", apierr.New(apierr.ConfigInvalid, `the agent's configuration is invalid: /etc/hyper2kvm/agent.yaml: line 1: unknown key "max_concurent_jobs" (did you mean "max_concurrent_jobs"?)`),
			[]string{"status"}, 3, []string{"/etc/hyper2kvm/agent.yaml: line 1", `did you mean "max_concurrent_jobs"`}},
		{"config invalid on submit", apierr.New(apierr.ConfigInvalid, "the agent's configuration is invalid: x"), []string{"submit", m}, 3, []string{"configuration is invalid"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r result
			if errors.Is(tt.err, errNoBusForTest) {
				r = runCLI(t, nil, tt.args...)
			} else {
				r = runCLI(t, &fakeClient{err: tt.err}, tt.args...)
			}
			if r.code != tt.code {
				t.Errorf("exit %d, want %d (stderr %q)", r.code, tt.code, r.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q lacks %q", r.stderr, w)
				}
			}
		})
	}
}

func TestSubmit(t *testing.T) {
	dir := t.TempDir()
	m := writeFile(t, dir, "web01.yaml", goodYAML)
	f := &fakeClient{}
	r := runCLI(t, f, "submit", m)
	if r.code != 0 || !strings.Contains(r.stdout, "Submitted web01 as job j1") {
		t.Fatalf("exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	if len(f.submitted) != 1 || string(f.submitted[0]) != goodYAML {
		t.Errorf("agent got %q", f.submitted)
	}
	if f.interactive[0] {
		t.Errorf("asked polkit to be interactive without a terminal")
	}

	f = &fakeClient{}
	r = runCLI(t, f, "manifest", "submit", "-file="+m, "-o", "json")
	if got := jsonKeys(t, r.stdout); r.code != 0 || !reflect.DeepEqual(got, []string{"jobs"}) {
		t.Errorf("exit %d keys %v", r.code, got)
	}

	// Invalid locally: refused without bothering the agent.
	bad := writeFile(t, dir, "bad.yaml", "version: \"1.0\"\nname: x\npipeline: {load: {source_type: floppy, source_path: /a}}\n")
	f = &fakeClient{}
	r = runCLI(t, f, "submit", bad)
	if r.code != 1 || !strings.Contains(r.stdout, "pipeline.load.source_type") || len(f.submitted) != 0 {
		t.Errorf("invalid: exit %d, submitted %d: %s", r.code, len(f.submitted), r.stdout)
	}
	junk := writeFile(t, dir, "junk.json", "{{{")
	if r := runCLI(t, f, "submit", junk); r.code != 2 {
		t.Errorf("junk: exit %d", r.code)
	}
}

func TestInteractiveAuthOnlyAtATerminal(t *testing.T) {
	m := writeFile(t, t.TempDir(), "web01.yaml", goodYAML)
	for _, tt := range []struct {
		args []string
		want bool
	}{{[]string{"submit", m}, true}, {[]string{"submit", "--no-ask-password", m}, false}} {
		f := &fakeClient{}
		e, _, _ := testEnv(nil, f)
		e.terminal = func(x any) bool { return x == e.stdin }
		runWith(t, e, tt.args...)
		if len(f.interactive) != 1 || f.interactive[0] != tt.want {
			t.Errorf("%v: interactive %v, want %v", tt.args, f.interactive, tt.want)
		}
	}
}

// progression is a job going through its stages to the given end state.
func progression(id string, end jobs.State) []apitype.Event {
	at := t0
	var evs []apitype.Event
	add := func(j jobs.Job, changed ...string) {
		at = at.Add(10 * time.Second)
		j.ID, j.Name = id, "web01"
		evs = append(evs, apitype.Event{Kind: apitype.JobChanged, Job: j, Changed: changed, At: at})
	}
	add(jobs.Job{State: jobs.Running, Stage: "load", Progress: jobs.ProgressUnknown}, "State", "Stage")
	add(jobs.Job{State: jobs.Running, Stage: "inspect", Progress: jobs.ProgressUnknown}, "Stage")
	add(jobs.Job{State: jobs.Running, Stage: "convert", Progress: 0, BytesTotal: 100 << 20}, "Stage", "Progress")
	add(jobs.Job{State: jobs.Running, Stage: "convert", Progress: 50, BytesDone: 50 << 20, BytesTotal: 100 << 20}, "Progress")
	add(jobs.Job{State: jobs.Running, Stage: "validate", Progress: jobs.ProgressUnknown}, "Stage")
	switch end {
	case jobs.Completed:
		add(jobs.Job{State: jobs.Completed, Stage: "validate", Progress: 100, Outputs: []string{"/out/web01.qcow2"}}, "State")
	default:
		add(jobs.Job{State: end, Stage: "validate", ErrorStage: "validate", Error: "boot test timed out"}, "State")
	}
	return evs
}

func fakeWithEvents(initial jobs.Job, evs []apitype.Event) *fakeClient {
	f := &fakeClient{jobs: []jobs.Job{initial}, events: make(chan apitype.Event, len(evs)+1)}
	// An event of another job is not shown.
	f.events <- apitype.Event{Kind: apitype.JobChanged, Job: jobs.Job{ID: "other", Name: "other", State: jobs.Running, Stage: "fix"}}
	for _, ev := range evs {
		f.events <- ev
	}
	return f
}

func TestWatchIDExitsWithTheResult(t *testing.T) {
	for _, tt := range []struct {
		end  jobs.State
		code int
		want string
	}{{jobs.Completed, 0, "completed"}, {jobs.Failed, 1, "failed in validate: boot test timed out"}, {jobs.Cancelled, 1, "cancelled"}} {
		t.Run(string(tt.end), func(t *testing.T) {
			f := fakeWithEvents(jobs.Job{ID: "j1", Name: "web01", State: jobs.Pending, Progress: -1}, progression("j1", tt.end))
			r := runCLI(t, f, "watch", "j1")
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d\n%s%s", r.code, tt.code, r.stdout, r.stderr)
			}
			// One line per change, in order: the job moves through its stages.
			var idx []int
			for _, w := range []string{"pending", "running: load", "running: inspect", "running: convert 0%", "running: convert 50%", "running: validate", tt.want} {
				i := strings.Index(r.stdout, w)
				if i < 0 {
					t.Fatalf("output lacks %q:\n%s", w, r.stdout)
				}
				idx = append(idx, i)
			}
			if !sort.IntsAreSorted(idx) {
				t.Errorf("stages out of order:\n%s", r.stdout)
			}
			if strings.Contains(r.stdout, "other") {
				t.Errorf("showed a job it was not asked about:\n%s", r.stdout)
			}
		})
	}
	// Already finished: exits at once with its result.
	f := &fakeClient{jobs: sampleJobs()}
	if r := runCLI(t, f, "watch", "c3"); r.code != 1 || !strings.Contains(r.stdout, "cannot mount root") {
		t.Errorf("finished failed job: exit %d %s", r.code, r.stdout)
	}
	if r := runCLI(t, f, "watch", "a1"); r.code != 0 {
		t.Errorf("finished completed job: exit %d", r.code)
	}
}

func TestSubmitWait(t *testing.T) {
	m := writeFile(t, t.TempDir(), "web01.yaml", goodYAML)
	f := fakeWithEvents(jobs.Job{}, progression("j1", jobs.Completed))
	f.jobs = nil
	r := runCLI(t, f, "submit", "--wait", m)
	if r.code != 0 || !strings.Contains(r.stdout, "completed") || !strings.Contains(r.stdout, "/out/web01.qcow2") {
		t.Fatalf("exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	f = fakeWithEvents(jobs.Job{}, progression("j1", jobs.Failed))
	f.jobs = nil
	r = runCLI(t, f, "submit", "--wait", "-o", "json", m)
	var res submitResult
	if err := json.Unmarshal([]byte(r.stdout), &res); r.code != 1 || err != nil || len(res.Jobs) != 1 || res.Jobs[0].State != jobs.Failed {
		t.Fatalf("exit %d %v:\n%s%s", r.code, err, r.stdout, r.stderr)
	}
}

func TestWatchJSONStream(t *testing.T) {
	f := fakeWithEvents(jobs.Job{ID: "j1", Name: "web01", State: jobs.Pending}, progression("j1", jobs.Completed))
	r := runCLI(t, f, "watch", "-o", "json", "j1")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	n := 0
	for {
		var ev eventJSON
		if err := dec.Decode(&ev); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("event %d: %v\n%s", n, err, r.stdout)
		}
		if ev.Event != "changed" || ev.Job.ID != "j1" || ev.At.IsZero() {
			t.Errorf("event %d: %+v", n, ev)
		}
		n++
	}
	if n != 6 {
		t.Errorf("%d events, want 6", n)
	}
}

func TestWatchTerminalBars(t *testing.T) {
	f := fakeWithEvents(jobs.Job{ID: "j1", Name: "web01", State: jobs.Pending}, progression("j1", jobs.Completed))
	e, _, _ := testEnv(nil, f)
	e.terminal = func(any) bool { return true }
	r := runWith(t, e, "watch", "j1")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	// The bar at 50% of the convert stage: 50 MiB in 10 s is 5 MiB/s, 50 MiB to go is 10 s.
	for _, want := range []string{"█", " 50%", "convert", "5.0 MiB/s", "ETA 10s", "\x1b[1A\x1b[J", "✔ web01 (j1) completed"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, r.stdout)
		}
	}
	if !strings.Contains(r.stdout, "\x1b[32m") {
		t.Errorf("no colour on a terminal")
	}
}

func TestNoColor(t *testing.T) {
	f := &fakeClient{jobs: sampleJobs()}
	e, _, _ := testEnv(nil, f)
	e.terminal = func(any) bool { return true }
	if r := runWith(t, e, "jobs"); !strings.Contains(r.stdout, "\x1b[3") {
		t.Fatalf("no colour on a terminal:\n%q", r.stdout)
	}
	for _, env := range []map[string]string{{"NO_COLOR": "1"}, {"TERM": "dumb"}} {
		e, _, _ := testEnv(nil, f)
		e.terminal = func(any) bool { return true }
		e.getenv = func(k string) string { return env[k] }
		if r := runWith(t, e, "jobs"); strings.Contains(r.stdout, "\x1b[") {
			t.Errorf("%v: colour written:\n%q", env, r.stdout)
		}
	}
}

func TestRateAndETA(t *testing.T) {
	tr := &tracked{}
	tr.job = jobs.Job{State: jobs.Running, Stage: "convert", Progress: 10, BytesDone: 10 << 20, BytesTotal: 110 << 20}
	tr.sample(t0)
	tr.job = jobs.Job{State: jobs.Running, Stage: "convert", Progress: 55, BytesDone: 60 << 20, BytesTotal: 110 << 20}
	tr.sample(t0.Add(20 * time.Second))
	if !tr.hasETA || !tr.rateBytes || tr.rate != float64(50<<20)/20 || tr.eta != 20*time.Second {
		t.Errorf("bytes: rate %v eta %v", tr.rate, tr.eta)
	}
	// Percent only: 20% in 10 s leaves 60% for 30 s.
	tr = &tracked{}
	tr.job = jobs.Job{State: jobs.Running, Stage: "fix", Progress: 20}
	tr.sample(t0)
	tr.job.Progress = 40
	tr.sample(t0.Add(10 * time.Second))
	if !tr.hasETA || tr.rateBytes || tr.eta != 30*time.Second {
		t.Errorf("percent: rate %v eta %v", tr.rate, tr.eta)
	}
	// A new stage starts over.
	tr.job.Stage, tr.job.Progress = "convert", 0
	tr.sample(t0.Add(11 * time.Second))
	if tr.hasETA {
		t.Errorf("ETA carried into a new stage")
	}
}

func TestWatchInterrupted(t *testing.T) {
	f := &fakeClient{jobs: sampleJobs(), events: make(chan apitype.Event)}
	e, _, _ := testEnv(nil, f)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	code := run(ctx, []string{"watch", "b2"}, e)
	if code != exitInterrupted || !strings.Contains(e.stderr.(*bytes.Buffer).String(), "hyperctl cancel b2") {
		t.Errorf("exit %d: %s", code, e.stderr)
	}
	// Without ids, ^C is the normal end.
	e, _, _ = testEnv(nil, f)
	if code := run(ctx, []string{"watch"}, e); code != 0 {
		t.Errorf("watch all: exit %d", code)
	}
}

func TestWatchLostAgent(t *testing.T) {
	f := &fakeClient{jobs: sampleJobs(), events: make(chan apitype.Event)}
	close(f.events)
	if r := runCLI(t, f, "watch", "b2"); r.code != 3 {
		t.Errorf("exit %d: %s", r.code, r.stderr)
	}
}

func TestCancelRetry(t *testing.T) {
	f := &fakeClient{jobs: sampleJobs()}
	if r := runCLI(t, f, "cancel", "b2"); r.code != 0 || !reflect.DeepEqual(f.cancelled, []string{"b2"}) {
		t.Errorf("cancel: exit %d %v", r.code, f.cancelled)
	}
	r := runCLI(t, f, "retry", "c3", "-o", "json")
	var j jobs.Job
	if err := json.Unmarshal([]byte(r.stdout), &j); r.code != 0 || err != nil || j.ID != "c3-r" {
		t.Errorf("retry: exit %d %v %s", r.code, err, r.stdout)
	}
}

func TestLogs(t *testing.T) {
	f := &fakeClient{jobs: sampleJobs()}
	r := runCLI(t, f, "logs", "c3")
	if r.code != 0 || r.stdout != "c3 line 1\nc3 line 2\n" {
		t.Errorf("logs: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, f, "logs", "-n", "1", "c3"); r.code != 0 || r.stdout != "c3 line 2\n" {
		t.Errorf("logs -n 1: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	// c3 has ended: -f prints what is new after the cursor, then stops.
	f.logReads = nil
	r = runCLI(t, f, "logs", "-f", "c3")
	if r.code != 0 || r.stdout != "c3 line 1\nc3 line 2\nc3 line 3\n" || !reflect.DeepEqual(f.logReads, []string{"", "c2"}) {
		t.Errorf("logs -f: exit %d %q reads %q %s", r.code, r.stdout, f.logReads, r.stderr)
	}
	if r := runCLI(t, f, "logs", "-n", "-1", "c3"); r.code != 2 {
		t.Errorf("logs -n -1: exit %d, want 2", r.code)
	}
	f.err = apierr.New(apierr.AccessDenied, "cannot read the log of job c3: not authorized (polkit action io.hyper2kvm.agent.read)")
	if r := runCLI(t, f, "logs", "c3"); r.code != 4 || !strings.Contains(r.stderr, "io.hyper2kvm.agent.read") {
		t.Errorf("refused logs: exit %d %s", r.code, r.stderr)
	}
}

func TestWorkflowOps(t *testing.T) {
	f := &fakeClient{jobs: sampleJobs(), status: apitype.Status{Running: true, Mode: "manifest"}}
	for _, args := range [][]string{{"workflow", "-op", "status"}, {"workflow", "--op", "status"}, {"workflow", "-op=status"}, {"workflow", "status"}} {
		if r := runCLI(t, f, args...); r.code != 0 || !strings.Contains(r.stdout, "running") {
			t.Errorf("%v: exit %d %s", args, r.code, r.stdout)
		}
	}
	r := runCLI(t, f, "workflow", "-op", "list", "-output", "json")
	var list jobList
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || list.Total != 4 {
		t.Errorf("list: %v %s", err, r.stdout)
	}
	r = runCLI(t, f, "workflow", "-op", "queue")
	if r.code != 0 || !strings.Contains(r.stdout, "queued") || strings.Contains(r.stdout, "web01") {
		t.Errorf("queue: %s", r.stdout)
	}
	f.events = make(chan apitype.Event)
	close(f.events)
	if r := runCLI(t, f, "workflow", "-op", "watch"); r.code != 3 || !strings.Contains(r.stdout, "database-server-01") {
		t.Errorf("watch: exit %d %s", r.code, r.stdout)
	}
}

func TestManPages(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "man1")
	if r := runCLI(t, nil, "man", dir); r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, p := range []string{"hyperctl.1", "hyperctl-submit.1", "hyperctl-manifest-create.1", "hyperctl-watch.1"} {
		data, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil || !bytes.Contains(data, []byte(".TH")) {
			t.Errorf("%s: %v", p, err)
		}
	}
}

// TestSubmitPriorityAndAt: --priority and --at reach the agent in the
// manifest (priority, schedule.not_before); a bad --at or priority is a
// usage error that bothers no agent.
func TestSubmitPriorityAndAt(t *testing.T) {
	m := writeFile(t, t.TempDir(), "web01.yaml", goodYAML)
	f := &fakeClient{}
	r := runCLI(t, f, "submit", "--priority", "7", "--at", "2026-12-24T02:00:00Z", m)
	if r.code != 0 || len(f.submitted) != 1 {
		t.Fatalf("exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	var got struct {
		Name     string `json:"name"`
		Priority *int   `json:"priority"`
		Schedule struct {
			NotBefore string `json:"not_before"`
		} `json:"schedule"`
	}
	if err := json.Unmarshal(f.submitted[0], &got); err != nil {
		t.Fatalf("agent got %s: %v", f.submitted[0], err)
	}
	if got.Name != "web01" || got.Priority == nil || *got.Priority != 7 || got.Schedule.NotBefore != "2026-12-24T02:00:00Z" {
		t.Errorf("agent got %s", f.submitted[0])
	}
	for _, args := range [][]string{{"--at", "christmas"}, {"--priority", "500"}} {
		f := &fakeClient{}
		if r := runCLI(t, f, append(append([]string{"submit"}, args...), m)...); r.code != 2 || len(f.submitted) != 0 {
			t.Errorf("%v: exit %d, submitted %d: %s", args, r.code, len(f.submitted), r.stderr)
		}
	}
}

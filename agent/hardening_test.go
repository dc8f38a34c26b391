package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/config"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: checks files as another uid")
	}
}

// An administrator retrying a user's job runs it as that user, not as
// themselves: the user's checks apply again, at Retry and in the worker.
func TestRetryKeepsTheSubmitter(t *testing.T) {
	needRoot(t)
	e := newEnv(t, nil)
	e.start()
	js, err := e.a.Submit(context.Background(), []byte(e.manifest("web01", "")), apitype.SubmitOptions{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	e.units.finish(t, e.nextStart(), "exit-code", failedReport("load", "backing file refused"))
	e.waitSettled(queue.Failed, "web01.json")

	// The source is no longer the user's to read: root's retry is refused
	// for the user.
	os.Chmod(e.image, 0o600)
	_, err = e.a.Retry(context.Background(), js[0].ID, 0)
	if !apierr.Is(err, apierr.InvalidManifest) || !strings.Contains(strings.Join(ae2(err).Details, "\n"), "cannot read") {
		t.Fatalf("root's Retry of uid 1000's job with a source uid 1000 cannot read: %v; want InvalidManifest saying so", err)
	}

	os.Chmod(e.image, 0o644)
	j, err := e.a.Retry(context.Background(), js[0].ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if j.SubmittedBy != 1000 {
		t.Errorf("retried job SubmittedBy = %d, want 1000", j.SubmittedBy)
	}
	unit := e.nextStart()
	r := e.a.st.Jobs[j.ID]
	if r == nil {
		t.Fatal("retried job not in the store")
	}
	data, err := os.ReadFile(filepath.Join(r.JobDir, JobFile))
	if err != nil {
		t.Fatal(err)
	}
	var spec JobSpec
	json.Unmarshal(data, &spec)
	if spec.SourceUID != 1000 {
		t.Errorf("job.json source_uid = %d, want 1000 (the worker must read as the submitter)", spec.SourceUID)
	}
	e.units.finish(t, unit, "success", completed("web01"))
	e.waitSettled(queue.Processed, "web01.retry.json")
}

// A dropped file is its owner's: the job says so (and so its owner may
// cancel it).
func TestDroppedJobIsItsOwners(t *testing.T) {
	needRoot(t)
	e := newEnv(t, nil)
	e.start()
	tmp := filepath.Join(e.cfg.ManifestWorkflowDir, queue.ToBeProcessed, ".bob.json.tmp")
	os.WriteFile(tmp, []byte(e.manifest("bob1", "")), 0o644)
	os.Chown(tmp, 1000, 1000)
	os.Rename(tmp, filepath.Join(e.cfg.ManifestWorkflowDir, queue.ToBeProcessed, "bob.json"))
	e.nextStart()
	id := e.jobID("bob1")
	j, _ := e.a.Job(id)
	if j.SubmittedBy != 1000 {
		t.Errorf("dropped job SubmittedBy = %d, want the file's owner 1000", j.SubmittedBy)
	}
}

func TestUserCaps(t *testing.T) {
	caps := config.Default().Limits.UserMax
	tests := []struct {
		name, res string
		uid       int64
		want      string // "" accepted
	}{
		{"infinite memory", `"memory_max":"infinity"`, 1000, "resources.memory_max: \"infinity\" is more than"},
		{"memory over", `"memory_max":"9G"`, 1000, "limits.user_max.memory_max: 8G"},
		{"memory within", `"memory_max":"8G"`, 1000, ""},
		{"all of RAM", `"memory_max":"100%"`, 1000, "resources.memory_max"},
		{"tasks over", `"tasks_max":100000`, 1000, "resources.tasks_max: 100000 is more than a user other than root may ask for (limits.user_max.tasks_max: 1024"},
		{"cpu over", `"cpu_quota":"800%"`, 1000, "resources.cpu_quota"},
		{"runtime over", `"runtime_max_sec":604800`, 1000, "resources.runtime_max_sec"},
		{"root uncapped", `"memory_max":"infinity","tasks_max":100000`, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, problems := parseForSubmit([]byte(`{"version":"1.0","name":"x","resources":{` + tt.res + `},"pipeline":{"load":{"source_type":"raw","source_path":"/srv/x.raw"}}}`))
			if len(problems) > 0 {
				t.Fatal(problems)
			}
			got := strings.Join(checkCaps(m, tt.uid, caps, 64<<30), "\n")
			if tt.want == "" && got != "" || tt.want != "" && !strings.Contains(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	// A batch names the VM.
	m, _ := parseForSubmit([]byte(`{"version":"1.0","batch":true,"name":"b","vms":[{"name":"a","pipeline":{"load":{"source_type":"raw","source_path":"/srv/a.raw"}}},` +
		`{"name":"c","resources":{"tasks_max":5000},"pipeline":{"load":{"source_type":"raw","source_path":"/srv/c.raw"}}}]}`))
	if got := strings.Join(checkCaps(m, 1000, caps, 64<<30), "\n"); !strings.Contains(got, "vms[1].resources.tasks_max") {
		t.Errorf("batch: %q", got)
	}
}

// Submit refuses a capped value for a user and accepts it from root.
func TestSubmitOverUserCap(t *testing.T) {
	needRoot(t)
	e := newEnv(t, nil)
	e.start()
	m := []byte(e.manifest("big", `"resources":{"memory_max":"infinity"},`))
	_, err := e.a.Submit(context.Background(), m, apitype.SubmitOptions{}, 1000)
	if !apierr.Is(err, apierr.InvalidManifest) || !strings.Contains(strings.Join(ae2(err).Details, "\n"), "limits.user_max.memory_max") {
		t.Errorf("uid 1000 Submit with memory_max infinity: %v", err)
	}
	if _, err := e.a.Submit(context.Background(), m, apitype.SubmitOptions{}, 0); err != nil {
		t.Errorf("root's Submit: %v", err)
	}
}

// A job that does not complete leaves nothing in its manifest's own
// output_dir: not its partial disk, not its disks or NAME.xml, not the
// engine's NAME.report.json. What was there before it, what it does not
// write, and a .part another conversion holds stay.
func TestFailedJobCleansItsOutputDir(t *testing.T) {
	e := newEnv(t, nil)
	out := filepath.Join(t.TempDir(), "out")
	os.MkdirAll(out, 0o755)
	put := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(out, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put("web01.boot-console.log", "someone else's") // there before the job: kept
	put("other.xml", "<domain/>")                   // another VM's
	put("notes.txt", "unrelated")
	e.start()
	e.drop("web01.json", strings.Replace(e.manifest("web01", ""), `"fix":{"enabled":false}`, `"fix":{"enabled":false},"convert":{"output_dir":"`+out+`"}`, 1))
	unit := e.nextStart()
	id := e.jobID("web01")
	put("web01.qcow2.part", "half")
	put("web01-disk2.qcow2", "whole second disk")
	put("web01.xml", "<domain/>")
	put("web01.report.json", `{"job_id":"`+id+`","status":"failed"}`)
	put("web01-disk3.qcow2.part", "held")
	held, err := os.Open(filepath.Join(out, "web01-disk3.qcow2.part"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := unixFlock(held); err != nil {
		t.Fatal(err)
	}
	e.units.finish(t, unit, "signal", nil)
	s := e.waitSettled(queue.Failed, "web01.json")
	if s.Jobs[0].Status != "failed" {
		t.Fatalf("settlement %+v", s)
	}
	left, _ := os.ReadDir(out)
	var names []string
	for _, d := range left {
		names = append(names, d.Name())
	}
	if got, want := strings.Join(names, " "), "notes.txt other.xml web01-disk3.qcow2.part web01.boot-console.log"; got != want {
		t.Errorf("left in output_dir: %s; want %s", got, want)
	}
}

func TestOutputNames(t *testing.T) {
	o := outputsOf([]byte(`{"version":"1.0","name":"web01","pipeline":{"load":{"source_type":"ova","source_path":"/srv/a.ova"},"convert":{"output_dir":"/srv/out/","output_path":"w.qcow2","disks":[{"id":"d9","output_path":"logs.qcow2"}]}}}`))
	if o.dir != "/srv/out" {
		t.Errorf("dir %q", o.dir)
	}
	for name, want := range map[string]bool{"w.qcow2": true, "w-disk2.qcow2": true, "w-disk12.qcow2": true, "logs.qcow2": true,
		"web01.xml": true, "web01.report.json": true, "web01.boot-console.log": true,
		"domain.xml": false, "report.json": false, "other.report.json": false,
		"w-disk1.qcow2": false, "w-disk02.qcow2": false, "w-diskx.qcow2": false, "w.raw": false, "other.qcow2": false} {
		if o.matches(name) != want {
			t.Errorf("matches(%q) = %v, want %v", name, !want, want)
		}
	}
	if o := outputsOf([]byte(`{"version":"1.0","name":"web01","pipeline":{"load":{"source_type":"raw","source_path":"/srv/a.raw"}}}`)); o.dir != "" {
		t.Errorf("a job in the agent's own output directory: dir %q", o.dir)
	}
}

func unixFlock(f *os.File) error { return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) }

// A settle the state filesystem refused is tried again while the agent
// runs, not only at its next start.
func TestSettleRetriedWithoutRestart(t *testing.T) {
	e := newEnv(t, nil)
	day := filepath.Join(e.cfg.ManifestWorkflowDir, queue.Failed, time.Now().Format(queue.DateLayout))
	os.MkdirAll(filepath.Dir(day), 0o755)
	// failed/<today> cannot be made: the settle fails as on a full disk.
	if err := os.WriteFile(day, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e.start()
	e.drop("bad.json", `{"version":"1.0","name":"bad"}`)
	e.waitFor("the claim", func() bool { return exists(filepath.Join(e.cfg.ManifestWorkflowDir, queue.Processing, "bad.json")) })
	e.waitFor("a failed settle", func() bool {
		e.a.mu.Lock()
		defer e.a.mu.Unlock()
		return e.a.settleLater
	})
	os.Remove(day)
	e.waitSettled(queue.Failed, "bad.json")
	if exists(filepath.Join(e.cfg.ManifestWorkflowDir, queue.Processing, "bad.json")) {
		t.Error("still in processing/")
	}
}

func TestStateFSError(t *testing.T) {
	a := &Agent{cfg: config.Default()}
	err := a.stateFSError(fmt.Errorf("cannot write report of x.json: %w", &fs.PathError{Op: "write", Path: "/var/lib/hyper2kvm/x", Err: syscall.ENOSPC}))
	if err == nil || !strings.Contains(err.Error(), "no space left on the state filesystem (/var/lib/hyper2kvm)") || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("ENOSPC: %v", err)
	}
	other := errors.New("permission denied")
	if got := a.stateFSError(other); got != other {
		t.Errorf("other error rewritten: %v", got)
	}
}

// CleanOutputs (the job unit's ExecStopPost) works from the job directory
// alone, and leaves a completed job's outputs.
func TestCleanOutputsFromJobDir(t *testing.T) {
	root := t.TempDir()
	out, jobDir := filepath.Join(root, "out"), filepath.Join(root, "job")
	os.MkdirAll(out, 0o755)
	vm := []byte(`{"version":"1.0","name":"web01","pipeline":{"load":{"source_type":"raw","source_path":"/srv/a.raw"},"convert":{"output_dir":"` + out + `"}}}`)
	os.WriteFile(filepath.Join(out, "web01.qcow2"), []byte("before"), 0o644)
	spec := JobSpec{ID: "j1", StartedAt: time.Now(), KeptOutputs: keptOutputs(vm)}
	if err := writeJobDir(jobDir, spec, vm); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"web01-disk2.qcow2", "web01-disk3.qcow2.part", "web01.xml"} {
		os.WriteFile(filepath.Join(out, n), []byte("new"), 0o644)
	}
	write := func(status string) {
		data, _ := json.Marshal(map[string]any{"job_id": "j1", "status": status})
		os.WriteFile(filepath.Join(jobDir, ReportFile), data, 0o644)
	}
	list := func() string {
		ents, _ := os.ReadDir(out)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return strings.Join(names, " ")
	}
	write("completed")
	if removed, err := CleanOutputs(jobDir); err != nil || len(removed) != 0 {
		t.Errorf("completed job: removed %v, %v", removed, err)
	}
	// Another job wrote into the directory meanwhile: only what the report
	// names is removed (here nothing).
	write("failed")
	os.WriteFile(filepath.Join(jobDir, SharedFile), nil, 0o600)
	if removed, _ := CleanOutputs(jobDir); len(removed) != 0 {
		t.Errorf("shared directory: removed %v", removed)
	}
	os.Remove(filepath.Join(jobDir, SharedFile))
	if removed, err := CleanOutputs(jobDir); err != nil || len(removed) != 3 {
		t.Errorf("failed job: removed %v, %v", removed, err)
	}
	if got := list(); got != "web01.qcow2" {
		t.Errorf("left %q; want the file that was there before", got)
	}
}

package test

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/test/box"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// workflowYAML is the agent's configuration for the workflow tests: real
// workers (no gate), quick jobs.
const workflowYAML = `max_concurrent_jobs: 2
idle_timeout: 5m
verbose: true
stable_time: 200ms
`

// staleTemplate is an admin's template written for an older manifest: a
// misspelt field the agent must name at start.
const staleTemplate = `description: an admin's template with a field that no longer exists
parameters:
  - {name: load.source_path, description: the source, required: true, example: /srv/x.vmdk}
manifest:
  version: "1.0"
  pipeline:
    load: {source_type: vmdk}
    convert: {output_fromat: qcow2}
`

// workflowBox is an installed box with root's hyperctl, a blank 32 MiB raw
// image and a VMDK made from it in /srv/wf, and the agent configured.
func workflowBox(t *testing.T, files map[string]string) *box.Box {
	return workflowBoxWith(t, files, box.Options{})
}

func workflowBoxWith(t *testing.T, files map[string]string, o box.Options) *box.Box {
	t.Helper()
	o.Install, o.Users = true, append(o.Users, "alice")
	b := box.Start(t, o)
	b.WriteFile(t, "/etc/hyper2kvm/agent.yaml", []byte(workflowYAML), 0o644)
	for p, c := range files {
		b.WriteFile(t, p, []byte(c), 0o644)
	}
	b.MustExec(t, "mkdir", "-p", "/srv/wf")
	b.MustExec(t, "qemu-img", "create", "-q", "-f", "raw", "/srv/wf/disk.raw", "32M")
	b.MustExec(t, "qemu-img", "convert", "-O", "vmdk", "/srv/wf/disk.raw", "/srv/wf/disk.vmdk")
	b.MustExec(t, "chmod", "0644", "/srv/wf/disk.raw", "/srv/wf/disk.vmdk")
	return b
}

// TestWorkflowTemplates submits from a shipped template in a real box and
// checks that a stale admin template is named, with its field, by the
// agent at start and by hyperctl template list.
func TestWorkflowTemplates(t *testing.T) {
	t.Parallel()
	b := workflowBox(t, map[string]string{"/etc/hyper2kvm/templates/stale.yaml": staleTemplate})
	ctx := hyperctlCtx(t, 10*time.Minute)

	out, errOut, code := hyperctlRun(ctx, t, b, "alice", "template", "list")
	if code != 1 || !strings.Contains(out, "quick-no-fix") || !strings.Contains(out, "linux-default") ||
		!strings.Contains(errOut, "template stale (/etc/hyper2kvm/templates/stale.yaml) does not validate: pipeline.convert.output_fromat") {
		t.Fatalf("template list: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	out, errOut, code = hyperctlRun(ctx, t, b, "", "submit", "--wait", "-o", "json", "--template", "quick-no-fix",
		"--set", "load.source_path=/srv/wf/disk.vmdk", "--set", "load.source_type=vmdk", "--set", "name=fromtmpl")
	if code != 0 {
		t.Fatalf("submit --template: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	var res struct {
		Jobs []struct {
			ID, Name, State string
		} `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Jobs) != 1 || res.Jobs[0].Name != "fromtmpl" || res.Jobs[0].State != "completed" {
		t.Fatalf("submit --template: %v\n%s", err, out)
	}
	// The template turned INSPECT and FIX off: the report says so.
	rep := b.MustExec(t, "sh", "-c", "cat /var/lib/hyper2kvm/output/*/"+res.Jobs[0].ID+"/fromtmpl.report.json")
	if !strings.Contains(rep, `"name": "inspect"`) || !strings.Contains(rep, `"status": "skipped"`) {
		t.Errorf("report of the template's job:\n%s", rep)
	}
	// hyperctl report counts it, from the agent's records (bytes and
	// stage times, which job properties on the bus do not carry).
	out, errOut, code = hyperctlRun(ctx, t, b, "alice", "report", "-o", "json")
	var sum struct {
		Jobs      int   `json:"jobs"`
		Completed int   `json:"completed"`
		Bytes     int64 `json:"bytes_converted"`
		Stages    []struct {
			Stage string `json:"stage"`
			Count int    `json:"count"`
		} `json:"stages"`
		Hosts []struct{ Host string } `json:"hosts"`
	}
	if err := json.Unmarshal([]byte(out), &sum); code != 0 || err != nil || sum.Jobs != 1 || sum.Completed != 1 || sum.Bytes <= 0 || len(sum.Stages) == 0 || len(sum.Hosts) != 1 {
		t.Errorf("report: exit %d, %v\n%s%s", code, err, out, errOut)
	}
	if out, _, code := hyperctlRun(ctx, t, b, "", "-o", "csv", "report", "--since", "1d"); code != 0 || !strings.HasPrefix(out, "day,completed,failed") || strings.Count(out, "\n") != 2 {
		t.Errorf("report -o csv: exit %d\n%s", code, out)
	}
	// The agent named the stale template when it started.
	j := b.Journal(context.Background(), "-u", "hyper2kvmd.service")
	if !strings.Contains(j, "template stale") || !strings.Contains(j, "pipeline.convert.output_fromat") {
		t.Errorf("the agent's journal does not name the stale template's field:\n%s", j)
	}
}

// submitJSON submits a manifest file in the box as root with --wait and
// returns the job's id and state.
func submitJSON(ctx context.Context, t *testing.T, b *box.Box, file string) (id, state string) {
	t.Helper()
	out, errOut, _ := hyperctlRun(ctx, t, b, "", "submit", "--wait", "-o", "json", file)
	var res struct {
		Jobs []struct{ ID, State string } `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Jobs) != 1 {
		t.Fatalf("submit %s: %v\nstdout: %s\nstderr: %s", file, err, out, errOut)
	}
	return res.Jobs[0].ID, res.Jobs[0].State
}

// jobReport reads the report of a finished job as the agent settled it.
func jobReport(ctx context.Context, t *testing.T, b *box.Box, id string) map[string]any {
	t.Helper()
	out, errOut, code := hyperctlRun(ctx, t, b, "", "show", "-o", "json", id)
	if code != 0 {
		t.Fatalf("show %s: %s %s", id, out, errOut)
	}
	rep := b.MustExec(t, "sh", "-c", "cat /var/lib/hyper2kvm/jobs/"+id+"/report.json")
	var m map[string]any
	if err := json.Unmarshal([]byte(rep), &m); err != nil {
		t.Fatalf("report of %s: %v\n%s", id, err, rep)
	}
	return m
}

const helloHook = `#!/bin/sh
echo "hello from $HYPER2KVM_POINT job $1"
ls "$HYPER2KVM_OUTPUT_DIR"
touch /var/lib/hyper2kvm/hook-was-here 2>/dev/null && echo "hook wrote the host" || echo "host read-only for the hook"
`

// receiver is an HTTP receiver run in the box: it appends each request's
// path, X-Job header and body to /srv/wf/received, and answers 500 for
// paths under /down.
const receiver = `import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open("/srv/wf/received", "a") as f:
            f.write(self.path + " " + str(self.headers.get("X-Job")) + " " + body.decode() + "\n")
        self.send_response(500 if self.path.startswith("/down") else 200)
        self.end_headers()
        self.wfile.write(b"noted")
http.server.HTTPServer(("127.0.0.1", 8765), H).serve_forever()
`

const failHook = `#!/bin/sh
echo "refusing this one"
exit 3
`

// TestWorkflowPreflightAndHooks runs hyperctl preflight on a good, a cut
// and a too-large source, a job whose output filesystem is too small
// (failed before writing a disk, with the reason and the fix), a job with
// a script hook (its output in the job's journal and report, sandboxed)
// and a job whose pre_fix hook fails (the job fails in FIX, no output).
func TestWorkflowPreflightAndHooks(t *testing.T) {
	t.Parallel()
	b := workflowBoxWith(t, nil, box.Options{Groups: map[string][]string{"hyper2kvm": {"bob"}}})
	ctx := hyperctlCtx(t, 15*time.Minute)
	b.WriteFile(t, "/etc/hyper2kvm/hooks/hello.sh", []byte(helloHook), 0o755)
	b.WriteFile(t, "/etc/hyper2kvm/hooks/fail.sh", []byte(failHook), 0o755)
	// A VHD cut short (its footer missing), and a 16 MiB output filesystem
	// too small for 32 MiB of written data.
	b.MustExec(t, "sh", "-c", "qemu-img create -q -f vpc /srv/wf/cut.vhd 64M && truncate -s -512 /srv/wf/cut.vhd && touch -d '1 hour ago' /srv/wf/cut.vhd && chmod 0644 /srv/wf/cut.vhd")
	b.MustExec(t, "sh", "-c", "head -c 32M /dev/urandom >/srv/wf/full.raw && touch -d '1 hour ago' /srv/wf/full.raw /srv/wf/disk.vmdk && chmod 0644 /srv/wf/full.raw")
	b.MustExec(t, "sh", "-c", "mkdir -p /srv/small && mount -t tmpfs -o size=16M tmpfs /srv/small")
	manifests := map[string]string{
		"ok":     manifestFor("ok", "/srv/wf/disk.vmdk", "vmdk", ""),
		"cut":    manifestFor("cut", "/srv/wf/cut.vhd", "vhd", ""),
		"full":   strings.Replace(manifestFor("full", "/srv/wf/full.raw", "raw", ""), `"convert":{`, `"convert":{"output_dir":"/srv/small/out",`, 1),
		"hooked": strings.Replace(manifestFor("hooked", "/srv/wf/disk.vmdk", "vmdk", ""), `"validate":{"enabled":false}}`, `"validate":{"enabled":false},"hooks":{"post_convert":[{"type":"script","path":"/etc/hyper2kvm/hooks/hello.sh","args":["{{ job_id }}"],"timeout":60}]}}`, 1),
		"bobs":   strings.Replace(manifestFor("bobs", "/srv/wf/disk.vmdk", "vmdk", ""), `"validate":{"enabled":false}}`, `"validate":{"enabled":false},"hooks":{"post_validate":[{"type":"script","path":"/srv/wf/bob.sh"}]}}`, 1),
		"webhooked": strings.Replace(manifestFor("webhooked", "/srv/wf/disk.vmdk", "vmdk", ""), `"validate":{"enabled":false}}`, `"validate":{"enabled":false},"hooks":{"post_convert":[`+
			`{"type":"http","url":"http://127.0.0.1:8765/hook/{{ vm_name }}","headers":["X-Job: {{ job_id }}"]},`+
			`{"type":"http","url":"http://127.0.0.1:8765/down","continue_on_error":true}]}}`, 1),
		"failing": strings.Replace(manifestFor("failing", "/srv/wf/disk.vmdk", "vmdk", ""), `"validate":{"enabled":false}}`, `"validate":{"enabled":false},"hooks":{"pre_fix":[{"type":"script","path":"/etc/hyper2kvm/hooks/fail.sh"}]}}`, 1),
	}
	for name, m := range manifests {
		b.WriteFile(t, "/srv/wf/"+name+".json", []byte(m), 0o644)
	}

	t.Run("preflight", func(t *testing.T) {
		tests := []struct {
			file string
			code int
			want []string
		}{
			{"ok", 0, []string{"source-complete", "ok: nothing blocks"}},
			{"cut", 1, []string{"source-complete", "blocker", "vhd footer", "wait until the copy"}},
			{"full", 1, []string{"output-space", "blocker", "/srv/small", "pipeline.convert.output_dir"}},
		}
		for _, tc := range tests {
			out, errOut, code := hyperctlRun(ctx, t, b, "alice", "preflight", "/srv/wf/"+tc.file+".json")
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("preflight %s lacks %q", tc.file, w)
				}
			}
			if code != tc.code || t.Failed() {
				t.Fatalf("preflight %s: exit %d, want %d\nstdout: %s\nstderr: %s", tc.file, code, tc.code, out, errOut)
			}
		}
		if out, _, _ := b.Exec(ctx, "systemctl", "is-active", "hyper2kvmd.service"); strings.TrimSpace(out) == "active" {
			t.Errorf("preflight started the agent")
		}
	})

	t.Run("a job without room fails before writing", func(t *testing.T) {
		id, state := submitJSON(ctx, t, b, "/srv/wf/full.json")
		rep := jobReport(ctx, t, b, id)
		e, _ := rep["error"].(map[string]any)
		if state != "failed" || e == nil || e["stage"] != "load" || !strings.Contains(e["message"].(string), "pre-flight check failed: output-space") ||
			!strings.Contains(e["message"].(string), "fix:") {
			t.Fatalf("job %s: %s, error %v", id, state, e)
		}
		if out := b.MustExec(t, "sh", "-c", "find /srv/small -type f -name '*.qcow2' | wc -l"); strings.TrimSpace(out) != "0" {
			t.Errorf("a blocked job wrote a disk: %s", b.MustExec(t, "find", "/srv/small"))
		}
		var names []string
		pf, _ := rep["preflight"].([]any)
		for _, c := range pf {
			names = append(names, c.(map[string]any)["name"].(string))
		}
		if strings.Join(names, " ") != "source-readable source-complete output-space" {
			t.Errorf("report's preflight: %v", rep["preflight"])
		}
	})

	t.Run("a script hook's output in the journal and the report", func(t *testing.T) {
		id, state := submitJSON(ctx, t, b, "/srv/wf/hooked.json")
		rep := jobReport(ctx, t, b, id)
		hooks, _ := rep["hooks"].([]any)
		if state != "completed" || len(hooks) != 1 {
			t.Fatalf("job %s: %s, hooks %v, error %v", id, state, rep["hooks"], rep["error"])
		}
		h := hooks[0].(map[string]any)
		out, _ := h["output"].(string)
		for _, w := range []string{"hello from post_convert job " + id, "hooked.qcow2", "host read-only for the hook"} {
			if !strings.Contains(out, w) {
				t.Errorf("hook output lacks %q: %q", w, out)
			}
		}
		if h["status"] != "ok" || h["point"] != "post_convert" {
			t.Errorf("hook run %v", h)
		}
		j := b.Journal(ctx, "HYPER2KVM_JOB_ID="+id)
		if !strings.Contains(j, "hello from post_convert job "+id) {
			t.Errorf("the job's journal lacks the hook's output:\n%s", j)
		}
		// It ran in a transient unit of its own.
		if u := b.Journal(ctx, "UNIT=hyper2kvm-hook-"+id+"-post-convert-0.service"); !strings.Contains(u, "hook post_convert") {
			t.Errorf("no unit hyper2kvm-hook-%s-post-convert-0.service in the journal:\n%s", id, u)
		}
		if fileExists(b.Path("/var/lib/hyper2kvm/hook-was-here")) {
			t.Error("the hook wrote into the host")
		}
	})

	t.Run("http hooks reach a receiver; a failing one may continue", func(t *testing.T) {
		b.WriteFile(t, "/srv/wf/receiver.py", []byte(receiver), 0o644)
		b.MustExec(t, "systemd-run", "--unit=receiver", "python3", "/srv/wf/receiver.py")
		if err := b.WaitFor(ctx, "the receiver to listen", func() (bool, error) {
			_, _, err := b.Exec(ctx, "sh", "-c", "ss -ltn | grep -q 127.0.0.1:8765")
			return err == nil, nil
		}); err != nil {
			t.Fatal(err)
		}
		id, state := submitJSON(ctx, t, b, "/srv/wf/webhooked.json")
		rep := jobReport(ctx, t, b, id)
		hooks, _ := rep["hooks"].([]any)
		if state != "completed" || len(hooks) != 2 {
			t.Fatalf("job %s: %s, hooks %v, error %v", id, state, rep["hooks"], rep["error"])
		}
		h0, h1 := hooks[0].(map[string]any), hooks[1].(map[string]any)
		if h0["status"] != "ok" || !strings.Contains(h0["output"].(string), "HTTP 200") || h1["status"] != "failed" || !strings.Contains(h1["error"].(string), "exit status") {
			t.Errorf("hook runs %v", hooks)
		}
		got := b.MustExec(t, "cat", "/srv/wf/received")
		if !strings.Contains(got, "/hook/webhooked "+id+` {"job_id":"`+id+`"`) || !strings.Contains(got, `"point":"post_convert"`) {
			t.Errorf("the receiver got:\n%s", got)
		}
		if ws, _ := rep["warnings"].([]any); len(ws) == 0 || !strings.Contains(ws[len(ws)-1].(string), "continue_on_error") {
			t.Errorf("warnings %v", rep["warnings"])
		}
	})

	t.Run("only an admin's job runs a script outside the hook directory", func(t *testing.T) {
		b.WriteFile(t, "/srv/wf/bob.sh", []byte("#!/bin/sh\necho bob was here\n"), 0o755)
		out, errOut, _ := hyperctlRun(ctx, t, b, "bob", "submit", "--wait", "-o", "json", "/srv/wf/bobs.json")
		var res struct {
			Jobs []struct{ ID, State, Error, ErrorStage string } `json:"jobs"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Jobs) != 1 {
			t.Fatalf("bob's submit: %v\n%s%s", err, out, errOut)
		}
		j := res.Jobs[0]
		rep := jobReport(ctx, t, b, j.ID)
		e, _ := rep["error"].(map[string]any)
		if j.State != "failed" || e == nil || e["stage"] != "load" || !strings.Contains(e["message"].(string), "pipeline.hooks.post_validate[0].path: /srv/wf/bob.sh is outside /etc/hyper2kvm/hooks/") {
			t.Fatalf("bob's job %s: %s, error %v", j.ID, j.State, e)
		}
		if stages, _ := rep["stages"].([]any); len(stages) != 0 {
			t.Errorf("bob's job ran stages: %v", stages)
		}
	})

	t.Run("a failing hook fails the job at its stage", func(t *testing.T) {
		id, state := submitJSON(ctx, t, b, "/srv/wf/failing.json")
		rep := jobReport(ctx, t, b, id)
		e, _ := rep["error"].(map[string]any)
		if state != "failed" || e == nil || e["stage"] != "fix" || !strings.Contains(e["message"].(string), "hook pre_fix[0]") ||
			!strings.Contains(e["message"].(string), "exit status 3") {
			t.Fatalf("job %s: %s, error %v", id, state, e)
		}
		if hooks, _ := rep["hooks"].([]any); len(hooks) != 1 || !strings.Contains(hooks[0].(map[string]any)["output"].(string), "refusing this one") {
			t.Errorf("hooks in the report: %v", rep["hooks"])
		}
		if out := b.MustExec(t, "sh", "-c", "ls /var/lib/hyper2kvm/output/*/"+id+"/ 2>/dev/null | grep -c qcow2 || true"); strings.TrimSpace(out) != "0" {
			t.Errorf("the failed job left a disk")
		}
	})
}

// gcYAML keeps dropped images only until their job completed, and makes
// dropped images quick to convert.
const gcYAML = workflowYAML + `stable_time_raw: 1s
retain:
  processed: 30d
  dropped_images: delete-on-success
default_pipeline:
  inspect: {enabled: false}
  fix: {enabled: false}
  convert: {output_format: qcow2}
  validate: {enabled: false}
`

// TestWorkflowGC: hyperctl gc --dry-run lists settled files older than
// retain.processed and a completed dropped image, never an output, and
// removes nothing; alice may not ask; hyperctl gc removes exactly those,
// each removal in the agent's journal.
func TestWorkflowGC(t *testing.T) {
	t.Parallel()
	b := workflowBox(t, nil)
	ctx := hyperctlCtx(t, 10*time.Minute)
	b.WriteFile(t, "/etc/hyper2kvm/agent.yaml", []byte(gcYAML), 0o644)
	old := []string{
		queueDir + "/processed/2020-01-01/old.json", queueDir + "/processed/2020-01-01/old.json.report.json",
		queueDir + "/failed/2020-01-01/bad.json", queueDir + "/failed/2020-01-01/bad.json.error.json",
	}
	for _, p := range old {
		b.WriteFile(t, p, []byte(`{"status":"completed"}`), 0o640)
	}
	oldOutput := "/var/lib/hyper2kvm/output/2020-01-01/oldjob/old.qcow2"
	b.WriteFile(t, oldOutput, []byte("a converted disk"), 0o640)

	// A dropped image, converted.
	b.MustExec(t, "systemctl", "start", "hyper2kvmd.path")
	b.MustExec(t, "cp", "/srv/wf/disk.raw", queueDir+"/to_be_processed/.drop01.raw")
	b.MustExec(t, "mv", queueDir+"/to_be_processed/.drop01.raw", queueDir+"/to_be_processed/drop01.raw")
	day := strings.TrimSpace(b.MustExec(t, "date", "+%Y-%m-%d"))
	dropped := queueDir + "/processed/" + day + "/drop01.raw"
	if err := b.WaitFor(ctx, "the dropped image to settle in processed/", func() (bool, error) {
		return fileExists(b.Path(dropped + ".report.json")), nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, b.Journal(ctx, "-u", "hyper2kvmd.service"))
	}

	out, errOut, code := hyperctlRun(ctx, t, b, "", "-o", "json", "gc", "--dry-run")
	var res struct {
		DryRun bool `json:"dry_run"`
		Items  []struct {
			Path, Kind string
			Deleted    bool
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &res); code != 0 || err != nil || !res.DryRun {
		t.Fatalf("gc --dry-run: exit %d, %v\n%s%s", code, err, out, errOut)
	}
	listed := map[string]string{}
	for _, it := range res.Items {
		listed[it.Path] = it.Kind
		if it.Deleted {
			t.Errorf("a dry run deleted %s", it.Path)
		}
	}
	want := map[string]string{dropped: "dropped-image", queueDir + "/processed/2020-01-01": "empty-day", queueDir + "/failed/2020-01-01": "empty-day"}
	for _, p := range old {
		want[p] = "settled-file"
	}
	for p, k := range want {
		if listed[p] != k {
			t.Errorf("gc --dry-run lists %s as %q, want %q", p, listed[p], k)
		}
	}
	if len(listed) != len(want) {
		t.Errorf("gc --dry-run lists %d items, want %d: %v", len(listed), len(want), listed)
	}
	for _, p := range append(old, dropped, oldOutput) {
		if !fileExists(b.Path(p)) {
			t.Errorf("gc --dry-run removed %s", p)
		}
	}
	text, _, _ := hyperctlRun(ctx, t, b, "", "gc", "--dry-run")
	if !strings.Contains(text, "Would remove 7 item(s)") {
		t.Errorf("gc --dry-run text:\n%s", text)
	}
	if _, errOut, code := hyperctlRun(ctx, t, b, "alice", "gc", "--dry-run"); code != 4 || !strings.Contains(errOut, "io.hyper2kvm.agent.manage") {
		t.Errorf("alice's gc --dry-run: exit %d, %s; want 4 naming io.hyper2kvm.agent.manage", code, errOut)
	}

	if out, errOut, code := hyperctlRun(ctx, t, b, "", "gc"); code != 0 || !strings.Contains(out, "Removed 7 item(s)") {
		t.Fatalf("gc: exit %d\n%s%s", code, out, errOut)
	}
	for _, p := range append(old, dropped) {
		if fileExists(b.Path(p)) {
			t.Errorf("gc left %s", p)
		}
	}
	if !fileExists(b.Path(oldOutput)) || !fileExists(b.Path(dropped+".report.json")) {
		t.Error("gc removed an output or the dropped image's report")
	}
	j := b.Journal(ctx, "-u", "hyper2kvmd.service", "HYPER2KVM_GC=settled-file")
	if !strings.Contains(j, "housekeeping: removed "+old[0]) {
		t.Errorf("the journal lacks the removal of %s:\n%s", old[0], j)
	}
	if j := b.Journal(ctx, "HYPER2KVM_GC=dropped-image"); !strings.Contains(j, "housekeeping: removed "+dropped) {
		t.Errorf("the journal lacks the removal of the dropped image:\n%s", j)
	}
}

// TestWorkflowGuestFull: a Linux guest whose root is full (as its
// superblock recorded it) fails after INSPECT with the guest-space
// pre-flight blocker, its reason and its fix, before FIX wrote anything;
// the same guest with the initramfs rebuild off converts.
func TestWorkflowGuestFull(t *testing.T) {
	needRoot(t)
	t.Parallel()
	b := workflowBoxWith(t, nil, box.Options{Devices: true})
	ctx := hyperctlCtx(t, 10*time.Minute)
	raw := fixture.LinuxDisk(t, t.TempDir(), fixture.Options{Name: "full", SizeMB: 24,
		Files: map[string]string{"var/fill": strings.Repeat("x", 17<<20)}})
	data, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	b.WriteFile(t, "/srv/wf/full.raw", data, 0o644)
	base := `{"version":"1.0","name":"NAME","pipeline":{"load":{"source_type":"raw","source_path":"/srv/wf/full.raw"},` +
		`"fix":{"fstab":{"enabled":false},"grub":{"enabled":false},"network":{"enabled":false},"initramfs":{"regenerate":REGEN}},"validate":{"enabled":false}}}`
	b.WriteFile(t, "/srv/wf/rebuild.json", []byte(strings.NewReplacer("NAME", "rebuild", "REGEN", "true").Replace(base)), 0o644)
	b.WriteFile(t, "/srv/wf/norebuild.json", []byte(strings.NewReplacer("NAME", "norebuild", "REGEN", "false").Replace(base)), 0o644)

	id, state := submitJSON(ctx, t, b, "/srv/wf/rebuild.json")
	rep := jobReport(ctx, t, b, id)
	e, _ := rep["error"].(map[string]any)
	if state != "failed" || e == nil || e["stage"] != "inspect" || !strings.Contains(e["message"].(string), "guest-space") ||
		!strings.Contains(e["message"].(string), "fix: free space in the guest") {
		t.Fatalf("job %s: %s, error %v\npreflight %v", id, state, e, rep["preflight"])
	}
	for _, st := range rep["stages"].([]any) {
		if name := st.(map[string]any)["name"]; name == "fix" || name == "convert" {
			t.Errorf("stage %s ran after the blocker", name)
		}
	}
	id, state = submitJSON(ctx, t, b, "/srv/wf/norebuild.json")
	if state != "completed" {
		t.Fatalf("without the rebuild, job %s: %s %v", id, state, jobReport(ctx, t, b, id)["error"])
	}
}

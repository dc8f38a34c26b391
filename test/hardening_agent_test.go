package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/test/box"
)

// The agent's part of the hardening issue (docs/RELIABILITY.md): a retry
// runs as the job's submitter, a job that does not complete leaves nothing
// in a manifest's own output_dir, a batch whose VMs share one is refused,
// a full state filesystem settles as soon as space returns, a device node
// where FIX edits a file is left alone, users cancel their own dropped
// jobs and cannot ask for unbounded resources. Each test reproduces the
// attack or fault on an installed agent in a real box.
//
// Users: bob is in group hyper2kvm (submits and cancels his own jobs).

// hardStart boots the box with /var/lib/hyper2kvm on its own small tmpfs
// (so that tests can fill the state filesystem), the gate worker of
// relStart with the gate open, and bob.
func hardStart(t *testing.T, devices bool) *relBox {
	t.Helper()
	b := relStart(t, box.Options{Devices: devices, Groups: map[string][]string{"hyper2kvm": {"bob"}}}, true, "")
	// The agent has not run yet (its path unit waits for a file): mount
	// the state filesystem before it does, make its directories as the
	// package does, and let the path unit watch the new ones.
	b.MustExec(t, "systemctl", "stop", "hyper2kvmd.path")
	b.MustExec(t, "mount", "-t", "tmpfs", "-o", "size=160m,mode=0755", "hyper2kvm-state", "/var/lib/hyper2kvm")
	b.MustExec(t, "systemd-tmpfiles", "--create")
	b.MustExec(t, "mkdir", "-p", relQueue+"/to_be_processed", "/srv/rel/in", "/srv/relgate")
	b.MustExec(t, "chmod", "0755", "/srv/rel", "/srv/rel/in")
	b.MustExec(t, "touch", "/srv/relgate/open")
	b.MustExec(t, "systemctl", "start", "hyper2kvmd.path")
	return b
}

// hardManifest is relManifest with convert options (JSON members without
// braces) and members before "pipeline".
func hardManifest(name, src, srcType, top, convert string) string {
	if convert != "" {
		convert = "," + convert
	}
	return fmt.Sprintf(`{"version":"1.0","name":%q,%s"pipeline":{"load":{"source_type":%q,"source_path":%q},`+
		`"inspect":{"enabled":false},"fix":{"enabled":false},"convert":{"output_format":"qcow2"%s},"validate":{"enabled":false}}}`,
		name, top, srcType, src, convert)
}

// waitState waits until job id is in one of states and returns it.
func (b *relBox) waitState(ctx context.Context, id string, states ...string) string {
	b.t.Helper()
	var st string
	err := b.WaitFor(ctx, "job "+id+" "+strings.Join(states, "|"), func() (bool, error) {
		st = b.jobState(ctx, id)
		for _, s := range states {
			if st == s {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		b.t.Fatalf("%v (state %q)\n%s", err, st, b.Journal(ctx, "-u", "hyper2kvmd.service", "-n", "40"))
	}
	return st
}

// armCatch starts a loop in the box that waits until part has data and
// then stops qemu-img there (SIGSTOP): the job is held in the middle of
// CONVERT until qemu-img gets SIGCONT (systemd sends one with any stop
// signal). Arm it while the job waits at the gate, then open the gate and
// waitCaught: the loop runs before the conversion starts, whatever the
// speed of either.
func (b *relBox) armCatch(part string) {
	b.t.Helper()
	loop := `while [ ! -s "$1" ]; do sleep 0.01; done; pkill -STOP -x qemu-img; touch /srv/rel/caught`
	b.MustExec(b.t, "sh", "-c", `setsid sh -c '`+loop+`' sh "$1" </dev/null >/dev/null 2>&1 &`, "sh", part)
}

func (b *relBox) waitCaught(ctx context.Context, part string) {
	b.t.Helper()
	if err := b.WaitFor(ctx, "qemu-img caught writing "+part, func() (bool, error) {
		_, _, err := b.Exec(ctx, "test", "-e", "/srv/rel/caught")
		return err == nil, nil
	}); err != nil {
		b.t.Fatalf("%v (the directory holds: %s)", err, b.ls(filepath.Dir(part)))
	}
	b.MustExec(b.t, "rm", "-f", "/srv/rel/caught")
}

func (b *relBox) ls(dir string) string {
	out, _, _ := b.Exec(context.Background(), "ls", "-A", dir)
	return strings.Join(strings.Fields(out), " ")
}

// An administrator's Retry of bob's job, refused because its qcow2 names
// root's 0600 file as backing file, runs as bob again: refused again, the
// file never converted. Before, the retry ran with the administrator's
// rights and converted the canary.
func TestHardeningRetryRunsAsSubmitter(t *testing.T) {
	b := hardStart(t, false)
	ctx := relCtx(t, 6*time.Minute)
	b.MustExec(t, "sh", "-c", "printf 'CANARY-RETRY-SECRET' > /root/canary.raw && truncate -s 1M /root/canary.raw && chmod 0600 /root/canary.raw")
	b.MustExec(t, "install", "-d", "-o", "bob", "-m", "0755", "/srv/bob")
	// -u: bob names root's file without reading it.
	b.MustExec(t, "qemu-img", "create", "-q", "-u", "-f", "qcow2", "-F", "raw", "-b", "/root/canary.raw", "/srv/bob/vm.qcow2", "1M")
	b.MustExec(t, "chown", "bob", "/srv/bob/vm.qcow2")
	b.MustExec(t, "chmod", "0644", "/srv/bob/vm.qcow2")

	id, out, err := b.submit(ctx, "bob", hardManifest("bobvm", "/srv/bob/vm.qcow2", "qcow2", "", ""))
	if err != nil {
		t.Fatalf("bob's submit: %v: %s", err, out)
	}
	b.waitState(ctx, id, "failed", "completed")
	job := b.MustExec(t, "hyperctl", "-o", "json", "show", id)
	if !strings.Contains(job, "backing file") {
		t.Fatalf("bob's job did not fail for its backing file: %s", job)
	}

	out, err = b.hyperctl(ctx, "", "-o", "json", "retry", id)
	if err != nil {
		// Refused at Retry (checked as bob) also keeps the canary safe.
		t.Logf("root's retry refused: %s", out)
	} else {
		var j struct {
			ID          string `json:"id"`
			SubmittedBy int64  `json:"submitted_by"`
		}
		if jerr := json.Unmarshal([]byte(out), &j); jerr != nil || j.ID == "" {
			t.Fatalf("hyperctl retry answered %q", out)
		}
		bobUID := strings.TrimSpace(b.MustExec(t, "id", "-u", "bob"))
		if fmt.Sprint(j.SubmittedBy) != bobUID {
			t.Errorf("retried job submitted_by %d, want bob (%s)", j.SubmittedBy, bobUID)
		}
		if st := b.waitState(ctx, j.ID, "failed", "completed", "cancelled"); st != "failed" {
			t.Errorf("root's retry of bob's job %s; want failed again (the backing file is not bob's)", st)
		}
	}
	if found, _, _ := b.Exec(ctx, "grep", "-rl", "CANARY-RETRY-SECRET", "/var/lib/hyper2kvm/output", "/srv"); strings.TrimSpace(found) != "" {
		t.Errorf("root's 0600 file was converted into %s", found)
	}
}

// kill -9 of the agent and then of the worker in the middle of CONVERT into
// a manifest's own output_dir: after recovery no NAME.part is left there,
// and the next job into that directory, with the same names, completes.
func TestHardeningKilledWorkerLeavesNoPart(t *testing.T) {
	b := hardStart(t, false)
	ctx := relCtx(t, 8*time.Minute)
	b.MustExec(t, "sh", "-c", "head -c 128M /dev/urandom > /srv/src/big.raw && chmod 0644 /srv/src/big.raw")
	b.MustExec(t, "mkdir", "-p", "/srv/out")
	b.MustExec(t, "rm", "-f", "/srv/relgate/open")
	b.drop("", "f2b.json", hardManifest("f2b", "/srv/src/big.raw", "raw", "", `"output_dir":"/srv/out"`))
	id := b.waitJobOf(ctx, "f2b.json")
	b.waitState(ctx, id, "running")
	b.armCatch("/srv/out/f2b.qcow2.part")
	b.MustExec(t, "touch", "/srv/relgate/open")
	b.waitCaught(ctx, "/srv/out/f2b.qcow2.part")
	b.MustExec(t, "systemctl", "kill", "-s", "KILL", "hyper2kvmd.service")
	pid := b.show(relUnitOf(id), "MainPID")
	b.MustExec(t, "kill", "-9", pid)
	// The agent comes back (Restart=on-failure, the path unit) and
	// recovers the job whose unit ended while it was down.
	dir, rep := b.waitSettled(ctx, "f2b.json")
	if dir != "failed" {
		t.Errorf("killed job settled in %s/: %v", dir, rep["error"])
	}
	if left := b.ls("/srv/out"); left != "" {
		t.Errorf("left in output_dir after recovery: %s", left)
	}
	b.drop("", "f2b-again.json", hardManifest("f2b", "/srv/src/disk.raw", "raw", "", `"output_dir":"/srv/out"`))
	if dir, rep := b.waitSettled(ctx, "f2b-again.json"); dir != "processed" {
		t.Errorf("the next job into the same output_dir: %s/ %v", dir, rep["error"])
	}
	if left := b.ls("/srv/out"); left != "f2b.qcow2 f2b.report.json f2b.xml" {
		t.Errorf("output_dir holds %q; want f2b.qcow2 f2b.report.json f2b.xml", left)
	}
}

// A job that fails leaves neither the engine's NAME.report.json nor a
// partial disk in its output_dir (the failure report is in failed/), so
// the next job into that directory does not fail on "NAME.report.json
// exists". Two VMs of a batch share an output_dir, each file named after
// its VM; a batch whose two VMs would write the same file name there is
// refused before anything runs, naming both.
func TestHardeningFailedJobCleansOutputDir(t *testing.T) {
	b := hardStart(t, false)
	ctx := relCtx(t, 6*time.Minute)
	b.MustExec(t, "mkdir", "-p", "/srv/out2", "/srv/out3")
	// A checksum that does not match fails LOAD in the worker, after the
	// agent took the manifest (the engine then writes its NAME.report.json
	// into the output_dir).
	bad := strings.Replace(hardManifest("vm2", "/srv/src/disk.raw", "raw", "", `"output_dir":"/srv/out2"`),
		`"source_path":"/srv/src/disk.raw"`, `"source_path":"/srv/src/disk.raw","sha256":"`+strings.Repeat("0", 64)+`"`, 1)
	b.drop("", "bad.json", bad)
	dir, rep := b.waitSettled(ctx, "bad.json")
	if dir != "failed" {
		t.Fatalf("garbage source settled in %s/", dir)
	}
	if jobs, _ := rep["jobs"].([]any); len(jobs) != 1 || jobs[0].(map[string]any)["report"] == nil {
		t.Errorf("failed/bad.json.error.json holds no engine report: %v", rep)
	}
	if left := b.ls("/srv/out2"); left != "" {
		t.Errorf("a failed job left in its output_dir: %s", left)
	}
	b.drop("", "good.json", hardManifest("vm2", "/srv/src/disk.raw", "raw", "", `"output_dir":"/srv/out2"`))
	if dir, rep := b.waitSettled(ctx, "good.json"); dir != "processed" {
		t.Errorf("the next job into the same output_dir: %s/ %v", dir, rep["error"])
	}

	pair := func(a, b string) string {
		return `{"version":"1.0","batch":true,"name":"pair","vms":[` +
			`{"name":"alpha","pipeline":{"load":{"source_type":"raw","source_path":"/srv/src/disk.raw"},"fix":{"enabled":false},"convert":{"output_dir":"/srv/out3"` + a + `}}},` +
			`{"name":"beta","pipeline":{"load":{"source_type":"raw","source_path":"/srv/src/disk.raw"},"fix":{"enabled":false},"convert":{"output_dir":"/srv/out3"` + b + `}}}]}`
	}
	b.drop("", "clash.json", pair(`,"output_path":"same.qcow2"`, `,"output_path":"same.qcow2"`))
	dir, rep = b.waitSettled(ctx, "clash.json")
	msg := fmt.Sprint(rep["error"], " ", rep["validation_errors"])
	if dir != "failed" || !strings.Contains(msg, "alpha") || !strings.Contains(msg, "beta") || !strings.Contains(msg, "same.qcow2") {
		t.Errorf("batch of two VMs writing same.qcow2 into one output_dir settled in %s/ with %q; want refused naming alpha, beta and the file", dir, msg)
	}
	if left := b.ls("/srv/out3"); left != "" {
		t.Errorf("the refused batch wrote %s", left)
	}
	b.drop("", "pair.json", pair("", ""))
	if dir, rep := b.waitSettled(ctx, "pair.json"); dir != "processed" {
		t.Errorf("two VMs into one output_dir: settled in %s/ (%v); want both completed", dir, rep["error"])
	}
	if left := b.ls("/srv/out3"); left != "alpha.qcow2 alpha.report.json alpha.xml beta.qcow2 beta.report.json beta.xml" {
		t.Errorf("two VMs into one output_dir left %q", left)
	}
}

// The state filesystem fills up: a job whose worker ends while it is full
// settles (manifest into processed/, its report beside it) within seconds
// of space returning, with no restart, and the agent says why it waits.
// A worker that cannot write its report waits for space instead of
// failing a converted job.
func TestHardeningStateFilesystemFull(t *testing.T) {
	b := hardStart(t, false)
	ctx := relCtx(t, 8*time.Minute)
	b.MustExec(t, "mkdir", "-p", "/srv/out4", "/srv/out5")
	fill := func() {
		t.Helper()
		b.Exec(ctx, "dd", "if=/dev/zero", "of=/var/lib/hyper2kvm/filler", "bs=1M", "status=none")
		b.Exec(ctx, "sh", "-c", "head -c 1048576 /dev/zero >> /var/lib/hyper2kvm/filler")
		if out, _, _ := b.Exec(ctx, "sh", "-c", "echo x > /var/lib/hyper2kvm/probe && echo written"); strings.Contains(out, "written") {
			t.Fatal("the state filesystem is not full")
		}
	}
	free := func() { b.MustExec(t, "rm", "-f", "/var/lib/hyper2kvm/filler", "/var/lib/hyper2kvm/probe") }

	// 1. The agent settles while the state filesystem is full.
	b.MustExec(t, "rm", "-f", "/srv/relgate/open")
	b.drop("", "full.json", hardManifest("full", "/srv/src/disk.raw", "raw", "", `"output_dir":"/srv/out4"`))
	id := b.waitJobOf(ctx, "full.json")
	b.waitState(ctx, id, "running")
	agentPID := b.show("hyper2kvmd.service", "MainPID")
	b.MustExec(t, "kill", "-STOP", agentPID)
	b.MustExec(t, "touch", "/srv/relgate/open")
	if err := b.WaitFor(ctx, "the worker's end", func() (bool, error) {
		st := b.show(relUnitOf(id), "ActiveState")
		return st == "inactive" || st == "failed", nil
	}); err != nil {
		b.MustExec(t, "kill", "-CONT", agentPID)
		t.Fatal(err)
	}
	fill()
	b.MustExec(t, "kill", "-CONT", agentPID)
	jctx, jcancel := context.WithTimeout(ctx, 60*time.Second)
	defer jcancel()
	if err := b.WaitFor(jctx, "the agent to say the state filesystem is full", func() (bool, error) {
		return strings.Contains(b.Journal(ctx, "-u", "hyper2kvmd.service", "-o", "cat"), "no space left on the state filesystem (/var/lib/hyper2kvm)"), nil
	}); err != nil {
		t.Errorf("%v:\n%s", err, b.Journal(ctx, "-u", "hyper2kvmd.service", "-n", "20"))
	}
	if where, _ := b.settledIn("full.json"); where != "" {
		t.Fatalf("settled in %s/ on a full state filesystem", where)
	}
	free()
	freed := time.Now()
	// Within seconds: well before the agent's idle exit or any restart.
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	dir, rep := b.waitSettled(sctx, "full.json")
	t.Logf("settled %.1f s after space returned", time.Since(freed).Seconds())
	if dir != "processed" || rep["status"] != "completed" {
		t.Errorf("settled in %s/ as %v; want processed/, completed", dir, rep["status"])
	}
	if restarts := b.show("hyper2kvmd.service", "NRestarts"); restarts != "0" {
		t.Errorf("the agent restarted %s times", restarts)
	}

	// 2. The worker's report meets a full state filesystem: it waits.
	b.MustExec(t, "sh", "-c", "head -c 128M /dev/urandom > /srv/src/big.raw && chmod 0644 /srv/src/big.raw")
	b.MustExec(t, "rm", "-f", "/srv/relgate/open")
	b.drop("", "late.json", hardManifest("late", "/srv/src/big.raw", "raw", "", `"output_dir":"/srv/out5"`))
	id = b.waitJobOf(ctx, "late.json")
	b.waitState(ctx, id, "running")
	b.armCatch("/srv/out5/late.qcow2.part")
	b.MustExec(t, "touch", "/srv/relgate/open")
	b.waitCaught(ctx, "/srv/out5/late.qcow2.part")
	fill()
	b.MustExec(t, "pkill", "-CONT", "-x", "qemu-img")
	if err := b.WaitFor(ctx, "the worker waiting for space", func() (bool, error) {
		return strings.Contains(b.Journal(ctx, "-o", "cat", "HYPER2KVM_JOB_ID="+id), "no space left on the state filesystem (/var/lib/hyper2kvm)"), nil
	}); err != nil {
		t.Errorf("%v:\n%s", err, b.Journal(ctx, "-u", relUnitOf(id), "-n", "20"))
	}
	if st := b.jobState(ctx, id); st != "running" {
		t.Errorf("job %s while its report cannot be written; want running (waiting for space)", st)
	}
	free()
	freed = time.Now()
	dir, rep = b.waitSettled(ctx, "late.json")
	t.Logf("the waiting worker's job settled %.1f s after space returned", time.Since(freed).Seconds())
	if dir != "processed" || rep["status"] != "completed" {
		t.Errorf("late.json settled in %s/ as %v (%v); want processed/, completed", dir, rep["status"], rep["error"])
	}
	if left := b.ls("/srv/out5"); left != "late.qcow2 late.report.json late.xml" {
		t.Errorf("output_dir holds %q", left)
	}
}

// A device node at the guest's /etc/kernel/cmdline is left alone with a
// warning; the job completes. Before, FIX failed "permission denied".
func TestHardeningDeviceNodeInGuest(t *testing.T) {
	needRoot(t)
	b := hardStart(t, true)
	ctx := relCtx(t, 8*time.Minute)
	src := buildGuest(t, guestTree{
		files: map[string]string{
			"etc/os-release":     "ID=debian\nVERSION_ID=12\n",
			"etc/fstab":          "/dev/sda1 / ext4 defaults 0 1\n",
			"boot/grub/grub.cfg": "linux /vmlinuz root=/dev/sda1 ro\n",
		},
		chardevs: map[string][2]uint32{"etc/kernel/cmdline": {1, 3}},
	})
	if out, err := exec.Command("cp", "--sparse=always", src, b.Path("/srv/src/devnode.raw")).CombinedOutput(); err != nil {
		t.Fatalf("copy fixture into the box: %v %s", err, out)
	}
	b.MustExec(t, "chmod", "0644", "/srv/src/devnode.raw")
	m := fmt.Sprintf(`{"version":"1.0","name":"devnode","pipeline":{"load":{"source_type":"raw","source_path":"/srv/src/devnode.raw"},` +
		`"inspect":{"enabled":true},"fix":{"enabled":true,"backend":"native","initramfs":{"regenerate":false}},"convert":{"output_format":"qcow2"},"validate":{"enabled":false}}}`)
	b.drop("", "devnode.json", m)
	dir, rep := b.waitSettled(ctx, "devnode.json")
	if dir != "processed" {
		t.Fatalf("guest with a device node at /etc/kernel/cmdline: %s/ %v", dir, rep["error"])
	}
	data, _ := json.Marshal(rep)
	var s struct {
		Jobs []struct {
			Report struct {
				Changes []struct{ File, Note string } `json:"changes"`
			} `json:"report"`
		} `json:"jobs"`
	}
	json.Unmarshal(data, &s)
	warned := false
	for _, j := range s.Jobs {
		for _, c := range j.Report.Changes {
			warned = warned || c.File == "/etc/kernel/cmdline" && strings.Contains(c.Note, "warning") && strings.Contains(c.Note, "character device")
		}
	}
	if !warned {
		t.Errorf("no warning about /etc/kernel/cmdline in the report: %s", data)
	}
}

// bob may cancel the job of a manifest he dropped (the file is his) under
// io.hyper2kvm.agent.cancel, and may not ask for memory_max: infinity or
// tasks_max: 100000.
func TestHardeningUserCancelsOwnDropAndIsCapped(t *testing.T) {
	b := hardStart(t, false)
	ctx := relCtx(t, 6*time.Minute)
	b.MustExec(t, "rm", "-f", "/srv/relgate/open")
	b.drop("bob", "bobdrop.json", hardManifest("bobdrop", "/srv/src/disk.raw", "raw", "", ""))
	id := b.waitJobOf(ctx, "bobdrop.json")
	b.waitState(ctx, id, "running")
	if out, err := b.hyperctl(ctx, "bob", "cancel", id); err != nil {
		t.Errorf("bob cannot cancel the job of his own dropped file: %v: %s", err, out)
	}
	b.MustExec(t, "touch", "/srv/relgate/open")
	if st := b.waitState(ctx, id, "cancelled", "completed", "failed"); st != "cancelled" {
		t.Errorf("bob's dropped job ended %s; want cancelled", st)
	}

	for field, res := range map[string]string{
		"memory_max": `"resources":{"memory_max":"infinity"},`,
		"tasks_max":  `"resources":{"tasks_max":100000},`,
	} {
		_, out, err := b.submit(ctx, "bob", hardManifest("greedy", "/srv/src/disk.raw", "raw", res, ""))
		if err == nil || !strings.Contains(out, "resources."+field) || !strings.Contains(out, "limits.user_max."+field) {
			t.Errorf("bob's submit with %s: %v: %s; want refused naming resources.%s and limits.user_max.%s", res, err, out, field, field)
		}
	}
	// Root is not capped.
	if id, out, err := b.submit(ctx, "", hardManifest("rootbig", "/srv/src/disk.raw", "raw", `"resources":{"tasks_max":100000},`, "")); err != nil {
		t.Errorf("root's submit with tasks_max 100000: %v: %s", err, out)
	} else {
		b.waitState(ctx, id, "completed", "failed")
	}
}

package test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/test/box"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// The fault tests of docs/RELIABILITY.md, in real boxes: the agent and the
// worker killed at every stage of a job, the D-Bus daemon restarted, the
// output file system full, 200 manifests arriving while the agent is down,
// and the whole machine stopped mid-job. What every one of them checks:
// each manifest ends exactly once in processed/ or failed/ beside its
// report, no output is left half-written under its final name, and no job
// runs twice at once.

// relStages are the pipeline's stages in order, as STATUS= names them.
var relStages = []string{"load", "inspect", "fix", "convert", "validate"}

// relFreeze waits (inside the box, so that it is quick) until the job unit
// reports STAGE in its StatusText and then stops every process of the job
// with SIGSTOP, pinning it in that stage. It prints "frozen: <status>", or
// "missed: <status>" when the job went past STAGE (or ended) first.
const relFreeze = `#!/bin/bash
unit=$1 want=$2
order=" load inspect fix convert validate "
wi=${order%% $want *}; wi=${#wi}
seen=0
while :; do
	s= a=
	while IFS='=' read -r k v; do
		case $k in StatusText) s=$v;; ActiveState) a=$v;; esac
	done < <(systemctl show -p StatusText -p ActiveState "$unit")
	stage=${s%%[ :]*}
	case "$a" in active|activating|deactivating) seen=1;; esac
	if [ "$stage" = "$want" ]; then
		systemctl kill -s STOP "$unit" 2>/dev/null || { echo "missed: unit gone"; exit 1; }
		# The worker may have ended between the look and the signal (the
		# STOP then hit only ExecStopPost): frozen only when the unit is
		# still active in that stage with its worker.
		now= a= pid=
		while IFS='=' read -r k v; do
			case $k in StatusText) now=$v;; ActiveState) a=$v;; MainPID) pid=$v;; esac
		done < <(systemctl show -p StatusText -p ActiveState -p MainPID "$unit")
		if [ "$a" != active ] || [ "${pid:-0}" -le 1 ] || [ "${now%%[ :]*}" != "$want" ]; then
			systemctl kill -s CONT "$unit" 2>/dev/null
			echo "missed: $a pid=$pid $now"; exit 1
		fi
		echo "frozen: $now"
		exit 0
	fi
	if [ -n "$stage" ] && [ "${order#* $stage }" != "$order" ]; then
		si=${order%% $stage *}; si=${#si}
		if [ "$si" -gt "$wi" ]; then echo "missed: $s"; exit 1; fi
	fi
	if [ $seen = 1 ] && [ "$a" != active ] && [ "$a" != activating ] && [ "$a" != deactivating ]; then
		echo "missed: $a $s"; exit 1
	fi
done
`

// relFaultBox is a box with devices (the native FIX backend) and a small
// Linux guest fixture at /srv/src/guest.raw whose sha256 the manifests
// check in LOAD.
type relFaultBox struct {
	*relBox
	guestSum string
}

func startRelFaultBox(t *testing.T) *relFaultBox {
	t.Helper()
	b := relStart(t, box.Options{Devices: true, Files: map[string]string{"/srv/rel/freeze.sh": relFreeze}}, false, "")
	b.MustExec(t, "chmod", "0755", "/srv/rel/freeze.sh")
	// 48 MiB of random data in the guest: CONVERT and VALIDATE take long
	// enough to be caught in the act.
	blob := make([]byte, 48<<20)
	rand.Read(blob)
	disk := fixture.LinuxDisk(t, t.TempDir(), fixture.Options{Name: "guest", SizeMB: 192,
		Files: map[string]string{"var/lib/rel/blob": string(blob)}})
	if out, err := exec.Command("cp", "--sparse=always", disk, b.Path("/srv/src/guest.raw")).CombinedOutput(); err != nil {
		t.Fatalf("copy fixture into the box: %v %s", err, out)
	}
	b.MustExec(t, "chmod", "0644", "/srv/src/guest.raw")
	return &relFaultBox{relBox: b, guestSum: fixture.SHA256(t, disk)}
}

// fullManifest runs every stage on the guest fixture.
func (b *relFaultBox) fullManifest(name string) string {
	return fmt.Sprintf(`{"version":"1.0","name":%q,"pipeline":{"load":{"source_type":"raw","source_path":"/srv/src/guest.raw","sha256":%q},`+
		`"inspect":{"enabled":true},"fix":{"enabled":true},"convert":{"output_format":"qcow2"},"validate":{"enabled":true}}}`, name, b.guestSum)
}

// waitUnitFor waits for the job unit of the manifest NAME (from the agent's
// "claimed"/"started as" journal lines) and returns the job id.
func (b *relBox) waitJobOf(ctx context.Context, name string) string {
	b.t.Helper()
	var id string
	err := b.WaitFor(ctx, "the job of "+name, func() (bool, error) {
		out, _, _ := b.Exec(ctx, "journalctl", "--no-pager", "-o", "cat", "HYPER2KVM_MANIFEST="+name)
		for _, l := range strings.Split(out, "\n") {
			if _, err := fmt.Sscanf(l, "job %s queued", &id); err == nil {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		b.t.Fatalf("%v\n%s", err, b.Journal(ctx, "-u", "hyper2kvmd.service", "-n", "40"))
	}
	return id
}

// checkSettledOnce asserts the invariants for one manifest that has
// settled: exactly once, in one place, its job started in one unit at a
// time, and its outputs whole (completed) or gone (failed).
func (b *relBox) checkSettledOnce(ctx context.Context, t *testing.T, name, id, dir string, rep map[string]any) {
	t.Helper()
	day := b.day()
	other := map[string]string{"processed": "failed", "failed": "processed"}[dir]
	if out, _, _ := b.Exec(ctx, "find", relQueue+"/"+other, relQueue+"/processing", relQueue+"/to_be_processed", "-name", name+"*"); strings.TrimSpace(out) != "" {
		t.Errorf("%s is also elsewhere: %s", name, out)
	}
	stem := strings.TrimSuffix(name, filepath.Ext(name))
	if out, _, _ := b.Exec(ctx, "find", relQueue+"/"+dir+"/"+day, "-name", stem+"-[0-9]*"); strings.TrimSpace(out) != "" {
		t.Errorf("%s settled more than once: %s", name, out)
	}
	log := b.Journal(ctx, "-o", "cat", "HYPER2KVM_JOB_ID="+id)
	if n := strings.Count(log, "started as "); n > 1 {
		// Started again only after a reboot (attempt 2), never while a
		// unit of it still ran: the unit name is the job id, so systemd
		// itself refuses a second one; the agent must not start another job.
		t.Logf("job %s was started %d times:\n%s", id, n, log)
	}
	if ids := b.jobIDsOf(ctx, name); len(ids) != 1 {
		t.Errorf("%s gave %d jobs (%v), want 1", name, len(ids), ids)
	}
	out, _, _ := b.Exec(ctx, "find", "/var/lib/hyper2kvm/output", "-path", "*/"+id+"/*")
	files := strings.Fields(out)
	for _, f := range files {
		if strings.HasSuffix(f, ".part") {
			t.Errorf("half-written output left: %s", f)
		}
	}
	switch dir {
	case "processed":
		jobsList, _ := rep["jobs"].([]any)
		if len(jobsList) != 1 {
			t.Fatalf("%s: report lists %d jobs", name, len(jobsList))
		}
		outputs, _ := jobsList[0].(map[string]any)["outputs"].([]any)
		for _, o := range outputs {
			p := o.(string)
			if strings.HasSuffix(p, ".qcow2") {
				if out, stderr, err := b.Exec(ctx, "qemu-img", "check", "-q", p); err != nil {
					t.Errorf("output %s is damaged: %v %s %s", p, err, out, stderr)
				}
			}
		}
		if len(outputs) == 0 {
			t.Errorf("%s completed without outputs: %v", name, rep)
		}
	case "failed":
		if len(files) != 0 {
			t.Errorf("failed job %s left output files: %v", id, files)
		}
		if rep["error"] == nil || rep["error"] == "" {
			t.Errorf("%s failed without an error: %v", name, rep)
		}
	}
}

// jobIDsOf lists the distinct job ids the agent queued for manifest NAME.
func (b *relBox) jobIDsOf(ctx context.Context, name string) []string {
	out, _, _ := b.Exec(ctx, "journalctl", "--no-pager", "-o", "cat", "HYPER2KVM_MANIFEST="+name)
	seen := map[string]bool{}
	var ids []string
	for _, l := range strings.Split(out, "\n") {
		var id string
		if _, err := fmt.Sscanf(l, "job %s queued", &id); err == nil {
			id = strings.TrimSuffix(id, ":")
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// freeze pins job id's unit in stage; false when the job went past it.
func (b *relBox) freeze(ctx context.Context, t *testing.T, id, stage string) bool {
	t.Helper()
	out, stderr, err := b.Exec(ctx, "/srv/rel/freeze.sh", relUnitOf(id), stage)
	t.Logf("job %s at %s: %s%s", id, stage, strings.TrimSpace(out), stderr)
	return err == nil && strings.HasPrefix(out, "frozen")
}

// kill9 sends SIGKILL to pid in the box. It refuses 0 and 1 (a job that
// already ended has MainPID 0, and kill -9 0 would hit the caller's own
// process group) and reports whether it sent the signal.
func (b *relBox) kill9(t *testing.T, pid string) bool {
	t.Helper()
	if n, err := strconv.Atoi(pid); err != nil || n <= 1 {
		t.Logf("not killing MainPID %q", pid)
		return false
	}
	_, _, err := b.Exec(context.Background(), "kill", "-9", pid)
	return err == nil
}

func (b *relBox) thaw(ctx context.Context, id string) {
	b.Exec(ctx, "systemctl", "kill", "-s", "CONT", relUnitOf(id))
}

// killAgent kills the agent with SIGKILL and waits for systemd to have
// restarted it and the new agent to be ready (recovery is done before
// READY=1, so its counts then include re-attached jobs).
func (b *relBox) killAgent(ctx context.Context, t *testing.T) {
	t.Helper()
	old := b.show("hyper2kvmd.service", "MainPID")
	if !b.kill9(t, old) {
		t.Fatalf("the agent is not running (MainPID %q)", old)
	}
	if err := b.WaitFor(ctx, "the agent restarted and re-attached", func() (bool, error) {
		pid := b.show("hyper2kvmd.service", "MainPID")
		_, _, ok := b.agentCounts()
		return pid != "0" && pid != old && b.show("hyper2kvmd.service", "ActiveState") == "active" && ok, nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, b.Journal(ctx, "-u", "hyper2kvmd.service", "-n", "40"))
	}
}

func TestReliabilityFaults(t *testing.T) {
	t.Parallel()
	b := startRelFaultBox(t)
	ctx := relCtx(t, 15*time.Minute)

	// The undisturbed outcome of the full pipeline in this box: a fault
	// that the agent survives must not change it.
	b.drop("", "control.json", b.fullManifest("control"))
	controlID := b.waitJobOf(ctx, "control.json")
	controlDir, controlRep := b.waitSettled(ctx, "control.json")
	b.checkSettledOnce(ctx, t, "control.json", controlID, controlDir, controlRep)
	t.Logf("undisturbed full pipeline: %s %v", controlDir, controlRep["error"])
	faults := 0
	defer func() { t.Logf("faults injected: %d", faults) }()

	t.Run("agent killed at each stage", func(t *testing.T) {
		for _, stage := range relStages {
			name := "agent-kill-" + stage + ".json"
			b.drop("", name, b.fullManifest("ak-"+stage))
			id := b.waitJobOf(ctx, name)
			frozen := b.freeze(ctx, t, id, stage)
			if frozen {
				inv := b.show(relUnitOf(id), "InvocationID")
				b.killAgent(ctx, t)
				faults++
				if got := b.show(relUnitOf(id), "InvocationID"); got != inv {
					t.Errorf("%s: the job unit was restarted (invocation %s, was %s)", stage, got, inv)
				}
				if st := b.jobState(ctx, id); st != "running" {
					t.Errorf("%s: the restarted agent says the job is %q, want running", stage, st)
				}
				b.thaw(ctx, id)
			}
			dir, rep := b.waitSettled(ctx, name)
			b.checkSettledOnce(ctx, t, name, id, dir, rep)
			if dir != controlDir {
				t.Errorf("agent killed in %s: the job ended in %s/ (%v), undisturbed it ends in %s/", stage, dir, rep["error"], controlDir)
			}
			if n := strings.Count(b.Journal(ctx, "-u", "hyper2kvmd.service", "-o", "cat"), name+" settled"); n != 1 {
				t.Errorf("%s settled %d times", name, n)
			}
		}
	})

	t.Run("worker killed at each stage", func(t *testing.T) {
		for _, stage := range relStages {
			name := "worker-kill-" + stage + ".json"
			b.drop("", name, b.fullManifest("wk-"+stage))
			id := b.waitJobOf(ctx, name)
			if !b.freeze(ctx, t, id, stage) {
				dir, rep := b.waitSettled(ctx, name)
				b.checkSettledOnce(ctx, t, name, id, dir, rep)
				continue
			}
			if !b.kill9(t, b.show(relUnitOf(id), "MainPID")) {
				b.thaw(ctx, id)
				b.waitSettled(ctx, name)
				continue
			}
			faults++
			b.thaw(ctx, id)
			dir, rep := b.waitSettled(ctx, name)
			b.checkSettledOnce(ctx, t, name, id, dir, rep)
			msg := fmt.Sprint(rep["error"])
			if js, _ := rep["jobs"].([]any); len(js) == 1 {
				t.Logf("worker killed in %s: unit result %v, error %q", stage, js[0].(map[string]any)["unit_result"], msg)
			}
			if dir != "failed" || !strings.Contains(msg, "killed") {
				t.Errorf("worker killed in %s: %s/ %q; want failed/ saying the worker was killed", stage, dir, msg)
			}
			if out, _, _ := b.Exec(ctx, "losetup", "-a"); strings.Contains(out, id) {
				t.Errorf("worker killed in %s left loop devices: %s", stage, out)
			}
		}
	})

	t.Run("dbus restarted", func(t *testing.T) {
		name := "dbus-restart.json"
		b.drop("", name, b.fullManifest("dbus"))
		id := b.waitJobOf(ctx, name)
		frozen := b.freeze(ctx, t, id, "convert")
		inv := b.show(relUnitOf(id), "InvocationID")
		before := b.jobCount(ctx)
		oldPID := b.show("hyper2kvmd.service", "MainPID")
		b.MustExec(t, "systemctl", "restart", "dbus.service")
		faults++
		if err := b.WaitFor(ctx, "the agent back on the bus", func() (bool, error) {
			out, _, err := b.Exec(ctx, "busctl", "call", relDest, relManager, relIface, "GetStatus")
			return err == nil && strings.HasPrefix(out, "a{sv}"), nil
		}); err != nil {
			t.Fatalf("%v\n%s", err, b.Journal(ctx, "-u", "hyper2kvmd.service", "-u", "dbus.service", "-n", "60"))
		}
		t.Logf("agent PID %s before the bus restart, %s after", oldPID, b.show("hyper2kvmd.service", "MainPID"))
		if n := b.jobCount(ctx); n != before {
			t.Errorf("the agent lists %d jobs after the bus restart, %d before", n, before)
		}
		if frozen {
			if st := b.jobState(ctx, id); st != "running" {
				t.Errorf("job %s is %q after the bus restart, want running", id, st)
			}
			if got := b.show(relUnitOf(id), "InvocationID"); got != inv {
				t.Errorf("the job unit was restarted by the bus restart")
			}
			b.thaw(ctx, id)
		}
		dir, rep := b.waitSettled(ctx, name)
		b.checkSettledOnce(ctx, t, name, id, dir, rep)
		if dir != controlDir {
			t.Errorf("after a bus restart the job ended in %s/ (%v), undisturbed it ends in %s/", dir, rep["error"], controlDir)
		}
	})

	t.Run("output disk full", func(t *testing.T) {
		// 8 MiB for outputs; the source has 24 MiB of random data.
		b.MustExec(t, "mount", "-t", "tmpfs", "-o", "size=8M,mode=0750", "tmpfs", "/var/lib/hyper2kvm/output")
		defer b.Exec(context.Background(), "umount", "/var/lib/hyper2kvm/output")
		b.MustExec(t, "qemu-img", "create", "-q", "-f", "raw", "/srv/src/random.raw", "32M")
		b.MustExec(t, "dd", "if=/dev/urandom", "of=/srv/src/random.raw", "bs=1M", "count=24", "conv=notrunc", "status=none")
		b.MustExec(t, "chmod", "0644", "/srv/src/random.raw")
		b.drop("", "full.json", relManifest("full", "/srv/src/random.raw", "raw", ""))
		id := b.waitJobOf(ctx, "full.json")
		faults++
		dir, rep := b.waitSettled(ctx, "full.json")
		b.checkSettledOnce(ctx, t, "full.json", id, dir, rep)
		msg := strings.ToLower(fmt.Sprint(rep["error"]))
		if dir != "failed" || !strings.Contains(msg, "space") {
			t.Errorf("disk full: %s/ %q; want failed/ with an error about space", dir, msg)
		}
		if out := b.MustExec(t, "find", "/var/lib/hyper2kvm/output", "-type", "f"); strings.TrimSpace(out) != "" {
			t.Errorf("partial output left on the full file system: %s", out)
		}
		b.drop("", "after-full.json", relManifest("afterfull", "/srv/src/disk.raw", "raw", ""))
		id = b.waitJobOf(ctx, "after-full.json")
		dir, rep = b.waitSettled(ctx, "after-full.json")
		b.checkSettledOnce(ctx, t, "after-full.json", id, dir, rep)
		if dir != "processed" {
			t.Errorf("the agent does not serve after a full disk: %s %v", dir, rep["error"])
		}
	})
}

// TestReliabilityQueue: 200 manifests dropped while no agent runs all
// settle once the path unit starts it, none twice, never more than
// max_concurrent_jobs at once; then a damaged or truncated image of every
// format fails its job cleanly through the agent.
func TestReliabilityQueue(t *testing.T) {
	t.Parallel()
	b := relStart(t, box.Options{}, false, "")
	ctx := relCtx(t, 15*time.Minute)
	t.Run("200 while stopped", func(t *testing.T) { relTwoHundred(ctx, t, b) })
	t.Run("damaged images", func(t *testing.T) { relDamaged(ctx, t, b) })
}

func relTwoHundred(ctx context.Context, t *testing.T, b *relBox) {
	const n = 200
	b.MustExec(t, "qemu-img", "create", "-q", "-f", "raw", "/srv/src/tiny.raw", "1M")
	b.MustExec(t, "chmod", "0644", "/srv/src/tiny.raw")
	b.Exec(ctx, "systemctl", "stop", "hyper2kvmd.path", "hyper2kvmd.service")
	var sb strings.Builder
	sb.WriteString("set -e; cd " + relQueue + "/to_be_processed\n")
	for i := range n {
		name := fmt.Sprintf("many-%03d.json", i)
		fmt.Fprintf(&sb, "printf '%%s' '%s' > .%s && mv .%s %s\n", relManifest(fmt.Sprintf("many-%03d", i), "/srv/src/tiny.raw", "raw", ""), name, name, name)
	}
	b.MustExec(t, "sh", "-c", sb.String())
	b.MustExec(t, "systemctl", "start", "hyper2kvmd.path")
	day := b.day()
	maxActive := 0
	err := b.WaitFor(ctx, "all 200 settled", func() (bool, error) {
		maxActive = max(maxActive, b.activeJobUnits())
		out, _, _ := b.Exec(ctx, "sh", "-c", "ls "+relQueue+"/processed/"+day+" "+relQueue+"/failed/"+day+" 2>/dev/null | grep -c '^many-.*\\.json\\.\\(report\\|error\\)\\.json$' || true")
		var got int
		fmt.Sscanf(strings.TrimSpace(out), "%d", &got)
		return got >= n, nil
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, b.Journal(ctx, "-u", "hyper2kvmd.service", "-n", "40"))
	}
	if maxActive > 4 {
		t.Errorf("seen %d job units at once; max_concurrent_jobs is 4", maxActive)
	}
	processed, _ := os.ReadDir(b.Path(relQueue + "/processed/" + day))
	var manifests, reports int
	for _, e := range processed {
		switch {
		case strings.HasSuffix(e.Name(), ".report.json"):
			reports++
		case strings.HasPrefix(e.Name(), "many-"):
			manifests++
		}
	}
	if manifests != n || reports != n {
		t.Errorf("processed/ holds %d manifests and %d reports, want %d of each (no -2 duplicates)", manifests, reports, n)
	}
	for _, d := range []string{"failed", "processing", "to_be_processed"} {
		if out := b.find(relQueue + "/" + d); strings.Count(out, "many-") != 0 {
			t.Errorf("%s/ still holds manifests:\n%s", d, out)
		}
	}
	log := b.Journal(ctx, "-u", "hyper2kvmd.service", "-o", "cat")
	if c := strings.Count(log, " settled: "); c != n {
		t.Errorf("the agent logged %d settles, want %d", c, n)
	}
	t.Logf("200 manifests dropped while stopped: all settled, at most %d job units at once; manifests lost: 0", maxActive)
}

// relDamaged converts a small guest into every input format on the host,
// damages each copy the way a bad download or a full disk would, drops a
// manifest for each into the box and expects every job in failed/ with an
// error naming the damage, no output left, and the damaged source as it
// was (the pipeline never writes to a source).
func relDamaged(ctx context.Context, t *testing.T, b *relBox) {
	base := t.TempDir()
	raw := fixture.LinuxDisk(t, base, fixture.Options{SizeMB: 32})
	half := func(p string) {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, st.Size()/2); err != nil {
			t.Fatal(err)
		}
	}
	garble := func(p string, off int64) {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.WriteAt([]byte("\xde\xad\xbe\xef\xde\xad\xbe\xef"), off)
	}
	fresh := func(format, sub string) string {
		dir := t.TempDir()
		r := filepath.Join(dir, "disk.raw")
		if err := os.Link(raw, r); err != nil {
			t.Fatal(err)
		}
		return fixture.Convert(t, r, format, sub)
	}
	cases := []struct {
		name, sourceType string
		make             func() string
		want             string // in the error, lower case
	}{
		{"vmdk-sparse-truncated", "vmdk", func() string { p := fresh("vmdk", "monolithicSparse"); half(p); return p }, "truncated"},
		{"vmdk-stream-truncated", "vmdk", func() string { p := fresh("vmdk", "streamOptimized"); half(p); return p }, "truncated"},
		{"vmdk-flat-extent-truncated", "vmdk", func() string {
			p := fresh("vmdk", "monolithicFlat")
			half(strings.TrimSuffix(p, ".vmdk") + "-flat.vmdk")
			return p
		}, "truncated"},
		{"vmdk-split-extent-missing", "vmdk", func() string {
			p := fresh("vmdk", "twoGbMaxExtentSparse")
			os.Remove(strings.TrimSuffix(p, ".vmdk") + "-s001.vmdk")
			return p
		}, "missing"},
		{"vhd-dynamic-truncated", "vhd", func() string { p := fresh("vpc", "dynamic"); half(p); return p }, "truncated"},
		{"vhd-fixed-truncated", "vhd", func() string { p := fresh("vpc", "fixed"); half(p); return p }, "holds a raw image"},
		{"vhdx-truncated", "vhdx", func() string { p := fresh("vhdx", ""); half(p); return p }, "truncated"},
		{"qcow2-truncated", "qcow2", func() string { p := fresh("qcow2", ""); half(p); return p }, "truncated"},
		{"qcow2-header-garbled", "qcow2", func() string { p := fresh("qcow2", ""); garble(p, 8); return p }, "cannot read its qcow2 header"},
		{"ova-truncated", "ova", func() string { p := fixture.OVA(t, t.TempDir(), raw); half(p); return p }, "truncated"},
		{"ovf-disk-missing", "ovf", func() string {
			p := fixture.OVF(t, t.TempDir(), fixture.VM{}, raw)
			os.Remove(filepath.Join(filepath.Dir(p), "fixture-vm-disk1.vmdk"))
			return p
		}, "fixture-vm-disk1.vmdk"},
	}
	sums := map[string]string{}
	for _, c := range cases {
		src := c.make()
		dst := "/srv/damaged/" + c.name
		b.MustExec(t, "mkdir", "-p", dst)
		if out, err := exec.Command("sh", "-c", `cp -a --sparse=always "$1"/. "$2"/`, "sh", filepath.Dir(src), b.Path(dst)).CombinedOutput(); err != nil {
			t.Fatalf("copy %s into the box: %v %s", c.name, err, out)
		}
		b.MustExec(t, "rm", "-f", dst+"/disk.raw")
		p := dst + "/" + filepath.Base(src)
		sums[c.name] = b.MustExec(t, "sh", "-c", "cd "+dst+" && sha256sum * | sort")
		b.drop("", c.name+".json", relManifest(c.name, p, c.sourceType, ""))
	}
	for _, c := range cases {
		name := c.name + ".json"
		dir, rep := b.waitSettled(ctx, name)
		var id string
		if js, _ := rep["jobs"].([]any); len(js) == 1 {
			id, _ = js[0].(map[string]any)["job_id"].(string)
		}
		msg := strings.ToLower(fmt.Sprint(rep["error"], " ", rep["validation_errors"]))
		if dir != "failed" || !strings.Contains(msg, c.want) {
			t.Errorf("%s: %s/ %q; want failed/ with an error mentioning %q", c.name, dir, msg, c.want)
		}
		if id != "" {
			if out, _, _ := b.Exec(ctx, "find", "/var/lib/hyper2kvm/output", "-path", "*/"+id+"/*"); strings.TrimSpace(out) != "" {
				t.Errorf("%s: output left: %s", c.name, out)
			}
		}
		if got := b.MustExec(t, "sh", "-c", "cd /srv/damaged/"+c.name+" && sha256sum * | sort"); got != sums[c.name] {
			t.Errorf("%s: the source changed:\n%s\nwas\n%s", c.name, got, sums[c.name])
		}
		t.Logf("%s: %s", c.name, msg)
	}
}

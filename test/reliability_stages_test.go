package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The machine rebooted, and the worker killed, while a job is in a given
// stage: LOAD, INSPECT, FIX (and CONVERT for the reboots). The jobs are held
// in their stage by wrappers of qemu-img and nsenter put on the box's
// PATH (/usr/local/bin comes before /usr/bin in a unit's PATH), not by
// code in the product, and not by watching StatusText (which a short stage
// can slip past): a wrapper called for a job named in /srv/relgate/hold/
// stops the worker (SIGSTOP) at a precise point of the stage it names, and
// says so in /srv/relgate/held/. The points:
//
//   - load: LOAD's first qemu-img info (the sha256 of the source is done);
//   - inspect: INSPECT's qemu-storage-daemon exports an overlay of the
//     source and the guest's root is mounted (read-only) in the session's
//     namespace;
//   - fix: FIX's overlay (disk1-overlay.qcow2 in the job's work directory)
//     exists, is exported and the guest's root on it is mounted read-write;
//   - convert: qemu-img convert has written a few MiB of the .part (the
//     wrapper stops it too).
//
// What every case checks once the manifest has settled (beside
// checkSettledOnce): the source's sha256 is unchanged, the job's work
// directory holds nothing (no FIX overlay), no private /tmp of the job unit,
// mount of a guest or qemu-storage-daemon is left, and no .part.

// relStageLib finds the job a wrapper runs for (from its cgroup) and its
// VM name (from job.json), and whether the test holds that job at STAGE.
const relStageLib = `
relname=
# relhold STAGE: succeeds once for a job the test holds at STAGE.
relhold() {
	local id
	id=$(grep -o 'hyper2kvm-job-[0-9a-f]*\.service' /proc/self/cgroup | head -n1)
	[ -n "$id" ] || return 1
	id=${id#hyper2kvm-job-}
	id=${id%.service}
	relname=$(sed -n 's/^ *"name": *"\([^"]*\)".*/\1/p' "/var/lib/hyper2kvm/jobs/$id/job.json" 2>/dev/null | head -n1)
	[ -n "$relname" ] && [ "$(cat "/srv/relgate/hold/$relname" 2>/dev/null)" = "$1" ] || return 1
	# Used up: the run after a reboot goes through.
	rm -f "/srv/relgate/hold/$relname"
}
# relheld STAGE [DETAIL]: tell the test the job is held.
relheld() { echo "$*" >"/srv/relgate/held/.$relname" && mv "/srv/relgate/held/.$relname" "/srv/relgate/held/$relname"; }
`

const relStageQemuImg = `#!/bin/bash
# Test wrapper (test/reliability_stages_test.go): the real qemu-img, except
# for a job the test holds in LOAD or CONVERT.
real=/usr/bin/qemu-img
` + relStageLib + `
if [ "$1" = info ] && relhold load; then
	# The worker waits for this qemu-img info: stop it there.
	kill -STOP "$PPID"
	relheld load
elif [ "$1 $2" = "convert -p" ] && relhold convert; then
	"$real" "$@" &
	child=$!
	out=${!#}
	while kill -0 "$child" 2>/dev/null && [ "$(stat -L -c %s "$out" 2>/dev/null || echo 0)" -lt 4194304 ]; do sleep 0.05; done
	kill -STOP "$PPID" "$child" 2>/dev/null
	relheld convert "part=$(stat -L -c %s "$out" 2>/dev/null) bytes"
	wait "$child"
	exit $?
fi
exec "$real" "$@"
`

const relStageNsenter = `#!/bin/bash
# Test wrapper (test/reliability_stages_test.go): the real nsenter, except
# for a job the test holds in INSPECT (the guest's root mounted read-only)
# or FIX (read-write): the native backend mounts it with
# "nsenter --mount=<guest's namespace> -- mount -o OPTS /dev/loopN <scratch>/root";
# once that mount is made the worker, which waits for it, is stopped.
real=/usr/bin/nsenter
` + relStageLib + `
if [[ ${!#} == */guest-native-*/root && " $* " == *" -- mount "* ]]; then
	stage=fix
	# A read-only mount's options hold "ro" among others ("nodev,nosuid,ro,noload").
	[[ " $* " =~ [\ ,]ro[\ ,] ]] && stage=inspect
	if relhold "$stage"; then
		"$real" "$@"
		rc=$?
		kill -STOP "$PPID"
		relheld "$stage" "guest root mounted (mount exit $rc)"
		exit $rc
	fi
fi
exec "$real" "$@"
`

// startRelStageBox is the fault box with the holding wrappers installed.
func startRelStageBox(t *testing.T) *relFaultBox {
	t.Helper()
	b := startRelFaultBox(t)
	b.WriteFile(t, "/usr/local/bin/qemu-img", []byte(relStageQemuImg), 0o755)
	b.WriteFile(t, "/usr/local/bin/nsenter", []byte(relStageNsenter), 0o755)
	b.MustExec(t, "mkdir", "-p", "/srv/relgate/hold", "/srv/relgate/held")
	return b
}

// relHeldJob is a job the test holds in a stage, at a point: the stage's
// name, or STAGE-WHAT for another point of it.
type relHeldJob struct {
	point, stage, vm, name, id string
}

// holdJobs drops one full-pipeline manifest per stage, each to be held in
// its stage, and waits until each is: the wrapper said so, the unit's main
// process (the worker) is stopped and the unit's StatusText names the stage.
func (b *relFaultBox) holdJobs(ctx context.Context, t *testing.T, prefix string, points []string) []relHeldJob {
	t.Helper()
	var js []relHeldJob
	for _, pt := range points {
		stage, _, _ := strings.Cut(pt, "-")
		j := relHeldJob{point: pt, stage: stage, vm: prefix + "-" + pt}
		j.name = j.vm + ".json"
		b.WriteFile(t, "/srv/relgate/hold/"+j.vm, []byte(pt), 0o644)
		b.drop("", j.name, b.fullManifest(j.vm))
		js = append(js, j)
	}
	for i := range js {
		j := &js[i]
		j.id = b.waitJobOf(ctx, j.name)
		var held, status, pid string
		err := b.WaitFor(ctx, j.vm+" held at "+j.point, func() (bool, error) {
			if dir, rep := b.settledIn(j.name); dir != "" {
				return false, fmt.Errorf("it settled in %s/ first: %v", dir, rep["error"])
			}
			data, err := os.ReadFile(b.Path("/srv/relgate/held/" + j.vm))
			if err != nil {
				return false, nil
			}
			held = strings.TrimSpace(string(data))
			status, pid = b.show(relUnitOf(j.id), "StatusText"), b.show(relUnitOf(j.id), "MainPID")
			stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/root/proc/%s/stat", b.PID(), pid))
			stopped := false
			if k := strings.LastIndexByte(string(stat), ')'); k > 0 && k+2 < len(stat) {
				stopped = stat[k+2] == 'T'
			}
			return stopped && strings.HasPrefix(status, j.stage), nil
		})
		if err != nil {
			t.Fatalf("%v (wrapper said %q, unit status %q, MainPID %s)\n%s", err, held, status, pid,
				b.Journal(ctx, "-o", "cat", "HYPER2KVM_JOB_ID="+j.id))
		}
		t.Logf("%s: job %s held in %s (%s), worker %s stopped, unit status %q", j.vm, j.id, j.stage, held, pid, status)
	}
	return js
}

// scratchOf lists what a job left: its work directory's contents, its
// unit's private /tmp, mounts of a guest and qemu processes in the box.
func (b *relFaultBox) scratchOf(ctx context.Context, id string) []string {
	var left []string
	add := func(what, out string) {
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if l != "" {
				left = append(left, what+": "+l)
			}
		}
	}
	out, _, _ := b.Exec(ctx, "find", "/var/lib/hyper2kvm/jobs/"+id+"/work", "-mindepth", "1")
	add("work directory", out)
	// What the unit wrote into its private /tmp (the native backend's
	// scratch: overlay, FUSE export, mount point), not the empty skeleton
	// systemd makes.
	out, _, _ = b.Exec(ctx, "sh", "-c", "find /tmp/systemd-private-*-"+relUnitOf(id)+"-* /var/tmp/systemd-private-*-"+relUnitOf(id)+"-* -mindepth 2 2>/dev/null")
	add("private tmp", out)
	out, _, _ = b.Exec(ctx, "find", "/var/lib/hyper2kvm/output", "-path", "*/"+id+"/*", "-name", "*.part")
	add("partial output", out)
	return left
}

// checkBoxClean asserts what no job may leave in the box once every job
// has settled: a guest mounted anywhere, a qemu process, a changed source.
func (b *relFaultBox) checkBoxClean(ctx context.Context, t *testing.T) {
	t.Helper()
	if out, _, _ := b.Exec(ctx, "sh", "-c", "grep -l guest-native /proc/[0-9]*/mountinfo 2>/dev/null"); strings.TrimSpace(out) != "" {
		t.Errorf("a guest is still mounted in the namespaces of: %s", out)
	}
	if out, _, _ := b.Exec(ctx, "pgrep", "-a", "qemu"); strings.TrimSpace(out) != "" {
		t.Errorf("qemu processes left: %s", out)
	}
	if out := b.MustExec(t, "sha256sum", "/srv/src/guest.raw"); !strings.HasPrefix(out, b.guestSum) {
		t.Errorf("the source changed: sha256 %s, was %s", strings.Fields(out)[0], b.guestSum)
	}
}

// bootAgain does what booting a machine with the package installed starts
// (packaging/debian/postinst enables hyper2kvmd.path and the API socket)
// and checks that the agent came up by itself for the unfinished jobs.
func (b *relFaultBox) bootAgain(ctx context.Context, t *testing.T) {
	t.Helper()
	b.MustExec(t, "systemctl", "start", "hyper2kvmd.path", "hyper2kvm-api.socket")
	b.Exec(ctx, "systemctl", "is-system-running", "--wait")
	if err := b.WaitFor(ctx, "the agent started by hyper2kvmd.path", func() (bool, error) {
		st := b.show("hyper2kvmd.service", "ActiveState")
		return st == "active" || st == "activating", nil
	}); err != nil {
		t.Fatalf("after a reboot nothing starts the agent although processing/ holds unfinished jobs: %v\n%s", err, b.find(relQueue+"/processing"))
	}
}

// TestReliabilityRebootInStages reboots the box, cleanly (systemd stops
// every unit: the worker gets SIGTERM, then SIGCONT) and hard (the box's
// PID 1 killed, as a power loss: the kernel SIGKILLs every process of the
// box at once, and the next boot finds the job's state as the crash left
// it), while four jobs are held, one in each of LOAD, INSPECT, FIX (the
// guest's root mounted read-write) and CONVERT. Each job is run again after
// the boot (attempt 2 of 2),
// completes and settles once in processed/ with a whole output; the source
// is unchanged and nothing of the interrupted run is left.
func TestReliabilityRebootInStages(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"clean", "hard"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			b := startRelStageBox(t)
			ctx := relCtx(t, 15*time.Minute)
			js := b.holdJobs(ctx, t, "rb"+how, []string{"load", "inspect", "fix", "convert"})
			for _, j := range js {
				t.Logf("%s before the %s reboot: %v", j.vm, how, b.scratchOf(ctx, j.id))
			}
			if how == "hard" {
				if err := syscall.Kill(b.PID(), syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
			b.Reboot(t)
			b.bootAgain(ctx, t)
			for _, j := range js {
				dir, rep := b.waitSettled(ctx, j.name)
				b.checkSettledOnce(ctx, t, j.name, j.id, dir, rep)
				log := b.Journal(ctx, "-o", "cat", "HYPER2KVM_JOB_ID="+j.id)
				runs := strings.Count(log, "started as ")
				t.Logf("%s reboot in %s: settled in %s/ status %v error %v after %d runs", how, j.point, dir, rep["status"], rep["error"], runs)
				if dir != "processed" {
					t.Errorf("a job interrupted in %s by a %s reboot is run again (attempt 2 of 2) and completes: ended %s/ with %v\njob log:\n%s",
						j.stage, how, dir, rep["error"], log)
				}
				if runs != 2 {
					t.Errorf("%s: the job was started %d times, want 2 (the interrupted run and one after the boot)", j.stage, runs)
				}
				if left := b.scratchOf(ctx, j.id); len(left) > 0 {
					t.Errorf("%s: the run interrupted in %s by a %s reboot left:\n%s", j.vm, j.point, how, strings.Join(left, "\n"))
				}
			}
			b.checkBoxClean(ctx, t)
		})
	}
}

// TestReliabilityWorkerKilledInStages kills the worker (kill -9 of the job
// unit's main process) while it is held in LOAD, INSPECT and FIX, three
// jobs at once: each job fails with a report saying the worker was killed,
// leaves no output, no overlay in its work directory, no mounted guest and
// no qemu-storage-daemon, and the source is unchanged. (CONVERT and VALIDATE
// are in TestReliabilityFaults.)
func TestReliabilityWorkerKilledInStages(t *testing.T) {
	t.Parallel()
	b := startRelStageBox(t)
	ctx := relCtx(t, 10*time.Minute)
	js := b.holdJobs(ctx, t, "wk", []string{"load", "inspect", "fix"})
	for _, j := range js {
		t.Logf("%s before the kill: %v", j.vm, b.scratchOf(ctx, j.id))
		if !b.kill9(t, b.show(relUnitOf(j.id), "MainPID")) {
			t.Fatalf("%s: could not kill the worker", j.vm)
		}
	}
	for _, j := range js {
		dir, rep := b.waitSettled(ctx, j.name)
		b.checkSettledOnce(ctx, t, j.name, j.id, dir, rep)
		msg := fmt.Sprint(rep["error"])
		t.Logf("worker killed in %s: %s/ %q", j.stage, dir, msg)
		if dir != "failed" || !strings.Contains(msg, "killed") {
			t.Errorf("worker killed in %s: %s/ %q; want failed/ saying the worker was killed", j.stage, dir, msg)
		}
		if left := b.scratchOf(ctx, j.id); len(left) > 0 {
			t.Errorf("%s: the worker killed in %s left:\n%s", j.vm, j.stage, strings.Join(left, "\n"))
		}
	}
	b.checkBoxClean(ctx, t)
}

// TestReliabilityKillAllInFIX sends SIGKILL to every process of a job unit
// (systemctl kill -s KILL, as systemd does when a stop outlasts
// TimeoutStopSec) while FIX has the guest's root mounted read-write. The
// job settles once, in failed/ with a report, and leaves no mount, no
// qemu-storage-daemon, no loop device and no scratch.
//
// It used to hang for good: the guest's mount namespace was owned by
// qemu-storage-daemon, which also serves the FUSE export the guest
// filesystem is mounted from (through a loop device). Killed last, the
// daemon tore its namespace down as it exited: unmounting the ext4 synced
// it through the loop device into the FUSE file whose server was the
// exiting daemon itself, which stayed in D state (ext4_sync_fs ->
// blkdev_issue_flush -> submit_bio_wait); the unit never stopped, the
// manifest stayed in processing/ and the loop device attached. On such a
// hang the test aborts the FUSE connection it made as it ends, so a
// failing run leaves no hung process on the machine.
func TestReliabilityKillAllInFIX(t *testing.T) {
	t.Parallel()
	b := startRelStageBox(t)
	ctx := relCtx(t, 10*time.Minute)
	j := b.holdJobs(ctx, t, "ka", []string{"fix"})[0]
	conn := b.fuseConnOf(ctx, t, j.id)
	t.Cleanup(func() {
		// Only for a hang, while the hung daemon still holds the number:
		// once its export is gone the kernel gives the number to the next
		// FUSE mount: aborting it then fails another job's disk export
		// mid-FIX (its writes are lost; see TestGuestNativeLostWritesFail).
		if t.Failed() && len(relLoopsOf(conn)) > 0 {
			relAbortFUSE(t, conn)
		}
	})
	if loops := relLoopsOf(conn); len(loops) == 0 {
		t.Fatalf("no loop device backed by the job's export (FUSE connection %d) while FIX has the guest mounted: the check below would prove nothing", conn)
	}
	b.MustExec(t, "systemctl", "kill", "-s", "KILL", relUnitOf(j.id))
	// A bound for a hang (which lasts forever), not a measure of speed.
	waitCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	err := b.WaitFor(waitCtx, j.name+" settled", func() (bool, error) {
		dir, _ := b.settledIn(j.name)
		return dir != "", nil
	})
	if err != nil {
		ps, _, _ := b.Exec(ctx, "ps", "-eo", "pid,stat,wchan:30,args")
		t.Fatalf("every process of the job unit killed in FIX: the job did not settle (%v); unit %s; FUSE connection %d; processes:\n%s",
			err, b.show(relUnitOf(j.id), "ActiveState"), conn, ps)
	}
	dir, rep := b.waitSettled(ctx, j.name)
	b.checkSettledOnce(ctx, t, j.name, j.id, dir, rep)
	t.Logf("every process killed in FIX: settled in %s/ with %q", dir, rep["error"])
	if dir != "failed" {
		t.Errorf("every process of the job killed in FIX: settled in %s/, want failed/", dir)
	}
	if err := b.WaitFor(ctx, "the unit stopped", func() (bool, error) {
		st := b.show(relUnitOf(j.id), "ActiveState")
		return st != "active" && st != "deactivating", nil
	}); err != nil {
		t.Error(err)
	}
	if left := b.scratchOf(ctx, j.id); len(left) > 0 {
		t.Errorf("%s: killing every process in FIX left:\n%s", j.vm, strings.Join(left, "\n"))
	}
	if loops := relLoopsOf(conn); len(loops) > 0 {
		t.Errorf("loop devices still attached to the killed job's export: %v", loops)
	}
	b.checkBoxClean(ctx, t)
}

// fuseConnOf is the FUSE connection number (the minor of the export's
// device) of the qemu-storage-daemon of job id.
func (b *relFaultBox) fuseConnOf(ctx context.Context, t *testing.T, id string) int {
	t.Helper()
	out, _, _ := b.Exec(ctx, "sh", "-c", "for p in $(cat /sys/fs/cgroup/systemd/hyper2kvm.slice/"+relUnitOf(id)+"/cgroup.procs 2>/dev/null || cat /sys/fs/cgroup/hyper2kvm.slice/"+relUnitOf(id)+"/cgroup.procs); do "+
		`[ "$(cat /proc/$p/comm)" = qemu-storage-da ] && echo $p; done`)
	pid := strings.TrimSpace(out)
	if pid == "" || strings.Contains(pid, "\n") {
		t.Fatalf("job %s: qemu-storage-daemon pids %q", id, out)
	}
	disks, _ := filepath.Glob(b.Path(fmt.Sprintf("/proc/%s/root/tmp/guest-native-*/disk", pid)))
	if len(disks) != 1 {
		t.Fatalf("job %s: FUSE exports %v", id, disks)
	}
	var st unix.Stat_t
	if err := unix.Stat(disks[0], &st); err != nil {
		t.Fatal(err)
	}
	return int(unix.Minor(st.Dev))
}

// relLoopsOf lists the loop devices (of the machine: they are not per box)
// whose backing file is on FUSE connection conn, the job's export. A
// device's backing file has no usable path once the export's mount is
// detached, so this goes by the file's device number.
func relLoopsOf(conn int) []string {
	var found []string
	devs, _ := filepath.Glob("/sys/block/loop*")
	for _, d := range devs {
		name := filepath.Base(d)
		f, err := os.Open("/dev/" + name)
		if err != nil {
			continue
		}
		info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
		f.Close()
		if err == nil && unix.Major(info.Device) == 0 && int(unix.Minor(info.Device)) == conn {
			found = append(found, name)
		}
	}
	return found
}

// relAbortFUSE aborts FUSE connection conn (as `echo 1 > abort` in fusectl,
// mounted in a private namespace), which frees a daemon hung on its own
// export.
func relAbortFUSE(t *testing.T, conn int) {
	script := fmt.Sprintf(`mount -t fusectl none /sys/fs/fuse/connections && d=/sys/fs/fuse/connections/%d && if [ -d $d ]; then echo "waiting $(cat $d/waiting)"; echo 1 >$d/abort; fi`, conn)
	out, err := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script).CombinedOutput()
	t.Logf("abort FUSE connection %d: %s %v", conn, strings.TrimSpace(string(out)), err)
}

package test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
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
//     source and the guest's root is mounted (read-only) in its namespace;
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
elif [ "$1" = create ] && [[ ${!#} == */.work-*-overlay.qcow2 ]] && relhold fix-overlay; then
	# FIX's overlay of the source, before anything is mounted.
	"$real" "$@"
	rc=$?
	kill -STOP "$PPID"
	relheld fix-overlay "overlay created (exit $rc)"
	exit $rc
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
# "nsenter --mount=<daemon's namespace> -- mount -o ... DISK <scratch>/root";
# once that mount is made the worker, which waits for it, is stopped.
real=/usr/bin/nsenter
` + relStageLib + `
if [[ ${!#} == */guest-native-*/root && " $* " == *" -- mount "* ]]; then
	stage=fix
	[[ " $* " == *,ro" "* ]] && stage=inspect
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
// name, or STAGE-WHAT for another point of it (fix-overlay).
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
// PID 1 killed, as a power loss: the next boot finds the job's state as the
// crash left it), while four jobs are held, one in each of LOAD, INSPECT,
// FIX and CONVERT (for the hard one, FIX is held with its overlay made and
// nothing mounted yet: see the comment below). Each job is run again after
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
			points := []string{"load", "inspect", "fix", "convert"}
			if how == "hard" {
				// Not with the guest mounted read-write: killing every process
				// then hangs qemu-storage-daemon for good (a known gap:
				// TestReliabilityKillAllInFIX, reliability_stages_pending_test.go).
				points[2] = "fix-overlay"
			}
			js := b.holdJobs(ctx, t, "rb"+how, points)
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

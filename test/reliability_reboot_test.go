package test

import (
	"syscall"
	"testing"
	"time"
)

// TestReliabilityReboot stops the whole box mid-job, once cleanly (systemd
// shuts down, stopping the job unit) and once hard (PID 1 killed), and
// boots it again on the same disk state with the units the package enables.
// What holds: the agent is started again by hyper2kvmd.path (processing/
// is not empty), the job is run again (attempt 2: a clean stop by systemd
// is an interruption, not a cancel; a crash is told by the boot marker in
// /run, which a container's reboot clears too), the manifest settles once
// in processed/, with its report, and no output is left half-written.
func TestReliabilityReboot(t *testing.T) {
	t.Parallel()
	b := startRelFaultBox(t)
	ctx := relCtx(t, 15*time.Minute)

	bootAgain := func(t *testing.T) {
		// What booting a machine with the package installed starts: the
		// enabled units (packaging/debian/postinst enables these two).
		b.MustExec(t, "systemctl", "start", "hyper2kvmd.path", "hyper2kvm-api.socket")
		b.Exec(ctx, "systemctl", "is-system-running", "--wait")
		if st := b.show("hyper2kvmd.service", "ActiveState"); st != "active" && st != "activating" {
			queued := b.find(relQueue + "/processing")
			t.Errorf("after a reboot nothing starts the agent (hyper2kvmd.service is %s) although processing/ holds an unfinished job:\n%s"+
				"hyper2kvmd.path only watches to_be_processed/, and the package enables only the .path and .socket units", st, queued)
			b.MustExec(t, "systemctl", "start", "hyper2kvmd.service")
		}
	}

	for _, how := range []string{"clean", "hard"} {
		t.Run(how, func(t *testing.T) {
			name := "reboot-" + how + ".json"
			b.drop("", name, b.fullManifest("reboot-"+how))
			id := b.waitJobOf(ctx, name)
			frozen := b.freeze(ctx, t, id, "convert")
			if how == "hard" {
				if err := syscall.Kill(b.PID(), syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
			// A clean shutdown stops the job unit with SIGTERM followed
			// by SIGCONT, so the frozen worker sees the SIGTERM first.
			b.Reboot(t)
			bootAgain(t)
			dir, rep := b.waitSettled(ctx, name)
			b.checkSettledOnce(ctx, t, name, id, dir, rep)
			t.Logf("%s stop mid-job (frozen in convert: %v): settled in %s/ status %v error %v", how, frozen, dir, rep["status"], rep["error"])
			if dir != "processed" {
				t.Errorf("a job interrupted by a %s stop of the machine is run again once (maxAttempts in agent/recover.go): ended %s/ status %v: %v",
					how, dir, rep["status"], rep["error"])
			}
		})
	}
}

package agent

import (
	"context"
	"fmt"
	"os/exec"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// A manifest's schedule (not_before, not_after) is a maintenance window.
// A pending job is not started before its not_before (River has it as
// "scheduled" with that scheduled_at), and one still pending after its
// not_after fails with that reason. The agent exits idle even while jobs
// wait for their window; before it does, it arms a transient timer unit
// (wakeUnit) for the earliest due time, so that systemd starts it then
// with nobody logged in.

// wakeUnit is the transient timer the idle agent leaves behind.
const wakeUnit = "hyper2kvmd-wake"

// dueLater reports whether r waits for its window at now.
func dueLater(r *record, now time.Time) bool {
	return r.State == jobs.Pending && !r.NotBefore.IsZero() && now.Before(r.NotBefore)
}

// windowClosed reports whether r, still pending, missed its window.
func windowClosed(r *record, now time.Time) bool {
	return r.State == jobs.Pending && !r.NotAfter.IsZero() && now.After(r.NotAfter)
}

// expireLocked fails every pending job whose window closed, and reports
// whether a job waiting for its window is now due (the caller schedules).
// Called with a.mu held.
func (a *Agent) expireLocked() (due bool) {
	now := a.now()
	for _, r := range a.st.live {
		if windowClosed(r, now) {
			a.finishLocked(r, jobs.Failed, "schedule", fmt.Sprintf("not started before its window closed at %s (schedule.not_after)", r.NotAfter.Format(time.RFC3339)), nil)
			continue
		}
		if r.State == jobs.Pending && !r.NotBefore.IsZero() && !now.Before(r.NotBefore) {
			due = true
		}
	}
	return due
}

// nextDue is the earliest not_before of a job waiting for its window;
// zero when none waits.
func (a *Agent) nextDue() time.Time {
	var at time.Time
	now := a.now()
	for _, r := range a.st.live {
		if dueLater(r, now) && (at.IsZero() || r.NotBefore.Before(at)) {
			at = r.NotBefore
		}
	}
	return at
}

// armWake leaves a transient timer that starts the agent at at. The
// timer runs systemctl start, so the agent starts as its own unit, with
// its sandbox, exactly as the path unit or D-Bus activation start it.
func armWake(ctx context.Context, at time.Time) error {
	exec.CommandContext(ctx, "systemctl", "stop", wakeUnit+".timer").Run()
	out, err := exec.CommandContext(ctx, "systemd-run", "--unit="+wakeUnit, "--collect", "--quiet",
		"--on-calendar="+at.UTC().Format("2006-01-02 15:04:05")+" UTC", "--timer-property=AccuracySec=1s",
		"/usr/bin/systemctl", "start", "--no-block", "hyper2kvmd.service").CombinedOutput()
	if err != nil {
		return fmt.Errorf("cannot arm %s.timer for %s: %v: %s", wakeUnit, at.Format(time.RFC3339), err, out)
	}
	return nil
}

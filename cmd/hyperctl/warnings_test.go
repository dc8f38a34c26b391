package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// TestWarningsShown: a job's warnings are in show (a section, counted),
// in show -o json (warnings and warning_count) and on watch's last line;
// a guest's control characters never reach the terminal.
func TestWarningsShown(t *testing.T) {
	now := time.Now()
	j := jobs.Job{ID: "w1", Name: "blank", State: jobs.Completed, Progress: 100, Unit: jobs.UnitName("w1"),
		CreatedAt: now.Add(-time.Minute), StartedAt: now.Add(-time.Minute), FinishedAt: now,
		Outputs:  []string{"/out/blank.qcow2"},
		Warnings: []string{"the guest is Windows, which FIX does not support yet", "qemu-img check of x: \x1b]0;owned\x07leaked"}}
	f := &fakeClient{jobs: []jobs.Job{j}}
	r := runCLI(t, f, "show", "w1")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"Warnings:", "2\n", "! the guest is Windows, which FIX does not support yet", "! qemu-img check of x: ?]0;owned?leaked"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("show lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "\x1b]") {
		t.Errorf("show passed a guest's escape sequence to the terminal:\n%q", r.stdout)
	}
	r = runCLI(t, f, "show", "w1", "-o", "json")
	var v struct {
		Warnings     []string `json:"warnings"`
		WarningCount int      `json:"warning_count"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.WarningCount != 2 || len(v.Warnings) != 2 {
		t.Errorf("show -o json: %v %+v\n%s", err, v, r.stdout)
	}
	r = runCLI(t, f, "watch", "w1")
	if r.code != 0 || !strings.Contains(r.stdout, "completed") || !strings.Contains(r.stdout, "with 2 warnings") {
		t.Errorf("watch: exit %d\n%s", r.code, r.stdout)
	}
	// Without warnings nothing is said about them.
	j.Warnings = nil
	f = &fakeClient{jobs: []jobs.Job{j}}
	if r := runCLI(t, f, "show", "w1"); strings.Contains(r.stdout, "Warnings") {
		t.Errorf("show of a job without warnings:\n%s", r.stdout)
	}
	if r := runCLI(t, f, "watch", "w1"); strings.Contains(r.stdout, "warning") {
		t.Errorf("watch of a job without warnings:\n%s", r.stdout)
	}
}

package agent

import (
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

func TestOutcome(t *testing.T) {
	done := &report.Report{Status: report.Completed}
	failed := &report.Report{Status: report.Failed, Error: &report.Failure{Stage: "convert", Message: "qemu-img: boom"}}
	sigterm := &report.Report{Status: report.Cancelled, Error: &report.Failure{Stage: "fix", Message: "cancelled"}}
	for _, tt := range []struct {
		name        string
		e           ending
		state       jobs.State
		stage       string
		msg         string // a part of the message
		interrupted bool
	}{
		{"completed", ending{report: done, unitResult: "success", attempt: 1}, jobs.Completed, "", "", false},
		{"completed, no result yet", ending{report: done, attempt: 1}, jobs.Completed, "", "", false},
		{"completed but killed after", ending{report: done, unitResult: "signal", stage: "validate", attempt: 1}, jobs.Failed, "validate", "killed by a signal", false},
		{"cancelled by a user", ending{cancelled: true, report: sigterm, stage: "fix", attempt: 1}, jobs.Cancelled, "fix", "cancelled", false},
		{"cancelled before a report", ending{cancelled: true, stage: "load", attempt: 1}, jobs.Cancelled, "load", "cancelled", false},
		{"pipeline failed", ending{report: failed, unitResult: "exit-code", stage: "convert", attempt: 1}, jobs.Failed, "convert", "qemu-img: boom", false},
		{"runtime limit", ending{report: sigterm, unitResult: "timeout", stage: "convert", attempt: 1}, jobs.Failed, "fix", "RuntimeMaxSec", false},
		{"stopped by systemd", ending{report: sigterm, unitResult: "success", stage: "fix", attempt: 1}, jobs.Pending, "fix", "interrupted", true},
		{"stopped by systemd twice", ending{report: sigterm, unitResult: "success", stage: "fix", attempt: 2}, jobs.Failed, "fix", "during fix, 2 times; not run again", true},
		{"helper died in a shutdown", ending{report: failed, unitResult: "exit-code", attempt: 1, stopping: true}, jobs.Pending, "convert", "interrupted", true},
		{"no report in a shutdown", ending{unitResult: "signal", stage: "inspect", attempt: 1, stopping: true}, jobs.Pending, "inspect", "interrupted", true},
		{"completed in a shutdown", ending{report: done, unitResult: "success", attempt: 1, stopping: true}, jobs.Completed, "", "", false},
		{"oom in a shutdown", ending{unitResult: "oom-kill", stage: "convert", attempt: 1, stopping: true}, jobs.Failed, "convert", "memory limit (MemoryMax)", false},
		{"oom with a report", ending{report: failed, unitResult: "oom-kill", attempt: 1}, jobs.Failed, "convert", "memory limit (MemoryMax): qemu-img: boom", false},
		{"oom", ending{unitResult: "oom-kill", stage: "convert", attempt: 1}, jobs.Failed, "convert", "memory limit (MemoryMax)", false},
		{"signal", ending{unitResult: "signal", stage: "fix", attempt: 1}, jobs.Failed, "fix", "killed by a signal", false},
		{"core dump", ending{unitResult: "core-dump", attempt: 1}, jobs.Failed, "", "killed by a signal", false},
		{"exit code", ending{unitResult: "exit-code", attempt: 1}, jobs.Failed, "", "see its journal", false},
		{"protocol", ending{unitResult: "protocol", attempt: 1}, jobs.Failed, "", "(protocol)", false},
		{"resources", ending{unitResult: "resources", attempt: 1}, jobs.Failed, "", "(resources)", false},
		{"no report", ending{unitResult: "success", attempt: 1}, jobs.Failed, "", "without writing its report", false},
		{"unknown result", ending{unitResult: "watchdog", attempt: 1}, jobs.Failed, "", "result watchdog", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			state, stage, msg := outcome(tt.e)
			if state != tt.state || stage != tt.stage || !strings.Contains(msg, tt.msg) || (tt.msg == "") != (msg == "") {
				t.Errorf("outcome = %s, %q, %q; want %s, %q, a message with %q", state, stage, msg, tt.state, tt.stage, tt.msg)
			}
			if got := interrupted(tt.e); got != tt.interrupted {
				t.Errorf("interrupted = %v, want %v", got, tt.interrupted)
			}
		})
	}
}

package agent

import (
	"fmt"
	"strings"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// A manifest's retry policy runs a job again after a failure that may
// pass, after a backoff: the job goes back to pending with a not_before
// (River's scheduled_at), so the wait survives a restart, and the agent
// may exit idle meanwhile (its wake timer starts it again). Each failed
// run is kept in the job's Attempts.

// retryableMarks are what the failures that may pass say: I/O errors and
// sources or hosts that are away for now. An invalid manifest never runs
// and an unbootable result fails in validate: neither is retried.
var retryableMarks = []string{
	"input/output error", "temporarily", "stale file handle", "connection reset",
	"connection refused", "timed out", "transport endpoint", "no route to host",
	"host is down", "resource busy",
}

// retryable reports whether a failure in stage with msg may pass.
func retryable(stage, msg string) bool {
	switch stage {
	case "claim", "schedule", "validate", "start":
		return false
	}
	m := strings.ToLower(msg)
	for _, mark := range retryableMarks {
		if strings.Contains(m, mark) {
			return true
		}
	}
	return false
}

// retryLocked queues r again after its backoff when its policy allows
// another run and the failure is retryable; it reports whether it did.
// Called with a.mu held.
func (a *Agent) retryLocked(r *record, rep *report.Report, stage, msg string) bool {
	if r.Retry == nil || r.Attempt >= r.Retry.MaxAttempts || !retryable(stage, msg) {
		return false
	}
	now := a.now()
	at := now.Add(r.Retry.Delay(r.Attempt))
	r.Attempts = append(r.Attempts, jobs.Attempt{Attempt: r.Attempt, Host: r.Host, Error: msg, Stage: stage, EndedAt: now, RetryAt: at})
	r.NotBefore = at
	a.st.touch(r)
	a.requeueLocked(r, rep, fmt.Sprintf("attempt %d of %d failed (%s); retrying at %s", r.Attempt, r.Retry.MaxAttempts, msg, at.Format(time.RFC3339)))
	return true
}

package agent

import (
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/config"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		stage, msg string
		want       bool
	}{
		{"load", "read /srv/src/disk.vmdk: input/output error", true},
		{"load", "open /mnt/ds01/vm.vmdk: stale file handle", true},
		{"convert", "qemu-img: Could not read image: Resource temporarily unavailable", true},
		{"load", "source is not a VMDK image", false},
		{"validate", "the guest did not boot: input/output error on the console", false},
		{"claim", "invalid manifest", false},
	} {
		if got := retryable(tc.stage, tc.msg); got != tc.want {
			t.Errorf("retryable(%q, %q) = %v, want %v", tc.stage, tc.msg, got, tc.want)
		}
	}
}

// TestRetryWithBackoff: a run that fails with an I/O error is run again,
// not before its backoff (the clock moves; nothing sleeps), each failed
// run is kept in Attempts; a failure that will not pass is final.
func TestRetryWithBackoff(t *testing.T) {
	clock := &testClock{t: time.Date(2026, 12, 24, 1, 0, 0, 0, time.UTC)}
	e := newEnv(t, nil)
	e.opts = []Option{WithClock(clock.now)}
	e.start()
	e.drop("flaky.json", e.manifest("flaky", `"retry":{"max_attempts":3,"initial":"30s","max":"1h"},`))
	u := e.nextStart()
	id := unitJobID(u)
	e.units.finish(t, u, "exit-code", failedReport("load", "read /srv/src/disk.raw: input/output error"))
	waitState := func(want jobs.State) jobs.Job {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			j, _ := e.a.Job(id)
			if j.State == want {
				return j
			}
			if time.Now().After(deadline) {
				t.Fatalf("job is %s, want %s", j.State, want)
			}
		}
	}
	j := waitState(jobs.Pending)
	if len(j.Attempts) != 1 || j.Attempts[0].Attempt != 1 || j.Attempts[0].Stage != "load" ||
		!j.Attempts[0].RetryAt.Equal(clock.now().Add(30*time.Second)) {
		t.Errorf("attempts after the first failure: %+v", j.Attempts)
	}
	e.a.wake()
	select {
	case u := <-e.units.started:
		t.Fatalf("%s started again before its backoff", u)
	case <-time.After(300 * time.Millisecond):
	}
	clock.add(30 * time.Second)
	if u2 := e.nextStart(); u2 != u {
		t.Fatalf("started %s, want %s again", u2, u)
	}
	if j, _ := e.a.Job(id); j.State != jobs.Running {
		t.Fatalf("job %s on its second run", j.State)
	}
	// The second run fails too: the next wait is twice as long.
	e.units.finish(t, u, "exit-code", failedReport("load", "read /srv/src/disk.raw: input/output error"))
	j = waitState(jobs.Pending)
	if len(j.Attempts) != 2 || !j.Attempts[1].RetryAt.Equal(clock.now().Add(time.Minute)) {
		t.Errorf("attempts after the second failure: %+v", j.Attempts)
	}
	clock.add(time.Minute)
	e.nextStart()
	// The third fails for a reason that will not pass: final.
	e.units.finish(t, u, "exit-code", failedReport("load", "source is not a raw image"))
	j = waitState(jobs.Failed)
	if len(j.Attempts) != 2 || j.Error == "" {
		t.Errorf("final: %+v", j)
	}
}

// TestRetryDefaultFromConfig: agent.yaml's job.retry covers a manifest
// without a retry: its retryable failure is run again after the backoff
// the config gives; a manifest's own retry wins.
func TestRetryDefaultFromConfig(t *testing.T) {
	clock := &testClock{t: time.Date(2026, 12, 24, 1, 0, 0, 0, time.UTC)}
	e := newEnv(t, func(c *config.Config) {
		c.Job.Retry = &config.Retry{MaxAttempts: 2, Initial: "45s"}
	})
	e.opts = []Option{WithClock(clock.now)}
	e.start()
	e.drop("plain.json", e.manifest("plain", ""))
	u := e.nextStart()
	id := unitJobID(u)
	e.units.finish(t, u, "exit-code", failedReport("load", "read /srv/src/disk.raw: input/output error"))
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		j, _ := e.a.Job(id)
		if j.State == jobs.Pending && len(j.Attempts) == 1 {
			if !j.Attempts[0].RetryAt.Equal(clock.now().Add(45 * time.Second)) {
				t.Errorf("retry at %s, want 45s after the failure (job.retry.initial)", j.Attempts[0].RetryAt)
			}
			break
		}
		if j.State == jobs.Failed || time.Now().After(deadline) {
			t.Fatalf("job is %s with %d attempts; job.retry should have queued it again", j.State, len(j.Attempts))
		}
	}
}

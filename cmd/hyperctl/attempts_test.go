package main

import (
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// TestShowHostAndAttempts: show names the host that ran the job and lists
// every failed attempt with its host and error; a job never retried has
// no Attempts section, and one never claimed shows its host as "-".
func TestShowHostAndAttempts(t *testing.T) {
	ended := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	fake := &fakeClient{jobs: []jobs.Job{
		{ID: "p1", Name: "pending", State: jobs.Pending, SubmittedBy: -1},
		{ID: "c1", Name: "done", State: jobs.Completed, SubmittedBy: -1, Host: "kvm01"},
		{ID: "r1", Name: "retried", State: jobs.Completed, SubmittedBy: -1, Host: "kvm02", Attempts: []jobs.Attempt{
			{Attempt: 1, Host: "kvm01", Stage: "convert", Error: "read disk0.vmdk: input/output error", EndedAt: ended, RetryAt: ended.Add(30 * time.Second)},
			{Attempt: 2, Host: "kvm02", Error: "interrupted on kvm02\x1b[2J", EndedAt: ended.Add(time.Minute), RetryAt: ended.Add(2 * time.Minute)},
		}},
	}}
	for _, tc := range []struct {
		id      string
		want    []string
		notWant []string
	}{
		{"p1", []string{"Host:", "-"}, []string{"Attempts"}},
		{"c1", []string{"kvm01"}, []string{"Attempts"}},
		{"r1", []string{"kvm02", "Attempts:", "2 failed, retried",
			"1  on kvm01, in convert", "read disk0.vmdk: input/output error",
			"2  on kvm02", "interrupted on kvm02?[2J"}, []string{"\x1b"}},
	} {
		t.Run(tc.id, func(t *testing.T) {
			r := runCLI(t, fake, "show", tc.id)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("output lacks %q:\n%s", w, r.stdout)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(r.stdout, w) {
					t.Errorf("output has %q:\n%s", w, r.stdout)
				}
			}
		})
	}
	// -o json carries them as the agent's record does.
	r := runCLI(t, fake, "-o", "json", "show", "r1")
	for _, w := range []string{`"host": "kvm02"`, `"attempts": [`, `"error": "read disk0.vmdk: input/output error"`} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("json lacks %s:\n%s", w, r.stdout)
		}
	}
}

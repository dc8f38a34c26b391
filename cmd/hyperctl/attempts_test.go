package main

import (
	"fmt"
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
		{"r1", []string{"kvm02", "Attempts:",
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

// TestJobsHostColumn: hyperctl jobs has a HOST column when the jobs were
// claimed by more than one host (a fleet), and none on one host.
func TestJobsHostColumn(t *testing.T) {
	for _, tc := range []struct {
		name  string
		hosts []string
		col   bool
	}{
		{"one host", []string{"kvm01", "kvm01"}, false},
		{"none claimed yet", []string{"", ""}, false},
		{"one host and a pending job", []string{"kvm01", ""}, false},
		{"two hosts", []string{"kvm01", "kvm02", ""}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeClient{}
			for i, h := range tc.hosts {
				fake.jobs = append(fake.jobs, jobs.Job{ID: fmt.Sprintf("j%d", i), Name: "vm", State: jobs.Completed, Host: h, SubmittedBy: -1})
			}
			r := runCLI(t, fake, "jobs")
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			lines := strings.Split(r.stdout, "\n")
			if got := strings.Contains(lines[0], "HOST"); got != tc.col {
				t.Fatalf("HOST column %v, want %v:\n%s", got, tc.col, r.stdout)
			}
			if !tc.col {
				return
			}
			for i, h := range tc.hosts {
				if h == "" {
					h = "-"
				}
				if f := strings.Fields(lines[i+1]); len(f) < 4 || f[3] != h {
					t.Errorf("line %q: host column is not %q", lines[i+1], h)
				}
			}
		})
	}
}

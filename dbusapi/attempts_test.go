package dbusapi

import (
	"reflect"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// TestJobHostAndAttempts: GetJob over a real bus carries the host that
// claimed the job and every failed attempt with its host and error, and a
// job without them reads back without them.
func TestJobHostAndAttempts(t *testing.T) {
	ended := time.UnixMicro(1_796_000_000_000_000)
	retried := ended.Add(30 * time.Second)
	cases := []struct {
		name string
		job  jobs.Job
	}{
		{"never claimed", jobs.Job{ID: "p", State: jobs.Pending, SubmittedBy: -1}},
		{"claimed, no retry", jobs.Job{ID: "r", State: jobs.Running, SubmittedBy: -1, Host: "kvm01"}},
		{"two attempts on two hosts", jobs.Job{ID: "f", State: jobs.Failed, SubmittedBy: -1, Host: "kvm02",
			Attempts: []jobs.Attempt{
				{Attempt: 1, Host: "kvm01", Error: "read /srv/vm.vmdk: input/output error", Stage: "convert", EndedAt: ended, RetryAt: retried},
				{Attempt: 2, Host: "kvm02", Error: "host lost", EndedAt: retried.Add(time.Minute), RetryAt: retried.Add(2 * time.Minute)},
			}}},
	}
	var all []jobs.Job
	for _, tc := range cases {
		all = append(all, tc.job)
	}
	f := newFixture(t, all...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := f.client.GetJob(testCtx(t), tc.job.ID)
			if err != nil {
				t.Fatalf("GetJob: %v", err)
			}
			if got.Host != tc.job.Host {
				t.Errorf("Host = %q, want %q", got.Host, tc.job.Host)
			}
			if !reflect.DeepEqual(got.Attempts, tc.job.Attempts) {
				t.Errorf("Attempts = %+v, want %+v", got.Attempts, tc.job.Attempts)
			}
		})
	}
	// A list (ListJobsPagedEx) carries each job's host, not its attempts.
	list, total, err := f.client.ListJobsPage(testCtx(t), apitype.Filter{}, apitype.Page{OldestFirst: true})
	if err != nil || total != len(cases) || len(list) != len(cases) {
		t.Fatalf("ListJobsPage = %d jobs, total %d, %v", len(list), total, err)
	}
	for i, j := range list {
		if j.ID != cases[i].job.ID || j.Host != cases[i].job.Host || j.Attempts != nil {
			t.Errorf("listed %s host %q attempts %v, want %s host %q", j.ID, j.Host, j.Attempts, cases[i].job.ID, cases[i].job.Host)
		}
	}
}

// TestAttemptsAreDetails: another local user sees that a job ran where it
// ran, but not the attempts' errors, which name files.
func TestAttemptsAreDetails(t *testing.T) {
	j := jobs.Job{ID: "f", SubmittedBy: 1001, Host: "kvm02",
		Attempts: []jobs.Attempt{{Attempt: 1, Host: "kvm01", Error: "read /srv/vm.vmdk: input/output error"}}}
	got := viewer{uid: 1003}.show(j)
	if got.Attempts != nil {
		t.Errorf("attempts shown to another user: %+v", got.Attempts)
	}
	if got.Host != "kvm02" {
		t.Errorf("host hidden from another user: %q", got.Host)
	}
	if got := (viewer{uid: 1001}).show(j); len(got.Attempts) != 1 {
		t.Errorf("attempts hidden from the submitter: %+v", got.Attempts)
	}
}

package api_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// TestJobHostAndAttempts: the job view names the host that claimed the
// job and lists each failed attempt with its host and error; a job never
// retried has none ([]); lists leave attempts out, as they do warnings.
func TestJobHostAndAttempts(t *testing.T) {
	e := newEnv(t, nil)
	ended := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	e.fake.Set(jobs.Job{ID: "q", Name: "q", State: jobs.Completed, FinishedAt: time.Now(), Host: "kvm02"})
	e.fake.Set(jobs.Job{ID: "r", Name: "r", State: jobs.Completed, FinishedAt: time.Now(), Host: "kvm02",
		Attempts: []jobs.Attempt{{Attempt: 1, Host: "kvm01", Stage: "convert", Error: "read r.vmdk: input/output error", EndedAt: ended, RetryAt: ended.Add(time.Minute)}}})
	type view struct {
		Host     string
		Attempts *[]struct {
			Attempt     int
			Host, Error string
			Stage       string
			RetryAt     time.Time `json:"retry_at"`
		}
		DetailsHidden bool `json:"details_hidden"`
	}
	for _, tc := range []struct {
		name     string
		attempts int
	}{
		{"r", 1},
		{"q", 0},
	} {
		a := e.do(t, "GET", "/api/workflow/jobs/"+tc.name, "", token)
		var v view
		if err := json.Unmarshal(a.body, &v); err != nil || a.status != 200 {
			t.Fatalf("%s: GET: %d %v %s", tc.name, a.status, err, a.body)
		}
		if v.Host != "kvm02" {
			t.Errorf("%s: host %q, want kvm02: %s", tc.name, v.Host, a.body)
		}
		if v.Attempts == nil || len(*v.Attempts) != tc.attempts {
			t.Fatalf("%s: %s, want %d attempts", tc.name, a.body, tc.attempts)
		}
		if tc.attempts == 1 {
			at := (*v.Attempts)[0]
			if at.Attempt != 1 || at.Host != "kvm01" || at.Error != "read r.vmdk: input/output error" || at.Stage != "convert" || !at.RetryAt.Equal(ended.Add(time.Minute)) {
				t.Errorf("%s: attempt %+v", tc.name, at)
			}
		}
	}
	a := e.do(t, "GET", "/api/workflow/jobs", "", token)
	var l struct{ Jobs []map[string]any }
	if err := json.Unmarshal(a.body, &l); err != nil || len(l.Jobs) != 2 {
		t.Fatalf("list: %v %s", err, a.body)
	}
	for _, j := range l.Jobs {
		if _, ok := j["attempts"]; ok {
			t.Errorf("the list claims attempts: %v", j)
		}
	}
}

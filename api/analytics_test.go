package api_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/analytics"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

func TestAnalytics(t *testing.T) {
	e := newEnv(t, nil)
	now := time.Now()
	e.fake.Set(jobs.Job{ID: "a", Name: "a", State: jobs.Completed, StartedAt: now.Add(-2 * time.Hour), FinishedAt: now.Add(-time.Hour), ConvertedBytes: 2 << 30,
		StageTimes: []jobs.StageTime{{Stage: "convert", Seconds: 60}}})
	e.fake.Set(jobs.Job{ID: "b", Name: "b", State: jobs.Failed, StartedAt: now.Add(-time.Hour), FinishedAt: now.Add(-time.Minute), ErrorStage: "load", Error: "cannot open /srv/b.vmdk"})
	e.fake.Set(jobs.Job{ID: "c", Name: "c", State: jobs.Completed, StartedAt: now.Add(-20 * 24 * time.Hour), FinishedAt: now.Add(-20 * 24 * time.Hour).Add(time.Hour), ConvertedBytes: 1 << 30})
	tests := []struct {
		query  string
		status int
		jobs   int
	}{
		{"", http.StatusOK, 2},
		{"?since=30d", http.StatusOK, 3},
		{"?since=1h", http.StatusOK, 1},
		{"?since=later", http.StatusBadRequest, 0},
	}
	for _, tc := range tests {
		a := e.do(t, "GET", "/api/workflow/analytics"+tc.query, "", "")
		if a.status != tc.status {
			t.Fatalf("%s: %d %s", tc.query, a.status, a.body)
		}
		if a.status != http.StatusOK {
			continue
		}
		var s analytics.Summary
		if err := json.Unmarshal(a.body, &s); err != nil || s.Jobs != tc.jobs {
			t.Errorf("%s: jobs %d, want %d (%v)\n%s", tc.query, s.Jobs, tc.jobs, err, a.body)
		}
	}
	a := e.do(t, "GET", "/api/workflow/analytics", "", "")
	var s analytics.Summary
	json.Unmarshal(a.body, &s)
	if s.Bytes != 2<<30 || len(s.Stages) != 1 || s.Stages[0].P50 != 60 || len(s.Failures) != 1 || s.Failures[0].Reason != "cannot open PATH" {
		t.Errorf("summary %s", a.body)
	}
}

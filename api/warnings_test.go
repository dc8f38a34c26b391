package api_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// TestJobWarnings: the job view carries the job's warnings and their
// count (0 and [] when it has none); lists, whose rows do not carry
// them, leave both out rather than say 0.
func TestJobWarnings(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.Set(jobs.Job{ID: "w", Name: "w", State: jobs.Completed, FinishedAt: time.Now(),
		Warnings: []string{"no Linux guest found on w.vmdk: FIX was not applied", "second"}})
	e.fake.Set(jobs.Job{ID: "q", Name: "q", State: jobs.Completed, FinishedAt: time.Now()})
	type view struct {
		Warnings     *[]string `json:"warnings"`
		WarningCount *int      `json:"warning_count"`
	}
	for id, n := range map[string]int{"w": 2, "q": 0} {
		a := e.do(t, "GET", "/api/workflow/jobs/"+id, "", token)
		var v view
		if err := json.Unmarshal(a.body, &v); err != nil || a.status != 200 {
			t.Fatalf("GET %s: %d %v %s", id, a.status, err, a.body)
		}
		if v.Warnings == nil || len(*v.Warnings) != n || v.WarningCount == nil || *v.WarningCount != n {
			t.Errorf("GET %s: %s, want %d warnings counted", id, a.body, n)
		}
	}
	a := e.do(t, "GET", "/api/workflow/jobs", "", "")
	var l struct{ Jobs []map[string]any }
	if err := json.Unmarshal(a.body, &l); err != nil || len(l.Jobs) != 2 {
		t.Fatalf("list: %v %s", err, a.body)
	}
	for _, j := range l.Jobs {
		if _, ok := j["warning_count"]; ok {
			t.Errorf("the list claims a warning count: %v", j)
		}
	}
}

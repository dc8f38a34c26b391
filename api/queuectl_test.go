package api_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// TestReprioritize: POST /jobs/{id}/priority changes a pending job's
// priority (the job in the answer and in the next GET says so); it is a
// write (token), and the agent's refusals keep their status.
func TestReprioritize(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.Set(jobs.Job{ID: "p", Name: "p", State: jobs.Pending, Priority: 0})
	e.fake.Set(jobs.Job{ID: "r", Name: "r", State: jobs.Running})
	for _, tc := range []struct {
		name, id, body, tok string
		status              int
		code                string
	}{
		{"no token", "p", `{"priority": 50}`, "", http.StatusUnauthorized, "unauthorized"},
		{"not JSON", "p", `fifty`, token, http.StatusBadRequest, "bad-request"},
		{"no priority", "p", `{}`, token, http.StatusBadRequest, "bad-request"},
		{"not a whole number", "p", `{"priority": 1.5}`, token, http.StatusBadRequest, "bad-request"},
		{"out of range", "p", `{"priority": 500}`, token, http.StatusBadRequest, "invalid-args"},
		{"running job", "r", `{"priority": 5}`, token, http.StatusConflict, "invalid-state"},
		{"no such job", "nope", `{"priority": 5}`, token, http.StatusNotFound, "no-such-job"},
		{"pending job", "p", `{"priority": 50}`, token, http.StatusOK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := e.do(t, "POST", "/api/workflow/jobs/"+tc.id+"/priority", tc.body, tc.tok)
			if a.status != tc.status {
				t.Fatalf("%d, want %d: %s", a.status, tc.status, a.body)
			}
			if tc.code != "" {
				if c := a.errCode(t); c != tc.code {
					t.Errorf("code %s, want %s", c, tc.code)
				}
				return
			}
			var ans struct {
				Success bool
				Job     struct{ Priority int }
			}
			if err := json.Unmarshal(a.body, &ans); err != nil || !ans.Success || ans.Job.Priority != 50 {
				t.Errorf("answer %s (%v)", a.body, err)
			}
		})
	}
	a := e.do(t, "GET", "/api/workflow/jobs/p", "", token)
	if m := a.json(t); m["priority"] != 50.0 {
		t.Errorf("after: priority %v, want 50", m["priority"])
	}
}

// TestQueueControl: POST /queue/{pause,resume,drain} sets this host's
// queue state, which /status and /hosts then show; a write (token); an
// unknown action is 404; polkit's no is 403.
func TestQueueControl(t *testing.T) {
	e := newEnv(t, nil)
	if a := e.do(t, "POST", "/api/workflow/queue/drain", "", ""); a.status != http.StatusUnauthorized {
		t.Fatalf("without token: %d %s", a.status, a.body)
	}
	if a := e.do(t, "GET", "/api/workflow/queue/drain", "", token); a.status != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d %s", a.status, a.body)
	}
	if a := e.do(t, "POST", "/api/workflow/queue/stop", "", token); a.status != http.StatusNotFound || a.errCode(t) != "not-found" {
		t.Errorf("stop: %d %s", a.status, a.body)
	}
	for _, tc := range []struct{ action, state string }{{"drain", "draining"}, {"pause", "paused"}, {"resume", "running"}} {
		a := e.do(t, "POST", "/api/workflow/queue/"+tc.action, "", token)
		if a.status != http.StatusOK || a.json(t)["queue"] != tc.state {
			t.Fatalf("%s: %d %s", tc.action, a.status, a.body)
		}
		if st := e.do(t, "GET", "/api/workflow/status", "", "").json(t); st["queue"] != tc.state {
			t.Errorf("%s: status says queue %v", tc.action, st["queue"])
		}
		var hs struct{ Hosts []apitype.Host }
		if err := json.Unmarshal(e.do(t, "GET", "/api/workflow/hosts", "", "").body, &hs); err != nil || hs.Hosts[0].Queue != tc.state {
			t.Errorf("%s: hosts %+v %v", tc.action, hs, err)
		}
	}
	e.fake.DenyQueue(&apierr.Error{Kind: apierr.AccessDenied, Message: "cannot drain the queue: not authorized (io.hyper2kvm.agent.manage)"})
	if a := e.do(t, "POST", "/api/workflow/queue/drain", "", token); a.status != http.StatusForbidden || a.errCode(t) != "access-denied" {
		t.Errorf("denied: %d %s", a.status, a.body)
	}
}

// TestSchedules: GET /schedules lists schedules.d with the next firing,
// open as /hosts; none is [] not null.
func TestSchedules(t *testing.T) {
	e := newEnv(t, nil)
	if a := e.do(t, "GET", "/api/workflow/schedules", "", ""); a.status != 200 || string(a.body) != "{\"schedules\":[]}\n" {
		t.Fatalf("none: %d %q", a.status, a.body)
	}
	next := time.Date(2026, 12, 8, 2, 0, 0, 0, time.UTC)
	e.fake.SetSchedules([]apitype.Schedule{
		{Name: "nightly", File: "/etc/hyper2kvm/schedules.d/nightly.yaml", Cron: "0 2 * * *", Template: "web", Next: next, LastJobs: []string{"j1"}},
		{Error: "/etc/hyper2kvm/schedules.d/bad.yaml: cron: want 5 fields"},
	})
	a := e.do(t, "GET", "/api/workflow/schedules", "", "")
	var out struct{ Schedules []apitype.Schedule }
	if err := json.Unmarshal(a.body, &out); err != nil || a.status != 200 {
		t.Fatalf("%d %v %s", a.status, err, a.body)
	}
	if len(out.Schedules) != 2 || out.Schedules[0].Name != "nightly" || !out.Schedules[0].Next.Equal(next) ||
		out.Schedules[1].Name != "" || out.Schedules[1].Error == "" {
		t.Errorf("schedules: %s", a.body)
	}
}

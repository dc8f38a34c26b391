package test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestWorkflowSchedule: a schedule in schedules.d firing every minute
// submits its manifest as an ordinary job that completes, exactly one job
// per firing; hyperctl schedules lists it with its next run and the job
// the last run submitted, and names the file and field of a schedule that
// does not parse.
func TestWorkflowSchedule(t *testing.T) {
	t.Parallel()
	b := workflowBox(t, map[string]string{
		"/srv/wf/nightly.json":                    manifestFor("nightly", "/srv/wf/disk.vmdk", "vmdk", ""),
		"/etc/hyper2kvm/schedules.d/nightly.yaml": "cron: '* * * * *'\nmanifest: /srv/wf/nightly.json\n",
		"/etc/hyper2kvm/schedules.d/broken.yaml":  "cron: '0 25 * * *'\nmanifest: /srv/wf/nightly.json\n",
	})
	ctx := hyperctlCtx(t, 5*time.Minute)
	type sched struct {
		Name     string    `json:"name"`
		Cron     string    `json:"cron"`
		Next     time.Time `json:"next_run"`
		LastRun  time.Time `json:"last_run"`
		LastJobs []string  `json:"last_jobs"`
		Error    string    `json:"error"`
	}
	list := func() []sched {
		out, errOut, _ := hyperctlRun(ctx, t, b, "", "-o", "json", "schedules")
		var res struct {
			Schedules []sched `json:"schedules"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("hyperctl schedules: %v\n%s%s", err, out, errOut)
		}
		return res.Schedules
	}
	// hyperctl schedules activates the agent, which starts River's
	// client with the schedule as a periodic job.
	ss := list()
	if len(ss) != 2 || ss[0].Name != "nightly" || ss[0].Cron != "* * * * *" || ss[0].Next.IsZero() || !ss[0].LastRun.IsZero() {
		t.Fatalf("hyperctl schedules: %+v, want nightly not yet run, then broken.yaml refused", ss)
	}
	if !strings.Contains(ss[1].Error, "broken.yaml: cron:") {
		t.Errorf("broken.yaml's problem: %q, want one naming the file and the cron field", ss[1].Error)
	}
	var fired sched
	fireCtx, cancel := context.WithTimeout(ctx, 150*time.Second) // a firing a minute
	defer cancel()
	if err := b.WaitFor(fireCtx, "the schedule to fire", func() (bool, error) {
		ss := list()
		fired = ss[0]
		return len(fired.LastJobs) > 0 || fired.Error != "", nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, b.Journal(ctx, "-u", "hyper2kvmd.service"))
	}
	if len(fired.LastJobs) != 1 || fired.Error != "" || fired.LastRun.IsZero() {
		t.Fatalf("the firing: %+v, want one job", fired)
	}
	id := fired.LastJobs[0]
	state := ""
	if err := b.WaitFor(ctx, "the scheduled job to finish", func() (bool, error) {
		out, _, _ := hyperctlRun(ctx, t, b, "", "-o", "json", "show", id)
		var j struct {
			Status string `json:"status"`
		}
		json.Unmarshal([]byte(out), &j)
		state = j.Status
		return state == "completed" || state == "failed" || state == "cancelled", nil
	}); err != nil {
		t.Fatal(err)
	}
	journal := b.Journal(ctx, "-u", "hyper2kvmd.service")
	if state != "completed" {
		t.Fatalf("scheduled job %s: %s\n%s", id, state, journal)
	}
	// An ordinary job: it is listed, and every job named nightly came
	// from one firing each (the journal's count of firings).
	out := b.MustExec(t, "hyperctl", "-o", "json", "jobs", "--all")
	var js struct {
		Jobs []struct{ ID, Name string } `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(out), &js); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	n := 0
	for _, j := range js.Jobs {
		if j.Name == "nightly" {
			n++
		}
	}
	journal = b.Journal(ctx, "-u", "hyper2kvmd.service")
	if firings := strings.Count(journal, "schedule nightly ("); n == 0 || n != firings {
		t.Errorf("%d jobs named nightly, %d firings in the journal; want one job per firing\n%s", n, firings, journal)
	}
	if !strings.Contains(journal, "broken.yaml: cron:") {
		t.Errorf("the agent did not name broken.yaml's cron field at start\n%s", journal)
	}
}

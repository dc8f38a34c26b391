package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// TestFleetViewMerges: the list is this host's jobs and the other hosts'
// in creation order, a job this host took since listed once (its own
// record), and another host's job read by id.
func TestFleetViewMerges(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	rec := func(id, host string, min int) *record {
		return &record{Job: jobs.Job{ID: id, Host: host, State: jobs.Pending, CreatedAt: t0.Add(time.Duration(min) * time.Minute)}}
	}
	a := &Agent{st: newState(), now: func() time.Time { return t0 }}
	for _, r := range []*record{rec("own1", "a", 1), rec("own3", "a", 3), rec("took", "a", 4)} {
		a.st.add(r)
	}
	a.fleet = &fleetView{jobs: map[string]*record{}}
	for _, r := range []*record{rec("b0", "b", 0), rec("b2", "b", 2), rec("took", "b", 4), rec("b5", "b", 5)} {
		a.fleet.jobs[r.ID] = r
		a.fleet.order = append(a.fleet.order, r)
	}
	list, total := a.JobPage(apitype.Filter{}, apitype.Page{OldestFirst: true})
	var ids []string
	for _, j := range list {
		ids = append(ids, j.ID+"@"+j.Host)
	}
	if got, want := strings.Join(ids, " "), "b0@b own1@a b2@b own3@a took@a b5@b"; got != want || total != 6 {
		t.Errorf("list = %s (%d), want %s (6)", got, total, want)
	}
	if j, err := a.Job("b2"); err != nil || j.Host != "b" {
		t.Errorf("Job(b2) = %+v, %v", j, err)
	}
	if err := a.Cancel(t.Context(), "b2"); err == nil || !strings.Contains(err.Error(), "is b's") {
		t.Errorf("Cancel of b's job: %v", err)
	}
}

package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// TestFleetViewMerges: the list is this host's jobs and the other hosts'
// in creation order, either way and filtered, and another host's job is
// read by id (and cancelled on its host).
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
	for _, r := range []*record{rec("b0", "b", 0), rec("b2", "b", 2), rec("b5", "b", 5)} {
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
	list, total = a.JobPage(apitype.Filter{}, apitype.Page{Offset: 1, Limit: 3})
	ids = ids[:0]
	for _, j := range list {
		ids = append(ids, j.ID)
	}
	if got, want := strings.Join(ids, " "), "took own3 b2"; got != want || total != 6 {
		t.Errorf("newest first, offset 1, limit 3 = %s (%d), want %s (6)", got, total, want)
	}
	a.fleet.jobs["b2"].State = jobs.Running
	list, total = a.JobPage(apitype.Filter{States: []jobs.State{jobs.Pending}}, apitype.Page{Limit: 2})
	if len(list) != 2 || list[0].ID != "b5" || list[1].ID != "took" || total != 5 {
		t.Errorf("pending, newest first, limit 2 = %+v (%d)", list, total)
	}
	if j, err := a.Job("b2"); err != nil || j.Host != "b" {
		t.Errorf("Job(b2) = %+v, %v", j, err)
	}
	if err := a.Cancel(t.Context(), "b2"); err == nil || !strings.Contains(err.Error(), "is b's") {
		t.Errorf("Cancel of b's job: %v", err)
	}
}

// BenchmarkFleetJobPage: a page of 100 among 10,000 jobs, half of them
// another host's (the merge JobPage does on a fleet).
func BenchmarkFleetJobPage(b *testing.B) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	a := &Agent{st: newState(), now: func() time.Time { return t0 }, fleet: &fleetView{jobs: map[string]*record{}}}
	for i := range 10000 {
		r := &record{Job: jobs.Job{ID: fmt.Sprintf("j%05d", i), State: jobs.Completed, CreatedAt: t0.Add(time.Duration(i) * time.Second)}}
		if i%2 == 0 {
			a.st.add(r)
			continue
		}
		a.fleet.jobs[r.ID] = r
		a.fleet.order = append(a.fleet.order, r)
	}
	b.ResetTimer()
	for b.Loop() {
		if list, total := a.JobPage(apitype.Filter{}, apitype.Page{Limit: 100}); len(list) != 100 || total != 10000 {
			b.Fatal(len(list), total)
		}
	}
}

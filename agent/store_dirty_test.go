package agent

import (
	"context"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/config"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
)

// TestEveryChangeIsSaved: save writes only the jobs and claims their code
// marked changed, so a change not marked is lost at a restart. Every
// agent test checks after each save that nothing changed unmarked
// (checkSaved, installed by env.start); this one drives each kind of
// change a job goes through with a save of another job in between, so
// that an unmarked change cannot hide behind a later mark of the same
// job: progress, the unit's invocation, a reprioritize, a cancel, a run's
// end, a claim's settling. The database is then compared with memory and
// read again by a restarted agent.
func TestEveryChangeIsSaved(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.MaxConcurrentJobs = 1 })
	e.start()
	ctx := context.Background()
	saveNow := func() {
		e.a.mu.Lock()
		e.a.save()
		e.a.mu.Unlock()
	}
	e.drop("web01.json", e.manifest("web01", ""))
	unit := e.nextStart()
	e.drop("web02.json", e.manifest("web02", ""))
	e.drop("web03.json", e.manifest("web03", ""))
	e.waitFor("three jobs", func() bool { _, n := e.a.JobPage(apitype.Filter{}, apitype.Page{Limit: 10}); return n == 3 })
	web01, web02, web03 := e.jobID("web01"), e.jobID("web02"), e.jobID("web03")

	e.units.status(unit, "convert 42% 42/100: web01.qcow2")
	e.waitFor("progress", func() bool {
		e.a.mu.Lock()
		defer e.a.mu.Unlock()
		return e.a.st.Jobs[web01].Progress == 42
	})
	saveNow()
	if err := e.a.Reprioritize(ctx, web03, 7); err != nil {
		t.Fatal(err)
	}
	if err := e.a.Cancel(ctx, web02); err != nil {
		t.Fatal(err)
	}
	e.waitSettled(queue.Failed, "web02.json")
	e.units.finish(t, unit, "success", completed("web01"))
	e.waitSettled(queue.Processed, "web01.json")
	unit = e.nextStart()
	if unitJobID(unit) != web03 {
		t.Fatalf("started %s, want web03's unit", unit)
	}
	e.units.status(unit, "inspect 5%")
	e.waitFor("web03's stage", func() bool {
		e.a.mu.Lock()
		defer e.a.mu.Unlock()
		return e.a.st.Jobs[web03].Stage == "inspect"
	})
	saveNow()

	e.a.mu.Lock()
	got, err := e.a.st.db.load(ctx)
	if err == nil {
		err = storeDiff(got, e.a.st)
	}
	want := map[string]string{}
	for id, r := range e.a.st.Jobs {
		want[id] = asJSON(r)
	}
	e.a.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	e.stop()
	e.start()
	e.a.mu.Lock()
	defer e.a.mu.Unlock()
	for _, id := range []string{web01, web02} {
		if r := e.a.st.Jobs[id]; r == nil || asJSON(r) != want[id] {
			t.Errorf("after a restart job %s is %s, want %s", id, asJSON(r), want[id])
		}
	}
	if r := e.a.st.Jobs[web03]; r == nil || r.Priority != 7 || r.State != jobs.Running {
		t.Errorf("after a restart web03 is %s", asJSON(r))
	}
}

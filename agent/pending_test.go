package agent

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/config"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
)

func TestPendingOrder(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := func(id string, prio int, file, created time.Duration) *record {
		return &record{Job: jobs.Job{ID: id, Priority: prio, State: jobs.Pending, CreatedAt: t0.Add(created)}, FileTime: t0.Add(file)}
	}
	cases := []struct {
		name   string
		first  *record
		second *record
	}{
		{"higher priority first", rec("b", 5, time.Hour, time.Hour), rec("a", 0, 0, 0)},
		{"negative priority last", rec("b", 0, time.Hour, time.Hour), rec("a", -1, 0, 0)},
		{"same priority: older file first", rec("b", 1, 0, time.Hour), rec("a", 1, time.Minute, 0)},
		{"same file time: older job first", rec("b", 1, 0, 0), rec("a", 1, 0, time.Second)},
		{"all equal: smaller id first", rec("a", 1, 0, 0), rec("b", 1, 0, 0)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !pendingBefore(c.first, c.second) || pendingBefore(c.second, c.first) {
				t.Errorf("%s must start before %s", c.first.ID, c.second.ID)
			}
			// Through the queue, whichever is added first.
			for _, in := range [][]*record{{c.first, c.second}, {c.second, c.first}} {
				q := newPendingQueue()
				all := map[string]*record{}
				for _, r := range in {
					all[r.ID] = r
					q.add(r)
				}
				if got := q.next(all, map[string]int{}); got != c.first {
					t.Errorf("added %s, %s: next is %s, want %s", in[0].ID, in[1].ID, got.ID, c.first.ID)
				}
			}
		})
	}
}

// oldSchedule is the scheduler the queue replaced: sort every pending job,
// then start in that order, skipping batches at their concurrency.
func oldSchedule(all map[string]*record, max int, start func(*record) bool) {
	running := 0
	perBatch := map[string]int{}
	var pending []*record
	for _, r := range all {
		switch r.State {
		case jobs.Running:
			running++
			if r.Batch != "" {
				perBatch[r.Batch]++
			}
		case jobs.Pending:
			pending = append(pending, r)
		}
	}
	sort.Slice(pending, func(i, j int) bool { return pendingBefore(pending[i], pending[j]) })
	for _, r := range pending {
		if running >= max {
			return
		}
		if r.Batch != "" && r.Concurrency > 0 && perBatch[r.Batch] >= r.Concurrency {
			continue
		}
		if start(r) {
			running++
			if r.Batch != "" {
				perBatch[r.Batch]++
			}
		}
	}
}

// TestPendingQueueStartsWhatTheSortDid runs the old and the new scheduler
// side by side over random histories (new jobs, batches with their
// concurrency, jobs ending, put back to pending, cancelled, failing to
// start) and wants the same jobs started in the same order every time.
func TestPendingQueueStartsWhatTheSortDid(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 7))
		t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		// Two copies of the same store, one per scheduler.
		oldAll, newAll := map[string]*record{}, map[string]*record{}
		q := newPendingQueue()
		max := 1 + rng.IntN(4)
		n := 0
		addJob := func(batch string, conc int) {
			n++
			r := record{Job: jobs.Job{ID: fmt.Sprintf("%08x", n), Priority: rng.IntN(3) - 1, State: jobs.Pending,
				CreatedAt: t0.Add(time.Duration(rng.IntN(5)) * time.Second), Batch: batch},
				FileTime: t0.Add(time.Duration(rng.IntN(5)) * time.Minute), Concurrency: conc}
			o, w := r, r
			oldAll[r.ID], newAll[r.ID] = &o, &w
			q.add(&w)
		}
		both := func(f func(all map[string]*record)) { f(oldAll); f(newAll) }
		pick := func(state jobs.State) string {
			var ids []string
			for id, r := range oldAll {
				if r.State == state {
					ids = append(ids, id)
				}
			}
			if len(ids) == 0 {
				return ""
			}
			slices.Sort(ids)
			return ids[rng.IntN(len(ids))]
		}
		for step := range 60 {
			switch op := rng.IntN(10); {
			case op < 4:
				batch, conc := "", 0
				if rng.IntN(3) == 0 {
					// A batch's jobs share its concurrency (one claim's).
					b := rng.IntN(3)
					batch, conc = fmt.Sprintf("b%d", b), 1+b%2
				}
				for range 1 + rng.IntN(4) {
					addJob(batch, conc)
				}
			case op < 6:
				if id := pick(jobs.Running); id != "" {
					both(func(all map[string]*record) { all[id].State = jobs.Completed })
				}
			case op == 6:
				if id := pick(jobs.Running); id != "" {
					both(func(all map[string]*record) { all[id].State = jobs.Pending })
				}
			case op == 7:
				if id := pick(jobs.Pending); id != "" {
					both(func(all map[string]*record) { all[id].State = jobs.Cancelled })
				}
			}
			// Some starts fail: the job fails, or stays pending (the
			// system is shutting down).
			fail := map[string]jobs.State{}
			if rng.IntN(5) == 0 {
				for id, r := range oldAll {
					if r.State == jobs.Pending && rng.IntN(4) == 0 {
						fail[id] = []jobs.State{jobs.Failed, jobs.Pending}[rng.IntN(2)]
					}
				}
			}
			starter := func(got *[]string) func(r *record) bool {
				return func(r *record) bool {
					*got = append(*got, r.ID)
					if s, ok := fail[r.ID]; ok {
						r.State = s
						return false
					}
					r.State = jobs.Running
					return true
				}
			}
			var want, got []string
			oldSchedule(oldAll, max, starter(&want))
			q.dispatch(newAll, max, starter(&got))
			// A job whose start failed but stays pending is tried again by
			// the old scheduler in the same pass at most once as well.
			if !slices.Equal(want, got) {
				for _, id := range slices.Sorted(maps.Keys(oldAll)) {
					r := oldAll[id]
					t.Logf("%s %s prio %d file %v created %v batch %q conc %d", id, r.State, r.Priority, r.FileTime.Minute(), r.CreatedAt.Second(), r.Batch, r.Concurrency)
				}
				t.Fatalf("seed %d step %d (max %d): started %v, want %v (failing %v)", seed, step, max, got, want, fail)
			}
		}
	}
}

func TestManyPendingJobsStartInOrder(t *testing.T) {
	const n = 300
	e := newEnv(t, func(c *config.Config) { c.MaxConcurrentJobs = 3; c.MaxQueued = n })
	if _, err := queue.Open(e.cfg.ManifestWorkflowDir, queue.Options{}); err != nil {
		t.Fatal(err)
	}
	// Dropped while the agent is down, so all are pending at once.
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Now().Add(-time.Hour)
	type drop struct {
		name string
		prio int
		at   time.Time
	}
	var drops []drop
	for i := range n {
		d := drop{fmt.Sprintf("vm%03d", i), rng.IntN(5) - 2, base.Add(time.Duration(rng.IntN(n)) * time.Second)}
		drops = append(drops, d)
		e.drop(d.name+".json", e.manifest(d.name, fmt.Sprintf(`"priority":%d,`, d.prio)))
		p := filepath.Join(e.cfg.ManifestWorkflowDir, queue.ToBeProcessed, d.name+".json")
		if err := os.Chtimes(p, d.at, d.at); err != nil {
			t.Fatal(err)
		}
	}
	want := slices.Clone(drops)
	slices.SortStableFunc(want, func(a, b drop) int {
		switch {
		case a.prio != b.prio:
			return b.prio - a.prio
		case !a.at.Equal(b.at):
			return a.at.Compare(b.at)
		}
		return 0 // same priority and file time: job creation order, checked below
	})
	e.start()
	name := func(u string) string {
		j, _ := e.a.Job(unitJobID(u))
		return j.Name
	}
	var got []string
	var running []string
	for len(got) < n {
		u := e.nextStart()
		got = append(got, name(u))
		running = append(running, u)
		if len(running) == 3 || len(got) == n {
			e.units.finish(t, running[0], "success", completed(name(running[0])))
			running = running[1:]
		}
	}
	for i := range want {
		w := want[i]
		g := drops[slices.IndexFunc(drops, func(d drop) bool { return d.name == got[i] })]
		if g.prio != w.prio || !g.at.Equal(w.at) {
			t.Fatalf("start %d is %s (priority %d, file %s), want priority %d, file %s (start order %v)",
				i, g.name, g.prio, g.at.Format(time.TimeOnly), w.prio, w.at.Format(time.TimeOnly), got)
		}
	}
}

// BenchmarkSchedule10kPending is one schedule call with 10,000 jobs
// pending and every slot taken (what each unit change costs): "sort" is
// the scheduler the queue replaced, "queue" the queue.
func BenchmarkSchedule10kPending(b *testing.B) {
	all := map[string]*record{}
	q := newPendingQueue()
	t0 := time.Now()
	for i := range 10000 {
		r := &record{Job: jobs.Job{ID: fmt.Sprintf("%08x", i), Priority: i % 3, State: jobs.Pending, CreatedAt: t0},
			FileTime: t0.Add(time.Duration(i%977) * time.Second)}
		all[r.ID] = r
	}
	never := func(*record) bool { b.Fatal("started a job with every slot taken"); return false }
	for i := range 3 {
		all[fmt.Sprintf("%08x", i)].State = jobs.Running
	}
	b.Run("sort", func(b *testing.B) {
		for range b.N {
			oldSchedule(all, 3, never)
		}
	})
	b.Run("queue", func(b *testing.B) {
		for range b.N {
			q.dispatch(all, 3, never)
		}
	})
}

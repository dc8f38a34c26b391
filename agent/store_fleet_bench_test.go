package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/config"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
	"github.com/hyper2kvm/hyper2kvm/test/pgcluster"
)

// The store benchmarks of a whole agent (bench/store.sh runs them with
// HYPER2KVM_BENCH=1; go test alone skips them): agents in this process
// with systemd faked (fakeUnits: a unit "runs" until the benchmark ends
// it), on SQLite and on a throwaway PostgreSQL with fsync on. Each prints
// one line "BENCH {json}" per case for the script to collect.

func benchOnly(t *testing.T) {
	t.Helper()
	if os.Getenv("HYPER2KVM_BENCH") == "" {
		t.Skip("a benchmark: bench/store.sh runs it")
	}
}

// benchLine prints one case for bench/store.sh.
func benchLine(t *testing.T, v map[string]any) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("BENCH %s\n", data)
}

// stats is p50, p99 and max of ds in milliseconds (nearest rank).
func stats(ds []time.Duration) map[string]float64 {
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(ds)) + 0.999999)
		return ds[max(0, min(i-1, len(ds)-1))]
	}
	return map[string]float64{"n": float64(len(ds)), "p50_ms": ms(rank(0.50)), "p99_ms": ms(rank(0.99)), "max_ms": ms(ds[len(ds)-1])}
}

// benchEnv is an agent for a benchmark: the test's after-save check off,
// store url ("" SQLite), host name host, at most workers jobs at once.
func benchEnv(t *testing.T, url, host string, workers int) *env {
	e := newEnv(t, func(c *config.Config) {
		c.MaxConcurrentJobs, c.MaxQueued = workers, 1000000
		c.Store.URL, c.Host.Name = url, host
	})
	return e
}

func (e *env) startBench() {
	e.start()
	e.a.mu.Lock()
	e.a.st.saved = nil // the tests' check reads the store at every save
	e.a.mu.Unlock()
}

// dropMany drops n manifests named prefix-NNNNN at once.
func (e *env) dropMany(prefix string, n int) {
	e.t.Helper()
	tbp := filepath.Join(e.cfg.ManifestWorkflowDir, queue.ToBeProcessed)
	if err := os.MkdirAll(tbp, 0o755); err != nil {
		e.t.Fatal(err)
	}
	for i := range n {
		name := fmt.Sprintf("%s-%05d", prefix, i)
		if err := os.WriteFile(filepath.Join(tbp, "."+name), []byte(e.manifest(name, "")), 0o644); err != nil {
			e.t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(tbp, "."+name), filepath.Join(tbp, name+".json")); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *env) total() int {
	_, n := e.a.JobPage(apitype.Filter{}, apitype.Page{Limit: 1})
	return n
}

// nameOfUnit is the job name of a unit's job.
func (e *env) nameOfUnit(unit string) string {
	j, _ := e.a.Job(unitJobID(unit))
	return j.Name
}

// TestBenchClaimToStart: with 1,000 and 10,000 jobs queued and one job
// at a time, the time from a job's unit ending to the next queued job's
// unit being started: what the agent does per job between two runs (the
// ended job saved final, its file settled into processed/ and saved, the
// next job claimed from the queue, saved running, its unit started). On
// SQLite and on PostgreSQL.
func TestBenchClaimToStart(t *testing.T) {
	benchOnly(t)
	const runs = 200
	for _, db := range []string{"sqlite", "postgresql"} {
		url := ""
		if db == "postgresql" {
			url = pgcluster.StartDurable(t).URL // for both sizes: this test's, not a subtest's
		}
		for _, queued := range []int{1000, 10000} {
			t.Run(fmt.Sprintf("%s-%d", db, queued), func(t *testing.T) {
				e := benchEnv(t, url, fmt.Sprintf("bench-%d", queued), 1)
				e.dropMany("q", queued+runs+1)
				t0 := time.Now()
				e.startBench()
				// The start claims every file before the first job starts:
				// longer than env's deadlines at 10,000.
				var unit string
				select {
				case unit = <-e.units.started:
				case <-time.After(10 * time.Minute):
					t.Fatal("no job unit started")
				}
				for e.total() != queued+runs+1 {
					time.Sleep(10 * time.Millisecond)
				}
				claimed := time.Since(t0)
				var ds []time.Duration
				for range runs {
					name := e.nameOfUnit(unit)
					start := time.Now()
					e.units.finish(t, unit, "success", completed(name))
					unit = e.nextStart()
					ds = append(ds, time.Since(start))
				}
				e.stop()
				benchLine(t, map[string]any{"case": "claim-to-unit-start", "db": db, "queued": queued, "latency": stats(ds),
					"claim_all_s": claimed.Seconds()})
				t.Logf("%s, %d queued: %v (all %d claimed in %s)", db, queued, stats(ds), queued+runs+1, claimed.Round(time.Millisecond))
			})
		}
	}
}

// TestBenchFleetThroughput: trivial jobs (each unit ends as soon as it
// starts) through one agent, and through two agents on one PostgreSQL
// (each its own drop folder, half the files each), 4 at once per agent:
// jobs per minute, what claim and store contention cost (not conversion
// speed). Both agents run in this process, on this machine's cores.
func TestBenchFleetThroughput(t *testing.T) {
	benchOnly(t)
	const n = 400
	pg := pgcluster.StartDurable(t)
	for _, agents := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d-agents", agents), func(t *testing.T) {
			var es []*env
			for i := range agents {
				e := benchEnv(t, pg.URL, fmt.Sprintf("fleet%d-host%d", agents, i), 4)
				e.dropMany(fmt.Sprintf("f%d", i), n/agents)
				es = append(es, e)
			}
			t0 := time.Now()
			done := make(chan int, agents)
			for _, e := range es {
				e.startBench()
				go func(e *env) {
					for range n / agents {
						unit := <-e.units.started
						e.units.finish(t, unit, "success", completed(e.nameOfUnit(unit)))
					}
					done <- 1
				}(e)
			}
			for range agents {
				<-done
			}
			for _, e := range es {
				e.waitFor("every file settled", func() bool {
					e.a.mu.Lock()
					defer e.a.mu.Unlock()
					n := 0
					for _, r := range e.a.st.live {
						if !r.State.Ready() || e.a.st.Claims[r.Claim] != nil {
							n++
						}
					}
					return n == 0
				})
			}
			elapsed := time.Since(t0)
			for _, e := range es {
				e.stop()
			}
			rows := pg.SQL(t, fmt.Sprintf(`SELECT count(*) FROM river_job WHERE kind = '%s' AND state = 'completed' AND metadata->>'host' LIKE 'fleet%d-%%'`, jobKind, agents))
			benchLine(t, map[string]any{"case": "fleet-throughput", "agents": agents, "jobs": n, "seconds": elapsed.Seconds(),
				"jobs_per_minute": float64(n) / elapsed.Minutes(), "completed_rows": strings.TrimSpace(rows)})
			t.Logf("%d agents: %d jobs in %s: %.0f jobs/min (completed rows %s)", agents, n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Minutes(), strings.TrimSpace(rows))
		})
	}
}

// BenchmarkStoreList: what ListJobsPaged and REST /jobs serve (JobPage:
// the first 50 jobs, newest first; a state filter; and the first page
// encoded as JSON, as REST sends it) at 10,000 and 100,000 finished jobs
// in the SQLite store, and the load of that store at start.
func BenchmarkStoreList(b *testing.B) {
	for _, finished := range []int{10000, 100000} {
		dir := b.TempDir()
		start := time.Now()
		s := benchStore(b, dir, finished, 0)
		insert := time.Since(start)
		now := time.Date(2026, 12, 7, 15, 0, 0, 0, time.UTC)
		a := &Agent{st: s, now: func() time.Time { return now }, started: now}
		measure := func(name string, n int, f func()) {
			ds := make([]time.Duration, 0, n)
			for range n {
				t := time.Now()
				f()
				ds = append(ds, time.Since(t))
			}
			st := stats(ds)
			b.ReportMetric(st["p99_ms"], name+"-p99-ms")
			line, _ := json.Marshal(map[string]any{"case": "list", "what": name, "finished": finished, "latency": st})
			fmt.Printf("BENCH %s\n", line)
		}
		b.Run(fmt.Sprint(finished), func(b *testing.B) {
			for b.Loop() {
			}
			measure("JobPage-first-50", 1000, func() { a.JobPage(apitype.Filter{}, apitype.Page{Limit: 50}) })
			measure("JobPage-page-100-of-50", 1000, func() { a.JobPage(apitype.Filter{}, apitype.Page{Offset: 5000, Limit: 50}) })
			measure("JobPage-failed-filter-50", 200, func() { a.JobPage(apitype.Filter{States: []jobs.State{jobs.Failed}}, apitype.Page{Limit: 50}) })
			measure("JobPage-first-50-as-JSON", 1000, func() {
				list, total := a.JobPage(apitype.Filter{}, apitype.Page{Limit: 50})
				json.Marshal(map[string]any{"jobs": list, "total": total})
			})
			measure("Status", 200, func() { a.Status() })
			measure("start-load", 3, func() {
				got, err := openStore("sqlite://"+filepath.Join(dir, "jobs.db"), "testhost", dir, NewLogger(os.Stderr, false))
				if err != nil {
					b.Fatal(err)
				}
				got.db.close()
			})
		})
		line, _ := json.Marshal(map[string]any{"case": "insert", "finished": finished, "seconds": insert.Seconds(), "transactions": s.writes})
		fmt.Printf("BENCH %s\n", line)
		s.db.close()
	}
}

package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// The store benchmarks (bench/store.sh runs them): what listing, status,
// a save and a start cost with the River store at 10,000 finished jobs
// and 1,000 pending ones, on the SQLite file the agent uses.

// benchStore is a store in dir with finished finished jobs and pending
// pending ones (each with its claim), saved.
func benchStore(b *testing.B, dir string, finished, pending int) *state {
	b.Helper()
	s, err := openStore("sqlite://"+filepath.Join(dir, "jobs.db"), "testhost", dir, NewLogger(os.Stderr, false))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.db.close)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	vm := json.RawMessage(`{"version":"1.0","name":"vm","pipeline":{"load":{"source_type":"raw","source_path":"/srv/vm.raw"}}}`)
	for i := range finished + pending {
		id := fmt.Sprintf("%08x", i)
		r := &record{Job: jobs.Job{ID: id, Name: "vm-" + id, State: jobs.Completed, CreatedAt: t0.Add(time.Duration(i) * time.Second),
			FinishedAt: t0.Add(time.Duration(i)*time.Second + time.Minute), Outputs: []string{"/out/" + id + ".qcow2"}}, Claim: id + ".json", VM: vm}
		if i >= finished {
			r.State, r.FinishedAt, r.Outputs = jobs.Pending, time.Time{}, nil
			s.putClaim(&claim{Name: r.Claim, Original: r.Claim, Kind: kindManifest, Jobs: []string{id}})
		}
		s.add(r)
		if (i+1)%claimBatch == 0 {
			if err := s.save(); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := s.save(); err != nil {
		b.Fatal(err)
	}
	return s
}

// latencies runs f n times and reports its p50 and p99 in milliseconds.
func latencies(b *testing.B, n int, f func()) {
	b.Helper()
	d := make([]time.Duration, 0, n)
	for range n {
		t := time.Now()
		f()
		d = append(d, time.Since(t))
	}
	slices.Sort(d)
	ms := func(q float64) float64 { return float64(d[int(q*float64(len(d)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(ms(0.50), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
}

func BenchmarkStore(b *testing.B) {
	dir := b.TempDir()
	start := time.Now()
	s := benchStore(b, dir, 10000, 1000)
	fmt.Printf("store: 10,000 finished + 1,000 pending jobs inserted in %s (%d transactions)\n", time.Since(start).Round(time.Millisecond), s.writes)
	now := time.Date(2026, 12, 7, 15, 0, 0, 0, time.UTC)
	a := &Agent{st: s, now: func() time.Time { return now }, started: now}

	b.Run("JobPage-first-50", func(b *testing.B) {
		for b.Loop() {
		}
		latencies(b, 1000, func() { a.JobPage(apitype.Filter{}, apitype.Page{Limit: 50}) })
	})
	b.Run("JobPage-failed-filter-50", func(b *testing.B) {
		for b.Loop() {
		}
		latencies(b, 200, func() { a.JobPage(apitype.Filter{States: []jobs.State{jobs.Failed}}, apitype.Page{Limit: 50}) })
	})
	b.Run("Status", func(b *testing.B) {
		for b.Loop() {
		}
		latencies(b, 200, func() { a.Status() })
	})
	b.Run("save-one-job-starts", func(b *testing.B) {
		for b.Loop() {
		}
		i := 0
		latencies(b, 200, func() {
			r := s.Jobs[fmt.Sprintf("%08x", 10000+i%1000)]
			r.State, r.Attempt = jobs.Running, r.Attempt+1
			s.touch(r)
			if err := s.save(); err != nil {
				b.Fatal(err)
			}
			r.State = jobs.Pending // written by the next save, as a job leaving running would be
			s.touch(r)
			i++
		})
	})
	b.Run("save-nothing-changed", func(b *testing.B) {
		for b.Loop() {
		}
		latencies(b, 200, func() {
			if err := s.save(); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("start-load", func(b *testing.B) {
		for b.Loop() {
		}
		latencies(b, 5, func() {
			got, err := openStore("sqlite://"+filepath.Join(dir, "jobs.db"), "testhost", dir, NewLogger(os.Stderr, false))
			if err != nil {
				b.Fatal(err)
			}
			got.db.close()
		})
	})
	// The old store's reader (kept for the import) on the same jobs:
	// state.json with the pending ones, history.jsonl with the rest.
	old := b.TempDir()
	live, hist := map[string]*record{}, []byte{}
	for id, r := range s.Jobs {
		if r.State == jobs.Pending {
			live[id] = r
			continue
		}
		line, _ := json.Marshal(r)
		hist = append(append(hist, line...), '\n')
	}
	data, _ := json.Marshal(legacyState{Version: 2, Jobs: live, Claims: s.Claims})
	os.WriteFile(filepath.Join(old, legacyStateName), data, 0o600)
	os.WriteFile(filepath.Join(old, legacyHistoryName), hist, 0o600)
	b.Run("old-store-load", func(b *testing.B) {
		for b.Loop() {
		}
		latencies(b, 5, func() {
			if _, _, err := loadLegacy(old); err != nil {
				b.Fatal(err)
			}
		})
	})
}

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/hyper2kvm/hyper2kvm/agent/sandbox"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/test/box"
)

// The agent benchmarks run in the real-systemd box (test/box): the project
// installed as a package would be, the agent started by systemd. The
// measuring itself runs inside the box, as this same test binary copied in
// and started with HYPER2KVM_BENCH_HELPER set (see helper_test.go), so
// that nsenter's own cost is not in the figures and the clocks are the
// box's (which are the host's).

const queueDir = "/var/lib/hyper2kvm/manifest-workflow"

// benchYAML is the agent's configuration in the boxes; %s adds keys.
const benchYAML = `max_concurrent_jobs: 3
idle_timeout: 0
verbose: false
job:
  memory_max: 256M
  runtime_max_sec: 600
default_pipeline:
  inspect: {enabled: false}
  fix: {enabled: false}
  convert: {output_format: qcow2}
  validate: {enabled: false}
%s`

// gateWorker holds each job until /srv/gate/open exists (used where the
// benchmark wants jobs to stay running), then runs the real worker.
const gateWorker = `#!/bin/sh
while [ ! -e /srv/gate/open ]; do sleep 1; done
exec /usr/bin/hyper2kvmd "$@"
`

func TestMain(m *testing.M) {
	if sandbox.IsChild() { // the native backend runs guest programs through this binary
		os.Exit(sandbox.Main(os.Args[1:]))
	}
	if h := os.Getenv("HYPER2KVM_BENCH_HELPER"); h != "" {
		os.Exit(runHelper(h, os.Args[1:]))
	}
	os.Exit(m.Run())
}

type agentBox struct {
	*box.Box
	tb testing.TB
}

// startBox boots a box with the project installed, the agent configured
// with extra keys and the benchmark helper at /srv/bench/helper.
func startBox(tb testing.TB, extra string) *agentBox {
	tb.Helper()
	b := box.Start(tb, box.Options{Install: true})
	ab := &agentBox{Box: b, tb: tb}
	b.WriteFile(tb, "/etc/hyper2kvm/agent.yaml", []byte(fmt.Sprintf(benchYAML, extra)), 0o644)
	b.WriteFile(tb, "/srv/gate/worker", []byte(gateWorker), 0o755)
	exe, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		tb.Fatal(err)
	}
	b.WriteFile(tb, "/srv/bench/helper", exe, 0o755)
	b.MustExec(tb, "mkdir", "-p", "/srv/src", queueDir+"/to_be_processed")
	b.MustExec(tb, "qemu-img", "create", "-q", "-f", "raw", "/srv/src/tiny.raw", "1M")
	b.MustExec(tb, "chmod", "0644", "/srv/src/tiny.raw")
	return ab
}

// helper runs the in-box helper and decodes its JSON answer into out.
func (b *agentBox) helper(out any, name string, args ...string) {
	b.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	stdout, stderr, err := b.Exec(ctx, append([]string{"env", "HYPER2KVM_BENCH_HELPER=" + name, "/srv/bench/helper"}, args...)...)
	if err != nil {
		b.tb.Fatalf("helper %s: %v\n%s\n%s\nagent log:\n%s", name, err, stdout, stderr, b.Journal(ctx, "-u", "hyper2kvmd.service", "-n", "40"))
	}
	if stderr != "" {
		b.tb.Logf("helper %s: %s", name, strings.TrimSpace(stderr))
	}
	if err := json.Unmarshal([]byte(stdout), out); err != nil {
		b.tb.Fatalf("helper %s: %v\n%s", name, err, stdout)
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func report(tb testing.TB, r Result, table string) {
	tb.Helper()
	fmt.Print(table)
	r.Machine = MachineFacts()
	p, err := Write(r)
	if err != nil {
		tb.Fatal(err)
	}
	fmt.Printf("wrote %s\n", p)
}

// BenchmarkDispatch: from a manifest's rename into to_be_processed/ (and
// from a D-Bus Submit) to its job unit being active, against systemd
// starting the same worker directly (StartTransientUnit, no agent).
// BENCH_DISPATCH_N jobs each (default 200), one at a time.
func BenchmarkDispatch(bm *testing.B) {
	n := envInt("BENCH_DISPATCH_N", 200)
	type pass struct {
		name, yaml string
	}
	var cases []map[string]any
	var base Stats // StartTransientUnit -> active, from the first pass
	rows := [][]string{{"path", "stable_time", "n", "p50", "p90", "p99", "max", "p99 - baseline p99"}}
	for i := 0; i < bm.N; i++ {
		for _, p := range []pass{{"default", ""}, {"lease-only", "stable_time: 0s\n"}} {
			b := startBox(bm, p.yaml)
			b.MustExec(bm, "systemctl", "start", "hyper2kvmd.service")
			var res dispatchResult
			b.helper(&res, "dispatch", strconv.Itoa(n), map[bool]string{true: "all", false: "drop"}[p.name == "default"])
			stable := "500ms"
			if p.name != "default" {
				stable = "0"
			}
			if p.name == "default" {
				base = res.Baseline
			}
			add := func(path string, s Stats) {
				rows = append(rows, []string{path, stable, strconv.Itoa(s.N), Ms(s.P50), Ms(s.P90), Ms(s.P99), Ms(s.Max), Ms(s.P99 - base.P99)})
				cases = append(cases, map[string]any{"path": path, "stable_time": stable, "stats": s})
			}
			add("drop: rename -> unit active", res.DropActive)
			add("drop: rename -> unit started", res.DropStarted)
			if p.name == "default" {
				add("Submit -> JobNew", res.SubmitJobNew)
				add("Submit -> unit active", res.SubmitActive)
				add("baseline: StartTransientUnit -> active", res.Baseline)
				add("baseline: StartTransientUnit -> started", res.BaselineStarted)
			}
			b.Stop()
		}
	}
	report(bm, Result{Benchmark: "dispatch", Config: map[string]any{"jobs_per_path": n, "max_concurrent_jobs": 3,
		"worker": "hyper2kvmd worker, 1 MiB raw -> qcow2, FIX off", "one_at_a_time": true},
		Cases: cases, Notes: []string{
			"started: systemd forked the worker (InactiveExitTimestamp); active: the worker sent READY=1 (ActiveEnterTimestamp); t0 taken in the box just before rename(2) or the Submit call",
			"baseline: the same worker and job directory started by StartTransientUnit directly, no agent",
		}}, Table("Dispatch latency (box, one job at a time)", rows))
}

// BenchmarkAPI: GetStatus, GetMetrics and ListJobs over D-Bus,
// /api/workflow/status, /api/workflow/jobs and /metrics over HTTP, with
// BENCH_API_JOBS finished jobs (with stage times recorded) in
// the agent's history (default 10000), against a D-Bus Peer.Ping of the
// agent and GET /health of the bridge.
func BenchmarkAPI(bm *testing.B) {
	n := envInt("BENCH_API_JOBS", 10000)
	for i := 0; i < bm.N; i++ {
		b := startBox(bm, "")
		b.MustExec(bm, "systemctl", "start", "hyper2kvm-api.socket")
		var seed seedResult
		b.helper(&seed, "seed", strconv.Itoa(n))
		var res apiResult
		b.helper(&res, "api", strconv.Itoa(n))
		rows := [][]string{{"call", "n", "p50", "p90", "p99", "max", "answer"}}
		for _, c := range res.Calls {
			rows = append(rows, []string{c.Name, strconv.Itoa(c.Stats.N), Ms(c.Stats.P50), Ms(c.Stats.P90), Ms(c.Stats.P99), Ms(c.Stats.Max), c.Answer})
		}
		table := Table(fmt.Sprintf("API latency with %d finished jobs in history (box, root, sequential calls)", n), rows)
		table += fmt.Sprintf("agent start with %d jobs (systemctl start -> READY=1): %.0f ms; state.json %d KiB; agent RSS %d MiB\n",
			n, res.StartMs, seed.StateBytes>>10, res.RSSKiB>>10)
		report(bm, Result{Benchmark: "api", Config: map[string]any{"finished_jobs": n, "seeded": "state.json written before the agent starts (see docs/PERFORMANCE.md)"},
			Cases: res, Notes: []string{"baselines: org.freedesktop.DBus.Peer.Ping to the agent (the bus round trip) and GET /health (the bridge's HTTP floor)"}}, table)
		b.Stop()
	}
}

// BenchmarkQueueScale: N manifests dropped at once (1000 and 10000, or
// BENCH_QUEUE_SIZES="1000 10000"): time until all are claimed, the agent's
// RSS, and its CPU while idle afterwards; baseline: the time the mv of the
// N files itself took.
func BenchmarkQueueScale(bm *testing.B) {
	sizes := []int{1000, 10000}
	if v := os.Getenv("BENCH_QUEUE_SIZES"); v != "" {
		sizes = nil
		for _, f := range strings.Fields(v) {
			if n, err := strconv.Atoi(f); err == nil {
				sizes = append(sizes, n)
			}
		}
	}
	var cases []queueResult
	rows := [][]string{{"files", "mv all (baseline)", "claimed all", "all queued", "per 1k files", "RSS", "peak RSS", "idle CPU (10 s)", "state.json", "changes.jsonl"}}
	for i := 0; i < bm.N; i++ {
		for _, n := range sizes {
			b := startBox(bm, "worker_path: /srv/gate/worker\nmax_queued: 100000\n")
			b.MustExec(bm, "systemctl", "start", "hyper2kvmd.service")
			var res queueResult
			b.helper(&res, "queue", strconv.Itoa(n))
			cases = append(cases, res)
			rows = append(rows, []string{strconv.Itoa(n), fmt.Sprintf("%.2f s", res.MoveSeconds), fmt.Sprintf("%.2f s", res.ClaimSeconds),
				fmt.Sprintf("%.2f s", res.QueuedSeconds), fmt.Sprintf("%.2f s", res.QueuedSeconds*1000/float64(n)),
				fmt.Sprintf("%d MiB", res.RSSKiB>>10), fmt.Sprintf("%d MiB", res.PeakRSSKiB>>10),
				fmt.Sprintf("%.1f ms", res.IdleCPUms), fmt.Sprintf("%d KiB", res.StateBytes>>10), fmt.Sprintf("%d KiB", res.ChangesBytes>>10)})
			b.Stop()
		}
	}
	report(bm, Result{Benchmark: "queue-scale", Config: map[string]any{"max_concurrent_jobs": 3, "max_queued": 100000,
		"jobs": "held by a gate before the worker: 3 units running, the rest pending", "stable_time": "500ms"},
		Cases: cases, Notes: []string{
			"claimed all: to_be_processed/ empty and every file in processing/; all queued: the agent counts every job (GetStatus)",
			"idle CPU: agent CPU time (all threads, /proc/PID/task/*/schedstat) over 10 s once everything is queued",
		}}, Table("Queue scale: manifests dropped at once (box)", rows))
}

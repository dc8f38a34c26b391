#!/usr/bin/env bash
# The job store (River), in-process, no box (bench/agent.sh measures the
# agent through its API in the real-systemd box):
#
#   BenchmarkStore: River on SQLite at 10,000 finished and 1,000 pending
#     jobs: JobPage (what ListJobsPaged and REST /jobs serve), Status, one
#     save when a job starts, a save with nothing changed, the load at
#     start, and the old store's reader on the same jobs (the baseline);
#   BenchmarkStoreList: JobPage, JobPage encoded as REST's JSON, Status
#     and the load at start at 10,000 and 100,000 finished jobs;
#   TestBenchClaimToStart: with 1,000 and 10,000 jobs queued, one job at
#     a time, the time from a unit ending to the next queued job's unit
#     starting, on SQLite and on PostgreSQL (a throwaway cluster, fsync
#     on); systemd is faked, so this is the agent's own cost per job;
#   TestBenchFleetThroughput: 400 trivial jobs through one agent and
#     through two agents on one PostgreSQL (both in this process):
#     jobs/minute.
#
# Each p50/p99 in ms. Prints the Go output (kept in bench/results/store.txt)
# and writes bench/results/store-<time>.json with the machine's facts and
# its load before and after. BENCH_ONLY="store list claim fleet" picks
# parts (all by default). PostgreSQL parts need root and Debian's
# postgresql (packaging/deps.txt); without them they are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
go=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
only=${BENCH_ONLY:-store list claim fleet}
want() { [[ " $only " == *" $1 "* ]]; }
mkdir -p bench/results
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
benches=() tests=()
want store && benches+=(Store)
want list && benches+=(StoreList)
want claim && tests+=(ClaimToStart)
want fleet && tests+=(FleetThroughput)
out=bench/results/store.txt
: >"$out"
# A part that fails is said so; the others' figures are still written.
status=0
if [ ${#benches[@]} -gt 0 ]; then
	"$go" test -count=1 -run '^$' -bench "^Benchmark($(IFS='|'; echo "${benches[*]}"))\$" -benchtime 1x -timeout 60m ./agent/ | tee -a "$out" || status=1
fi
if [ ${#tests[@]} -gt 0 ]; then
	HYPER2KVM_BENCH=1 "$go" test -count=1 -v -run "^TestBench($(IFS='|'; echo "${tests[*]}"))\$" -timeout 60m ./agent/ | tee -a "$out" || status=1
fi
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
json=bench/results/store-$stamp.json
pg=$(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V | tail -1)
python3 - "$out" "$json" <<PY
import json, os, platform, re, subprocess, sys
src, dst = sys.argv[1], sys.argv[2]
cases = [json.loads(l[6:]) for l in open(src) if l.startswith("BENCH ")]
# BenchmarkStore's own lines: name, p50-ms, p99-ms.
for l in open(src):
    m = re.match(r"BenchmarkStore/(\S+?)-\d+\s+\d+\s+\S+ ns/op\s+(\S+) p50-ms\s+(\S+) p99-ms", l)
    if m:
        cases.append({"case": "store-10k-finished-1k-pending", "what": m.group(1), "latency": {"p50_ms": float(m.group(2)), "p99_ms": float(m.group(3))}})
    m = re.match(r"store: .* inserted in (\S+) \((\d+) transactions\)", l)
    if m:
        cases.append({"case": "store-10k-finished-1k-pending", "what": "insert 11,000 jobs", "took": m.group(1), "transactions": int(m.group(2))})
def sh(*a):
    try:
        return subprocess.run(a, capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
mem = next((int(l.split()[1]) // 1048576 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
pg = "$pg"
st = os.statvfs(os.path.realpath("bench"))
r = {
    "benchmark": "store",
    "time": sh("date", "-Iseconds"),
    "commit": sh("git", "describe", "--always", "--dirty"),
    "machine": {"cores": os.cpu_count(), "cpu": cpu, "memory_gib": mem, "kernel": platform.release(),
                "filesystem": sh("stat", "-f", "-c", "%T", "/var/lib"), "postgresql": sh(pg, "--version") if pg else None,
                "load_before": "$load_before", "load_after": "$load_after"},
    "notes": [
        "in-process: systemd is faked (a unit starts at once and runs until the benchmark ends it), so claim-to-unit-start is the agent's own cost per job",
        "PostgreSQL: a throwaway cluster on a Unix socket, fsync on; two agents are two Agent instances in this one process, each with its own drop folder",
        "the machine is shared: load_before/load_after are /proc/loadavg",
    ],
    "failed": $status != 0,
    "cases": cases,
}
json.dump(r, open(dst, "w"), indent=2)
print("wrote", dst)
PY
exit $status

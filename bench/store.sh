#!/usr/bin/env bash
# The job store (River on SQLite) at 10,000 finished and 1,000 pending
# jobs: JobPage (what ListJobsPaged and REST /jobs serve), Status, one
# save when a job starts, a save with nothing changed, and the load at
# start, each as p50/p99 in ms. In-process, no box: bench/agent.sh
# measures the same through the API in the real-systemd box.
set -euo pipefail
cd "$(dirname "$0")/.."
go=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
mkdir -p bench/results
"$go" test -run '^$' -bench '^BenchmarkStore$' -benchtime 1x -timeout 30m ./agent/ | tee bench/results/store.txt

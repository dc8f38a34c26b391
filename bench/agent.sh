#!/usr/bin/env bash
# The agent in the real-systemd box (issue 9, items 3-5): dispatch latency,
# API latency with 10,000 finished jobs, queue scale (1k and 10k files
# dropped at once). Each prints its table beside its baseline and writes
# bench/results/*.json. Needs root (the box is systemd-nspawn).
#
# BENCH_DISPATCH_N (200), BENCH_API_JOBS (10000), BENCH_QUEUE_SIZES
# ("1000 10000") shrink them; BENCH_ONLY=Dispatch|API|QueueScale runs one.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench: the agent benchmarks boot systemd-nspawn boxes; run as root" >&2; exit 2; }
go=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
only=${BENCH_ONLY:-Dispatch|API|QueueScale}
exec "$go" test -run '^$' -bench "^Benchmark($only)\$" -benchtime 1x -timeout 120m ./bench/

#!/usr/bin/env bash
# make bench: runs every benchmark script under bench/ in name order. Each
# prints its table and writes JSON under bench/results/. Nothing in the test
# suite is timed; this is where the numbers come from.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for b in bench/*.sh; do
	[ -x "$b" ] || continue
	echo "== $b"
	"$b" || status=1
done
exit $status

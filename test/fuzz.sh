#!/usr/bin/env bash
# Runs every Go fuzz target in the tree for the given time each (default 10s).
# Minimisation is kept to one run so a short CI run cannot stall on it.
set -euo pipefail
t=${1:-10s}
go=${GO:-go}
n=0
for pkg in $($go list ./... | grep -v /test/); do
	dir=$($go list -f '{{.Dir}}' "$pkg")
	for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/func //'); do
		echo "fuzz: $pkg $f ($t)"
		$go test -run='^$' -fuzz="^$f\$" -fuzztime="$t" -fuzzminimizetime=1x "$pkg"
		n=$((n + 1))
	done
done
echo "fuzz: $n targets"

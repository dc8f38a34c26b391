#!/usr/bin/env bash
# Whole pipeline with FIX on the bootable Debian 12 fixture guest (issue 9,
# item 2): `hyper2kvmd convert` with the native and guestfs backends against
# `virt-v2v -i disk -o local` of the same VMDK, then a boot test of every
# output (ours first). A failing side is recorded in the JSON, not fatal:
# the boot tests always run and bench/results/pipeline-*.json is always
# written. Installs virt-v2v, nbdkit and libnbd-bin when missing (not in
# packaging/deps.txt: only this benchmark needs them). libnbd-bin holds
# nbdcopy and nbdinfo, which virt-v2v's disk copy runs, but Debian 12's
# virt-v2v does not depend on it: without it virt-v2v converts for minutes
# and then fails with "nbdcopy: executable not found". Needs root.
# BENCH_PIPELINE_RUNS (1) runs of each; BENCH_BOOT=0 skips the boot tests.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench: the pipeline benchmark mounts guests and builds the fixture; run as root" >&2; exit 2; }
go=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
missing=()
for p in virt-v2v:virt-v2v nbdkit:nbdkit nbdcopy:libnbd-bin nbdinfo:libnbd-bin; do
	command -v "${p%%:*}" >/dev/null || missing+=("${p#*:}")
done
if ((${#missing[@]})); then
	mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
	echo "bench: installing ${missing[*]} for the virt-v2v baseline" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
fi
echo "bench: load at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec "$go" test -run '^$' -bench '^BenchmarkPipeline$' -benchtime 1x -timeout 120m ./bench/

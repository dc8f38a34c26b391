#!/usr/bin/env bash
# Whole pipeline with FIX on the bootable Debian 12 fixture guest (issue 9,
# item 2): `hyper2kvmd convert` with the native and guestfs backends against
# `virt-v2v -i disk -o local` of the same VMDK, then a boot test of the
# native output. Installs virt-v2v and nbdkit when missing (they are not
# in packaging/deps.txt: only this benchmark needs them). Needs root.
# BENCH_PIPELINE_RUNS (1) runs of each; BENCH_BOOT=0 skips the boot test.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench: the pipeline benchmark mounts guests and builds the fixture; run as root" >&2; exit 2; }
go=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
missing=()
for p in virt-v2v nbdkit; do
	command -v "$p" >/dev/null || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "bench: installing ${missing[*]} for the virt-v2v baseline" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
fi
exec "$go" test -run '^$' -bench '^BenchmarkPipeline$' -benchtime 1x -timeout 120m ./bench/

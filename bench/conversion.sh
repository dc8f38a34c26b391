#!/usr/bin/env bash
# Conversion overhead (issue 9, first item): a 4 GiB VMDK holding about
# 1 GiB of data converted to qcow2, with and without zstd compression,
# through `hyper2kvmd convert` (FIX, INSPECT and VALIDATE off: the
# conversion itself) against bare `qemu-img convert` with the same options,
# in the same run, alternating the two so that machine noise hits both.
# The full FIX-off pipeline (INSPECT + qemu-img check + compare) is shown
# too, for information. Prints a table and writes bench/results/*.json.
#
# BENCH_RUNS (default 3) runs of each; the median is reported.
# The source VMDK is cached in $HYPER2KVM_CACHE/bench (default /var/tmp/hyper2kvm-cache).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-bin}/hyper2kvmd
[ -x "$bin" ] || { echo "bench: $bin is missing; run make build" >&2; exit 2; }
runs=${BENCH_RUNS:-3}
cache=${HYPER2KVM_CACHE:-/var/tmp/hyper2kvm-cache}/bench
mkdir -p "$cache" bench/results
src=$cache/bench-4g-1g.vmdk

if [ ! -f "$src" ]; then
	echo "bench: building $src (4 GiB virtual, about 1 GiB of data: half random, half base64 text)" >&2
	raw=$cache/bench.raw.tmp
	rm -f "$raw"
	truncate -s 4G "$raw"
	# 64 chunks of 16 MiB spread every 64 MiB, like files scattered on a disk.
	for i in $(seq 0 63); do
		if [ $((i % 2)) -eq 0 ]; then
			head -c 16M /dev/urandom
		else
			head -c 11M /dev/urandom | base64 -w 76
		fi | dd of="$raw" bs=1M seek=$((i * 64)) conv=notrunc status=none iflag=fullblock
	done
	qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse "$raw" "$src.tmp"
	rm -f "$raw"
	mv "$src.tmp" "$src"
fi

work=$(mktemp -d "$cache/run-XXXX")
trap 'rm -rf "$work"' EXIT

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.3f\", $* }"; }

# bare FORMAT_ARGS...: bare qemu-img convert of the source, then fsync (the
# engine makes its output durable before renaming it; so must the baseline).
bare() {
	local out=$work/bare.qcow2
	rm -f "$out"
	local t0 t1
	t0=$(now)
	qemu-img convert -f vmdk -O qcow2 "$@" "$src" "$out"
	sync -d "$out" 2>/dev/null || sync
	t1=$(now)
	calc "$t1 - $t0"
}

# hashtime: seconds to sha256 the last bare output, which hyper2kvmd does
# for its report's artifacts (openssl, which uses the CPU's SHA extensions
# like Go's crypto/sha256).
hashtime() {
	local t0 t1
	t0=$(now)
	openssl dgst -sha256 "$work/bare.qcow2" >/dev/null
	t1=$(now)
	rm -f "$work/bare.qcow2"
	sync
	calc "$t1 - $t0"
}

# engine COMPRESS VALIDATE INSPECT: hyper2kvmd convert with FIX off.
engine() {
	local compress=$1 validate=$2 inspect=$3 dir
	dir=$(mktemp -d "$work/eng-XXXX")
	cat >"$dir/m.json" <<X
{"version": "1.0", "name": "bench", "pipeline": {
  "load": {"source_type": "vmdk", "source_path": "$src"},
  "inspect": {"enabled": $inspect},
  "fix": {"enabled": false},
  "convert": {"output_format": "qcow2", "compress": $compress},
  "validate": {"enabled": $validate}}}
X
	local t0 t1
	t0=$(now)
	"$bin" convert -f "$dir/m.json" -o "$dir/out" >"$dir/log" 2>&1 || { cat "$dir/log" >&2; echo "bench: hyper2kvmd convert failed" >&2; exit 1; }
	t1=$(now)
	# The report's own CONVERT stage time: qemu-img plus the engine's .part,
	# sync and rename, without the sha256 of the artifacts.
	conv=$(python3 -c 'import json,sys; print(round([s["duration_seconds"] for s in json.load(open(sys.argv[1]))["stages"] if s["name"] == "convert"][0], 3))' "$dir/out/bench/report.json")
	echo "$conv" >>"$work/convert-stage.$compress.$validate"
	rm -rf "$dir"
	sync
	calc "$t1 - $t0"
}

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

declare -A T
cases=(plain zstd)
for c in "${cases[@]}"; do
	b=() e=() f=() h=()
	for r in $(seq 1 "$runs"); do
		comp=false opts=()
		[ "$c" = zstd ] && comp=true opts=(-c -o compression_type=zstd)
		# Alternate which goes first, so neither always inherits the
		# other's page cache and writeback.
		if [ $((r % 2)) -eq 1 ]; then
			b+=("$(bare "${opts[@]}")")
			h+=("$(hashtime)")
			e+=("$(engine $comp false false)")
		else
			e+=("$(engine $comp false false)")
			b+=("$(bare "${opts[@]}")")
			h+=("$(hashtime)")
		fi
		f+=("$(engine $comp true true)")
		echo "bench: $c run $r: qemu-img ${b[-1]}s, hyper2kvmd ${e[-1]}s, full pipeline ${f[-1]}s" >&2
	done
	T[$c,bare]=$(median "${b[@]}")
	T[$c,engine]=$(median "${e[@]}")
	T[$c,full]=$(median "${f[@]}")
	T[$c,hash]=$(median "${h[@]}")
	comp=false
	[ "$c" = zstd ] && comp=true
	T[$c,stage]=$(median $(cat "$work/convert-stage.$comp.false"))
	T[$c,bare_all]="${b[*]}"
	T[$c,engine_all]="${e[*]}"
	T[$c,full_all]="${f[*]}"
done

qemu=$(qemu-img --version | head -1)
cores=$(nproc)
accel=tcg
[ -w /dev/kvm ] && accel="kvm device present (not probed here)"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
json=bench/results/conversion-$stamp.json

printf '\nConversion overhead: 4 GiB VMDK, 1 GiB data -> qcow2 (median of %s runs, seconds)\n' "$runs"
printf '%-6s %9s %11s %6s %14s %6s %14s %6s %14s\n' case qemu-img hyper2kvmd ratio "convert stage" ratio "qemu-img+sha" ratio "full pipeline"
for c in "${cases[@]}"; do
	ratio=$(calc "${T[$c,engine]} / ${T[$c,bare]}")
	sratio=$(calc "${T[$c,stage]} / ${T[$c,bare]}")
	withhash=$(calc "${T[$c,bare]} + ${T[$c,hash]}")
	ratio2=$(calc "${T[$c,engine]} / $withhash")
	printf '%-6s %9.2f %11.2f %6s %14.2f %6s %14.2f %6s %14.2f\n' "$c" "${T[$c,bare]}" "${T[$c,engine]}" "$ratio" "${T[$c,stage]}" "$sratio" "$withhash" "$ratio2" "${T[$c,full]}"
done
cat <<'X'
hyper2kvmd: the whole `hyper2kvmd convert` with FIX, INSPECT and VALIDATE off;
convert stage: its CONVERT stage as the report times it (qemu-img, .part, sync, rename);
qemu-img+sha: the baseline plus a sha256 of its output, which hyper2kvmd computes for the report;
full pipeline: FIX off but INSPECT and VALIDATE (check, compare) on.
X
printf 'machine: %s cores, %s, %s\n' "$cores" "$qemu" "$accel"

{
	printf '{\n  "benchmark": "conversion-overhead",\n  "time": "%s",\n' "$(date -Iseconds)"
	printf '  "machine": {"cores": %s, "qemu": "%s", "accelerator": "%s", "kernel": "%s"},\n' "$cores" "$qemu" "$accel" "$(uname -r)"
	printf '  "source": {"format": "vmdk", "subformat": "monolithicSparse", "virtual_bytes": 4294967296, "data_bytes": 1073741824},\n'
	printf '  "runs": %s,\n  "cases": [\n' "$runs"
	sep=""
	for c in "${cases[@]}"; do
		ratio=$(calc "${T[$c,engine]} / ${T[$c,bare]}")
		printf '%s    {"case": "%s", "qemu_img_seconds": %s, "hyper2kvmd_seconds": %s, "ratio": %s, "convert_stage_seconds": %s, "sha256_seconds": %s, "full_pipeline_seconds": %s,\n' "$sep" "$c" "${T[$c,bare]}" "${T[$c,engine]}" "$ratio" "${T[$c,stage]}" "${T[$c,hash]}" "${T[$c,full]}"
		printf '     "qemu_img_all": [%s], "hyper2kvmd_all": [%s], "full_pipeline_all": [%s]}' "$(echo ${T[$c,bare_all]} | tr ' ' ,)" "$(echo ${T[$c,engine_all]} | tr ' ' ,)" "$(echo ${T[$c,full_all]} | tr ' ' ,)"
		sep=$',\n'
	done
	printf '\n  ]\n}\n'
} >"$json"
echo "bench: wrote $json"

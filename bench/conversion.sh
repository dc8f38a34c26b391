#!/usr/bin/env bash
# Conversion overhead (issue 9, first item): a 4 GiB VMDK holding about
# 1 GiB of data converted to qcow2, with and without zstd compression, in
# the same run, alternating which goes first so that machine noise and page
# cache hit both sides alike:
#   conversion: `hyper2kvmd convert` with FIX off and INSPECT and VALIDATE
#     off (the conversion itself) against bare `qemu-img convert` with the
#     same options, plus fsync (the engine makes its output durable);
#   full pipeline: `hyper2kvmd convert` with FIX off and everything else at
#     its default (INSPECT; VALIDATE: qemu-img check, compare, sha256 of
#     the outputs) against the same steps run by hand one after another:
#     qemu-img convert, sync, qemu-img check, qemu-img compare, openssl
#     sha256 (which, like Go, uses the CPU's SHA extensions).
# Prints a table and writes bench/results/*.json.
#
# BENCH_RUNS (default 7) runs of each; the median is the figure, the
# fastest run beside it (the run least disturbed by the shared machine: a
# single conversion's time moves by 10-20 % here from run to run).
# The source VMDK is cached in $HYPER2KVM_CACHE/bench (default /var/tmp/hyper2kvm-cache).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-bin}/hyper2kvmd
[ -x "$bin" ] || { echo "bench: $bin is missing; run make build" >&2; exit 2; }
runs=${BENCH_RUNS:-7}
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

# bare CHECKS FORMAT_ARGS...: qemu-img convert of the source, then fsync;
# with CHECKS=1 also what VALIDATE does, by hand: check, compare, sha256.
bare() {
	local checks=$1 out=$work/bare.qcow2 t0 t1
	shift
	rm -f "$out"
	t0=$(now)
	qemu-img convert -f vmdk -O qcow2 "$@" "$src" "$out"
	sync -d "$out" 2>/dev/null || sync
	if [ "$checks" = 1 ]; then
		qemu-img check -q -f qcow2 "$out"
		qemu-img compare -q -f vmdk -F qcow2 "$src" "$out"
		openssl dgst -sha256 "$out" >/dev/null
	fi
	t1=$(now)
	rm -f "$out"
	sync
	calc "$t1 - $t0"
}

# engine COMPRESS FULL: hyper2kvmd convert with FIX off; FULL=0 turns
# INSPECT and VALIDATE off too, FULL=1 leaves them at their defaults.
engine() {
	local compress=$1 full=$2 dir stages t0 t1
	dir=$(mktemp -d "$work/eng-XXXX")
	stages='"inspect": {"enabled": false}, "validate": {"enabled": false},'
	[ "$full" = 1 ] && stages=
	cat >"$dir/m.json" <<X
{"version": "1.0", "name": "bench", "pipeline": {
  "load": {"source_type": "vmdk", "source_path": "$src"}, $stages
  "fix": {"enabled": false},
  "convert": {"output_format": "qcow2", "compress": $compress}}}
X
	t0=$(now)
	"$bin" convert -f "$dir/m.json" -o "$dir/out" >"$dir/log" 2>&1 || { cat "$dir/log" >&2; echo "bench: hyper2kvmd convert failed" >&2; exit 1; }
	t1=$(now)
	if [ "$full" = 1 ]; then
		# The full pipeline must really have checked, compared and hashed.
		python3 - "$dir/out/bench/bench.report.json" <<'PY' || { echo "bench: the full pipeline skipped a check" >&2; exit 1; }
import json, sys
r = json.load(open(sys.argv[1]))
st = {s["name"]: s["status"] for s in r["stages"]}
v = [s for s in r["stages"] if s["name"] == "validate"][0]["result"][0]
ok = st["validate"] == "ok" and v["compare"] == "identical" and all(len(a.get("sha256", "")) == 64 for a in r["artifacts"])
sys.exit(0 if ok else 1)
PY
	else
		# The report's own CONVERT stage time: qemu-img plus the engine's
		# .part, sync and rename.
		python3 -c 'import json,sys; print(round([s["duration_seconds"] for s in json.load(open(sys.argv[1]))["stages"] if s["name"] == "convert"][0], 3))' \
			"$dir/out/bench/bench.report.json" >>"$work/convert-stage.$compress"
	fi
	rm -rf "$dir"
	sync
	calc "$t1 - $t0"
}

# pairratio A B: the median of A[i]/B[i] over the runs, each pair measured
# back to back, so that the machine's drift between runs cancels out.
pairratio() {
	local -n xs=$1 ys=$2
	local i rs=()
	for i in "${!xs[@]}"; do rs+=("$(calc "${xs[$i]} / ${ys[$i]}")"); done
	median "${rs[@]}"
}

fastest() { printf '%s\n' "$@" | sort -n | head -1; }

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# Both sides read the source from the page cache: warm it first.
cat "$src" >/dev/null

declare -A T
cases=(plain zstd)
for c in "${cases[@]}"; do
	b=() e=() f=() m=()
	comp=false opts=()
	[ "$c" = zstd ] && comp=true opts=(-c -o compression_type=zstd)
	for r in $(seq 1 "$runs"); do
		if [ $((r % 2)) -eq 1 ]; then
			b+=("$(bare 0 "${opts[@]}")")
			e+=("$(engine $comp 0)")
			m+=("$(bare 1 "${opts[@]}")")
			f+=("$(engine $comp 1)")
		else
			e+=("$(engine $comp 0)")
			b+=("$(bare 0 "${opts[@]}")")
			f+=("$(engine $comp 1)")
			m+=("$(bare 1 "${opts[@]}")")
		fi
		echo "bench: $c run $r: qemu-img ${b[-1]}s, hyper2kvmd ${e[-1]}s; by hand with checks ${m[-1]}s, full pipeline ${f[-1]}s" >&2
	done
	T[$c,bare]=$(median "${b[@]}")
	T[$c,engine]=$(median "${e[@]}")
	T[$c,manual]=$(median "${m[@]}")
	T[$c,full]=$(median "${f[@]}")
	T[$c,ratio]=$(pairratio e b)
	T[$c,full_ratio]=$(pairratio f m)
	T[$c,bare_min]=$(fastest "${b[@]}")
	T[$c,engine_min]=$(fastest "${e[@]}")
	T[$c,manual_min]=$(fastest "${m[@]}")
	T[$c,full_min]=$(fastest "${f[@]}")
	T[$c,stage]=$(median $(cat "$work/convert-stage.$comp"))
	T[$c,bare_all]="${b[*]}"
	T[$c,engine_all]="${e[*]}"
	T[$c,manual_all]="${m[*]}"
	T[$c,full_all]="${f[*]}"
done

qemu=$(qemu-img --version | head -1)
cores=$(nproc)
accel=tcg
[ -w /dev/kvm ] && accel="kvm device present (not probed here)"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
json=bench/results/conversion-$stamp.json
load=$(cut -d' ' -f1-3 /proc/loadavg)

printf '\nConversion overhead: 4 GiB VMDK, 1 GiB data -> qcow2 (median of %s runs, seconds)\n' "$runs"
printf '%-6s | %9s %11s %6s %14s | %14s %14s %6s\n' case qemu-img hyper2kvmd ratio "convert stage" "by hand+checks" "full pipeline" ratio
for c in "${cases[@]}"; do
	printf '%-6s | %9.2f %11.2f %6s %14.2f | %14.2f %14.2f %6s\n' "$c" "${T[$c,bare]}" "${T[$c,engine]}" "${T[$c,ratio]}" \
		"${T[$c,stage]}" "${T[$c,manual]}" "${T[$c,full]}" "${T[$c,full_ratio]}"
	printf '%-6s | %9.2f %11.2f %6s %14s | %14.2f %14.2f %6s\n' "  min" "${T[$c,bare_min]}" "${T[$c,engine_min]}" "$(calc "${T[$c,engine_min]} / ${T[$c,bare_min]}")" \
		"" "${T[$c,manual_min]}" "${T[$c,full_min]}" "$(calc "${T[$c,full_min]} / ${T[$c,manual_min]}")"
done
cat <<'X'
qemu-img: bare qemu-img convert + fsync; hyper2kvmd: the whole `hyper2kvmd convert`, FIX, INSPECT
and VALIDATE off; convert stage: its CONVERT stage as the report times it.
by hand+checks: qemu-img convert, sync, qemu-img check, qemu-img compare, openssl sha256, in turn;
full pipeline: `hyper2kvmd convert` with FIX off, the rest at its defaults (INSPECT, VALIDATE with
check, compare and the outputs' sha256). Goal: both ratios at most 1.05.
Each case's first line: the median time of the runs, and the median of the runs' ratios (each run
measures both sides back to back); "min": the fastest run of each side and their ratio.
X
printf 'machine: %s cores, %s, %s, load %s\n' "$cores" "$qemu" "$accel" "$load"

{
	printf '{\n  "benchmark": "conversion-overhead",\n  "time": "%s",\n' "$(date -Iseconds)"
	printf '  "machine": {"cores": %s, "qemu": "%s", "accelerator": "%s", "kernel": "%s", "load": "%s"},\n' "$cores" "$qemu" "$accel" "$(uname -r)" "$load"
	printf '  "source": {"format": "vmdk", "subformat": "monolithicSparse", "virtual_bytes": 4294967296, "data_bytes": 1073741824},\n'
	printf '  "runs": %s,\n  "cases": [\n' "$runs"
	sep=""
	for c in "${cases[@]}"; do
		printf '%s    {"case": "%s", "qemu_img_seconds": %s, "hyper2kvmd_seconds": %s, "ratio": %s, "convert_stage_seconds": %s,\n' "$sep" "$c" "${T[$c,bare]}" "${T[$c,engine]}" "${T[$c,ratio]}" "${T[$c,stage]}"
		printf '     "by_hand_with_checks_seconds": %s, "full_pipeline_seconds": %s, "full_ratio": %s,\n' "${T[$c,manual]}" "${T[$c,full]}" "${T[$c,full_ratio]}"
		printf '     "fastest": {"qemu_img_seconds": %s, "hyper2kvmd_seconds": %s, "ratio": %s, "by_hand_with_checks_seconds": %s, "full_pipeline_seconds": %s, "full_ratio": %s},\n' \
			"${T[$c,bare_min]}" "${T[$c,engine_min]}" "$(calc "${T[$c,engine_min]} / ${T[$c,bare_min]}")" "${T[$c,manual_min]}" "${T[$c,full_min]}" "$(calc "${T[$c,full_min]} / ${T[$c,manual_min]}")"
		printf '     "qemu_img_all": [%s], "hyper2kvmd_all": [%s], "by_hand_with_checks_all": [%s], "full_pipeline_all": [%s]}' \
			"$(echo ${T[$c,bare_all]} | tr ' ' ,)" "$(echo ${T[$c,engine_all]} | tr ' ' ,)" "$(echo ${T[$c,manual_all]} | tr ' ' ,)" "$(echo ${T[$c,full_all]} | tr ' ' ,)"
		sep=$',\n'
	done
	printf '\n  ]\n}\n'
} >"$json"
echo "bench: wrote $json"

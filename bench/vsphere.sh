#!/usr/bin/env bash
# vSphere download + convert (issue 20): a flat disk of BENCH_VSPHERE_GIB
# (4) GiB holding BENCH_VSPHERE_DATA_MIB (2048) MiB of data (random and
# base64 text, in 64 MiB chunks spread over the disk; the rest zeros, sent
# over the wire like data) served by govmomi's simulator (test/vcsim, a
# process of its own) on loopback, downloaded and converted to qcow2:
#
#   curl+qemu-img:  curl of the flat file from the datastore URL, then bare
#                   `qemu-img convert -f raw -O qcow2`, both files fsynced
#                   (curl writes the zeros too: it cannot leave holes);
#   ours:           agent/vsphere's ExportConverted (`vcsim convert`): the
#                   download kept in a work directory (sparse, .part +
#                   rename, fsynced) and converted while it downloads,
#                   qemu-img reading it through our NBD export;
#   ours-sequential: Export (the whole download, as the worker does
#                   before CONVERT) and then qemu-img convert of it.
#
# Every side logs in and resolves the VM (ours) or not (curl), starts with
# the page cache dropped and ends with its files fsynced. BENCH_RUNS (3)
# rounds, the sides' order rotated each round. Prints each run and the
# medians, and writes bench/results/vsphere-<time>.json: the machine, the
# load before and after, every run, median seconds and MiB/s (virtual
# bytes / wall), ratio = curl+qemu-img / ours (>= 1: ours no slower) and
# overlap_gain = ours-sequential / ours.
#
# BENCH_ONLY="curl ours sequential" picks sides; the source is cached in
# $HYPER2KVM_CACHE/vsphere (default /var/tmp/hyper2kvm-cache); the
# simulator's datastore and the outputs need about 3x its data again.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench: drops the page cache; run as root" >&2; exit 2; }
command -v curl >/dev/null || { echo "bench: curl is missing (packaging/deps.txt)" >&2; exit 2; }
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
only=${BENCH_ONLY:-curl ours sequential}
gib=${BENCH_VSPHERE_GIB:-4}
data_mib=${BENCH_VSPHERE_DATA_MIB:-2048}
runs=${BENCH_RUNS:-3}
port=${BENCH_VSPHERE_PORT:-18599}
base=${HYPER2KVM_CACHE:-/var/tmp/hyper2kvm-cache}
cache=$base/vsphere
mkdir -p "$cache" bench/results
work=$(mktemp -d "$cache/run-XXXX")
sim=
cleanup() {
	[ -n "$sim" ] && kill "$sim" 2>/dev/null && wait "$sim" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
want() { [[ " $only " == *" $1 "* ]]; }
calc() { awk "BEGIN { printf \"%.3f\", $* }"; }
log() { echo "bench: $*" >&2; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }

# The disk: sparse raw, DATA_MIB of data in 64 MiB chunks spread evenly,
# alternately random and base64 text (as bench/throughput.sh's fill).
src=$cache/flat-${gib}g-${data_mib}m.raw
if [ ! -f "$src" ]; then
	log "building $src"
	n=$((data_mib / 64)) step=$((gib * 1024 / (data_mib / 64)))
	truncate -s "${gib}G" "$src.tmp"
	for i in $(seq 0 $((n - 1))); do
		if [ $((i % 2)) -eq 0 ]; then head -c 64M /dev/urandom; else head -c $((64 * 3 * 1024 / 4 * 76 / 77))K /dev/urandom | base64 -w 76; fi |
			dd of="$src.tmp" bs=1M seek=$((i * step)) conv=notrunc status=none iflag=fullblock
	done
	mv "$src.tmp" "$src"
fi
virt=$(stat -c %s "$src")

log "building test/vcsim"
"$GO" build -o "$work/vcsim" ./test/vcsim
head -c 18 /dev/urandom | base64 >"$work/password"
mkdir -p "$work/ds"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
log "starting the simulator on 127.0.0.1:$port with the ${gib} GiB flat disk"
TMPDIR=$work/ds "$work/vcsim" serve --listen "127.0.0.1:$port" --user bench --password-file "$work/password" \
	--info "$work/info.json" --flat "$src" --power off >"$work/vcsim.log" 2>&1 &
sim=$!
for _ in $(seq 600); do
	[ -f "$work/info.json" ] && break
	kill -0 "$sim" 2>/dev/null || { cat "$work/vcsim.log" >&2; exit 1; }
	sleep 1
done
[ -f "$work/info.json" ] || { log "the simulator did not start"; exit 1; }
url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$work/info.json")
flat_url="${url%/sdk}/folder/DC0_H0_VM0/disk1-flat.vmdk?dcPath=DC0&dsName=LocalDS_0"

# side NAME: one measured run, prints its wall seconds (and, for curl, the
# seconds of the download alone, fsync included).
side() {
	local d=$work/side t0 t1 tm=
	rm -rf "$d"
	mkdir -p "$d/dl" "$d/out"
	drop
	t0=$(now)
	case $1 in
	curl)
		# -k: the simulator's certificate is self-signed (ours pins it).
		curl -sSfk -u "bench:$(cat "$work/password")" -o "$d/dl/flat.raw" "$flat_url"
		sync "$d/dl/flat.raw"
		tm=$(now)
		qemu-img convert -f raw -O qcow2 "$d/dl/flat.raw" "$d/out/disk1.qcow2"
		sync "$d/dl/flat.raw" "$d/out/disk1.qcow2"
		;;
	ours) "$work/vcsim" convert --info "$work/info.json" --password-file "$work/password" --dir "$d/dl" --out "$d/out" >/dev/null ;;
	sequential) "$work/vcsim" convert --sequential --info "$work/info.json" --password-file "$work/password" --dir "$d/dl" --out "$d/out" >/dev/null ;;
	esac
	t1=$(now)
	if [ "${BENCH_VERIFY:-1}" = 1 ] && ! qemu-img compare -q -f raw -F qcow2 "$src" "$d/out/disk1.qcow2"; then
		log "$1: the output differs from the disk"
		exit 1
	fi
	rm -rf "$d"
	echo "$(calc "$t1 - $t0") ${tm:+$(calc "$tm - $t0")}"
}

sides=()
for s in curl ours sequential; do want "$s" && sides+=("$s"); done
declare -A T
runs_json=()
for r in $(seq 1 "$runs"); do
	k=$(((r - 1) % ${#sides[@]}))
	order=("${sides[@]:k}" "${sides[@]:0:k}")
	for s in "${order[@]}"; do
		read -r w dl <<<"$(side "$s")"
		T[$s]="${T[$s]:-} $w"
		printf 'run %d %-12s %8.2f s %8.1f MiB/s%s  (load %s)\n' "$r" "$s" "$w" "$(calc "$virt / 1048576 / $w")" "${dl:+  (download alone $dl s)}" "$(cut -d' ' -f1 /proc/loadavg)"
		runs_json+=("$(printf '{"run": %d, "side": "%s", "seconds": %s, "mib_per_s": %s, "download_seconds": %s, "load": %s}' "$r" "$s" "$w" "$(calc "$virt / 1048576 / $w")" "${dl:-null}" "$(cut -d' ' -f1 /proc/loadavg)")")
	done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
declare -A M
med_json=()
for s in "${sides[@]}"; do
	M[$s]=$(median "${T[$s]}")
	med_json+=("$(printf '"%s": {"seconds": %s, "mib_per_s": %s}' "$s" "${M[$s]}" "$(calc "$virt / 1048576 / ${M[$s]}")")")
	printf 'median %-12s %8.2f s %8.1f MiB/s\n' "$s" "${M[$s]}" "$(calc "$virt / 1048576 / ${M[$s]}")"
done
ratio=null gain=null
[ -n "${M[curl]:-}" ] && [ -n "${M[ours]:-}" ] && ratio=$(calc "${M[curl]} / ${M[ours]}")
[ -n "${M[sequential]:-}" ] && [ -n "${M[ours]:-}" ] && gain=$(calc "${M[sequential]} / ${M[ours]}")
echo "ratio curl+qemu-img / ours: $ratio; overlap gain (sequential / ours): $gain"

machine=$(printf '{"cores": %s, "cpu": "%s", "memory_gib": %s, "qemu": "%s", "curl": "%s", "kernel": "%s", "filesystem": "%s", "device": "%s", "load_before": "%s", "load_after": "%s"}' \
	"$(nproc)" "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)" "$(awk '/MemTotal/ {printf "%.0f", $2/1048576}' /proc/meminfo)" \
	"$(qemu-img --version | head -1)" "$(curl --version | head -1 | cut -d' ' -f1-2)" "$(uname -r)" \
	"$(stat -f -c %T "$cache")" "$(df --output=source "$cache" | tail -1)" "$load_before" "$load_after")
json=bench/results/vsphere-$(date -u +%Y%m%dT%H%M%SZ).json
{
	printf '{\n  "benchmark": "vsphere",\n  "time": "%s",\n  "machine": %s,\n' "$(date -Iseconds)" "$machine"
	printf '  "source": {"virtual_bytes": %s, "data_mib": %s, "format": "flat VMDK (vmfs descriptor + raw extent)", "server": "govmomi simulator, loopback, TLS"},\n' "$virt" "$data_mib"
	printf '  "runs": [\n    %s\n  ],\n' "$(IFS=$'\n'; echo "${runs_json[*]}" | paste -sd, | sed 's/},{/},\n    {/g')"
	printf '  "median": {%s},\n' "$(IFS=,; echo "${med_json[*]}")"
	printf '  "ratio_curl_to_ours": %s,\n  "overlap_gain": %s\n}\n' "$ratio" "$gain"
} >"$json"
python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$json" || log "warning: $json is not valid JSON"
log "wrote $json"

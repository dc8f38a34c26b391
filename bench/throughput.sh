#!/usr/bin/env bash
# Throughput (issue 25): how close a conversion comes to what this host's
# storage can do, each figure beside its baseline in the same run.
#
#   limit:   the same allocated bytes copied on the same file system, then
#            fsync: by cp --sparse=always, and dd-style in 8 MiB blocks over
#            the data extents (dd conv=sparse itself reads every hole: 12x as
#            long here); the physical limit is the fastest copy of the run
#            (each measured before the single-disk cases and again after);
#   single:  raw -> qcow2 and VMDK (monolithicSparse) -> qcow2 of a 16 GiB
#            disk holding BENCH_DATA_GIB (8) GiB of data: bare `qemu-img
#            convert` with its defaults, bare with -W and with
#            preallocation=metadata (the choices not taken), and `hyper2kvmd
#            convert` (INSPECT, FIX, VALIDATE off); ratio_to_limit = the
#            limit's throughput / ours (goal >= 0.8);
#   zstd:    the VMDK to zstd-compressed qcow2: bare qemu-img defaults,
#            bare -W and ours, from disk and from the page cache (CPU
#            bound), each with its cores_used (CPU s / wall s; goal: every
#            core busy);
#   disks:   a 3-disk OVF (BENCH_DISK_GIB (2) GiB of data each) converted
#            one disk after another (--disk-parallelism 1) and in parallel
#            (the default: one per CPU), plain and zstd;
#   jobs:    a batch of 4 VMs (one such disk each, each its own) with -j 1, 2 and 4: total
#            GiB/h, where the host saturates;
#   memory:  peak memory of the whole job (the worker and its qemu
#            processes, in a transient unit like a job's: cgroup peak, and
#            the peak of their summed RSS sampled every 50 ms) for a 1 GiB
#            and a 64 GiB image holding the same 512 MiB, full pipeline
#            with FIX off;
#   fix:     INSPECT and FIX (native) of the Debian fixture guest at 4 GiB
#            and at 64 GiB (the same image grown sparse: same content).
#
# The page cache is dropped before every measured side (sync; drop_caches)
# and every side ends with its output fsynced. Prints a table per part and
# writes bench/results/throughput-<time>.json.
#
# BENCH_ONLY="limit single zstd disks jobs memory fix" picks parts (all by
# default; limit is measured whenever single or zstd run); the sources are
# cached in $HYPER2KVM_CACHE/throughput (default /var/tmp/hyper2kvm-cache):
# about 2x BENCH_DATA_GIB + 8 GiB, and the outputs need as much again.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench: drops the page cache and mounts guests; run as root" >&2; exit 2; }
bin=$(realpath "${BIN:-bin}/hyper2kvmd")
[ -x "$bin" ] || { echo "bench: $bin is missing; run make build" >&2; exit 2; }
only=${BENCH_ONLY:-limit single zstd disks jobs memory fix}
data_gib=${BENCH_DATA_GIB:-8}
disk_gib=${BENCH_DISK_GIB:-2}
base=${HYPER2KVM_CACHE:-/var/tmp/hyper2kvm-cache}
cache=$base/throughput
mkdir -p "$cache" bench/results
work=$(mktemp -d "$cache/run-XXXX")
trap 'rm -rf "$work"' EXIT
want() { [[ " $only " == *" $1 "* ]]; }
calc() { awk "BEGIN { printf \"%.3f\", $* }"; }
log() { echo "bench: $*" >&2; }
drop() {
	[ -n "${keep_cache:-}" ] && return
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

# timed CMD...: runs CMD, prints "WALL CPU" (seconds; CPU = user + system
# of CMD and every process it waited for).
timed() {
	python3 -c '
import resource, subprocess, sys, time
t = time.monotonic()
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
w = time.monotonic() - t
u = resource.getrusage(resource.RUSAGE_CHILDREN)
if r.returncode != 0:
    sys.stderr.write(r.stderr.decode(errors="replace")[-3000:])
    sys.exit(r.returncode)
print("%.3f %.3f" % (w, u.ru_utime + u.ru_stime))' "$@"
}

# fill RAW VIRT_GIB DATA_MIB CHUNK_MIB: a sparse raw disk of VIRT_GIB with
# DATA_MIB of data in chunks spread evenly, alternately random and base64
# text (compressible, like files on a disk).
fill() {
	local raw=$1 virt=$2 data=$3 chunk=$4 n i step
	n=$((data / chunk))
	step=$((virt * 1024 / n))
	rm -f "$raw"
	truncate -s "${virt}G" "$raw"
	for i in $(seq 0 $((n - 1))); do
		if [ $((i % 2)) -eq 0 ]; then
			head -c "${chunk}M" /dev/urandom
		else
			# 3/4 of the chunk as base64 text with its newlines: just under it.
			head -c $((chunk * 3 * 1024 / 4 * 76 / 77))K /dev/urandom | base64 -w 76
		fi | dd of="$raw" bs=1M seek=$((i * step)) conv=notrunc status=none iflag=fullblock
	done
}

# made PATH CMD...: runs CMD to build PATH once (cached).
made() {
	local p=$1
	shift
	[ -f "$p" ] && return
	log "building $p"
	"$@"
}

src_raw=$cache/data-16g-${data_gib}g.raw
src_vmdk=$cache/data-16g-${data_gib}g.vmdk
if want limit || want single || want zstd; then
	made "$src_raw" fill "$src_raw.tmp" 16 $((data_gib * 1024)) 64
	[ -f "$src_raw" ] || mv "$src_raw.tmp" "$src_raw"
	made "$src_vmdk" sh -c "qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse '$src_raw' '$src_vmdk.tmp' && mv '$src_vmdk.tmp' '$src_vmdk'"
fi
data_bytes=$(du -B1 "$src_raw" 2>/dev/null | cut -f1 || echo 0)

# engine NAME MANIFEST_PIPELINE_JSON [convert flags...]: hyper2kvmd convert
# of a manifest, printing "WALL CPU".
engine() {
	local name=$1 pipeline=$2 dir
	shift 2
	dir=$(mktemp -d "$work/eng-XXXX")
	printf '{"version": "1.0", "name": "%s", "pipeline": %s}\n' "$name" "$pipeline" >"$dir/m.json"
	drop
	timed "$bin" convert -f "$dir/m.json" -o "$dir/out" "$@"
	rm -rf "$dir"
}

# engine_batch MANIFEST_JSON [flags]: a batch manifest.
engine_batch() {
	local m=$1 dir
	shift
	dir=$(mktemp -d "$work/eng-XXXX")
	printf '%s\n' "$m" >"$dir/m.json"
	drop
	timed "$bin" convert -f "$dir/m.json" -o "$dir/out" "$@"
	rm -rf "$dir"
}

# bare FMT SRC [qemu-img options]: qemu-img convert to qcow2 + fsync.
bare() {
	local fmt=$1 src=$2 out=$work/bare.qcow2 r
	shift 2
	rm -f "$out"
	drop
	r=$(timed bash -c 'f=$1; shift; qemu-img convert -f "$f" -O qcow2 "$@" && sync "${@: -1}"' bash "$fmt" "$@" "$src" "$out")
	rm -f "$out"
	echo "$r"
}

conv() { # conv FMT SRC COMPRESS: the pipeline for a plain conversion
	printf '{"load": {"source_type": "%s", "source_path": "%s"}, "inspect": {"enabled": false}, "fix": {"enabled": false}, "validate": {"enabled": false}, "convert": {"output_format": "qcow2", "compress": %s}}' "$1" "$2" "$3"
}

declare -A R # results: R[case]="WALL CPU"
json_cases=()
machine() {
	printf '{"cores": %s, "cpu": "%s", "memory_gib": %s, "qemu": "%s", "kernel": "%s", "cgroup": "%s", "filesystem": "%s", "device": "%s", "rotational": %s, "load": "%s"}' \
		"$(nproc)" "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)" "$(awk '/MemTotal/ {printf "%.0f", $2/1048576}' /proc/meminfo)" \
		"$(qemu-img --version | head -1)" "$(uname -r)" "$([ -f /sys/fs/cgroup/cgroup.controllers ] && echo v2 || echo v1)" \
		"$(stat -f -c %T "$cache")" "$(df --output=source "$cache" | tail -1)" \
		"$(cat /sys/block/"$(basename "$(df --output=source "$cache" | tail -1)")"/queue/rotational 2>/dev/null || echo null)" \
		"$(cut -d' ' -f1-3 /proc/loadavg)"
}
# record CASE GROUP DATA_BYTES "WALL CPU" [LIMIT_SECONDS]: one JSON case.
record() {
	local c=$1 g=$2 bytes=$3 wall cpu ratio=null
	read -r wall cpu <<<"$4"
	[ -n "${5:-}" ] && ratio=$(calc "$5 / $wall")
	# cores_used: CPU seconds over wall seconds (of the command and every
	# process it waited for); load: the 1-minute load average as it ended.
	json_cases+=("$(printf '{"case": "%s", "group": "%s", "seconds": %s, "cpu_seconds": %s, "cores_used": %s, "cpu_per_core": %s, "data_bytes": %s, "mib_per_s": %s, "gib_per_h": %s, "ratio_to_limit": %s, "load": %s}' \
		"$c" "$g" "$wall" "$cpu" "$(calc "$cpu / $wall")" "$(calc "$cpu / $wall / $(nproc)")" "$bytes" "$(calc "$bytes / 1048576 / $wall")" "$(calc "$bytes / 1073741824 / $wall * 3600")" "$ratio" "$(cut -d' ' -f1 /proc/loadavg)")")
	printf '%-34s %8.2f s %8.1f MiB/s %9.0f GiB/h  cpu %6.2f s (%.2f of %s cores)  ratio_to_limit %s  load %s\n' "$c" "$wall" \
		"$(calc "$bytes / 1048576 / $wall")" "$(calc "$bytes / 1073741824 / $wall * 3600")" "$cpu" "$(calc "$cpu / $wall")" "$(nproc)" "$ratio" "$(cut -d' ' -f1 /proc/loadavg)"
}

# measure_limit: cp --sparse=always of the raw source + fsync; limit is
# the fastest such copy of the run (measured at the start and again after
# the single-disk cases: the machine is shared). Every ratio_to_limit in
# the JSON is against that fastest copy.
measure_limit() {
	local r
	r=$(drop; timed sh -c 'cp --sparse=always "$1" "$2" && sync "$2"' sh "$src_raw" "$work/cp.raw")
	rm -f "$work/cp.raw"
	record "limit: cp --sparse=always + fsync" limit "$data_bytes" "$r"
	r=${r% *}
	if [ -z "$limit" ] || awk "BEGIN { exit !($r < $limit) }"; then limit=$r; fi
	# cp reads and writes 128 KiB at a time; a virtual disk with some
	# latency gives more to larger requests: dd's way, 8 MiB blocks, over
	# the data extents only (dd conv=sparse would read every hole).
	r=$(drop; timed python3 -c '
import os, sys
src, dst = os.open(sys.argv[1], os.O_RDONLY), os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
size = os.fstat(src).st_size
os.ftruncate(dst, size)
off = 0
while off < size:
    try:
        off = os.lseek(src, off, os.SEEK_DATA)
    except OSError:
        break
    end = os.lseek(src, off, os.SEEK_HOLE)
    while off < end:
        b = os.pread(src, min(8 << 20, end - off), off)
        os.pwrite(dst, b, off)
        off += len(b)
os.fsync(dst)' "$src_raw" "$work/dd.raw")
	rm -f "$work/dd.raw"
	record "limit: dd-style 8 MiB blocks + fsync" limit "$data_bytes" "$r"
	r=${r% *}
	if awk "BEGIN { exit !($r < $limit) }"; then limit=$r; fi
}

log "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
limit=
if want limit || want single || want zstd; then
	echo "== physical limit: $((data_bytes >> 20)) MiB allocated of 16 GiB, same file system"
	measure_limit

fi

if want single; then
	echo "== one disk to qcow2 (uncompressed)"
	# Round 2 runs the same cases in the opposite order.
	for round in 1 2; do
		for fmt in raw vmdk; do
			src=$src_raw
			[ "$fmt" = vmdk ] && src=$src_vmdk
			cases=("bare qemu-img (defaults)|" "hyper2kvmd convert|engine")
			[ "$fmt" = raw ] && cases=("bare qemu-img (defaults)|" "bare qemu-img -W|-W" "bare -o preallocation=metadata|-o preallocation=metadata" "bare -m 16|-m 16" "hyper2kvmd convert|engine")
			if [ $round = 2 ]; then
				mapfile -t cases < <(printf '%s\n' "${cases[@]}" | tac)
			fi
			for c in "${cases[@]}"; do
				name=${c%%|*} opts=${c#*|}
				if [ "$opts" = engine ]; then
					r=$(engine one "$(conv "$fmt" "$src" false)")
				else
					# shellcheck disable=SC2086 # the options are words
					r=$(bare "$fmt" "$src" $opts)
				fi
				record "$fmt: $name" "single-$fmt" "$data_bytes" "$r" "$limit"
			done
		done
	done
fi

if want single; then
	measure_limit
fi

if want zstd; then
	echo "== one disk to zstd-compressed qcow2 (VMDK source)"
	# Goal: every core busy. cores_used (CPU seconds / wall seconds) is in
	# each case's JSON. From disk (page cache dropped), then CPU bound:
	# the source in the page cache, the output still fsynced. Twice each,
	# in both orders: one pair of timings on a shared machine says little.
	zstd_cases=("bare qemu-img (defaults)|bare" "bare qemu-img -W|bare -W" "hyper2kvmd convert|engine")
	for cached in "" 1; do
		grp=zstd
		if [ -n "$cached" ]; then
			grp=zstd-cached
			cat "$src_vmdk" >/dev/null
		fi
		for round in 1 2; do
			cases=("${zstd_cases[@]}")
			[ $round = 2 ] && mapfile -t cases < <(printf '%s\n' "${zstd_cases[@]}" | tac)
			for c in "${cases[@]}"; do
				name=${c%%|*} how=${c#*|}
				if [ "$how" = engine ]; then
					r=$(keep_cache=$cached engine one "$(conv vmdk "$src_vmdk" true)")
				else
					# shellcheck disable=SC2086 # the options are words
					r=$(keep_cache=$cached bare vmdk "$src_vmdk" -c -o compression_type=zstd ${how#bare})
				fi
				record "$grp: $name" "$grp" "$data_bytes" "$r" "$limit"
			done
		done
	done
fi

if want disks || want jobs; then
	for i in 1 2 3 4; do
		made "$cache/disk$i-4g-${disk_gib}g.vmdk" bash -c "$(declare -f fill); fill '$work/d$i.raw' 4 $((disk_gib * 1024)) 64 && qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse '$work/d$i.raw' '$cache/disk$i.tmp' && rm -f '$work/d$i.raw' && mv '$cache/disk$i.tmp' '$cache/disk$i-4g-${disk_gib}g.vmdk'"
	done
	disk_bytes=$((disk_gib << 30))
fi

if want disks; then
	ovf=$cache/three-${disk_gib}g.ovf
	{
		cat <<X
<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References>
X
		for i in 1 2 3; do printf '    <File ovf:href="disk%s-4g-%sg.vmdk" ovf:id="file%s" ovf:size="%s"/>\n' $i "$disk_gib" $i "$(stat -c %s "$cache/disk$i-4g-${disk_gib}g.vmdk")"; done
		echo '  </References>'
		echo '  <DiskSection><Info>disks</Info>'
		for i in 1 2 3; do printf '    <Disk ovf:capacity="4294967296" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk%s" ovf:fileRef="file%s" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#sparse"/>\n' $i $i; done
		echo '  </DiskSection>'
		echo '  <VirtualSystem ovf:id="three"><Info>bench</Info><Name>three</Name><VirtualHardwareSection><Info>hw</Info>'
		echo '    <Item><rasd:ElementName>1 CPU</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>'
		echo '    <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>mem</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>'
		echo '    <Item><rasd:ElementName>SCSI</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>'
		for i in 1 2 3; do printf '    <Item><rasd:AddressOnParent>%s</rasd:AddressOnParent><rasd:ElementName>disk %s</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk%s</rasd:HostResource><rasd:InstanceID>%s</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>\n' $((i - 1)) $i $i $((10 + i)); done
		echo '  </VirtualHardwareSection></VirtualSystem>'
		echo '</Envelope>'
	} >"$ovf"
	echo "== a 3-disk VM ($disk_gib GiB of data per disk): one disk after another vs in parallel"
	for comp in false true; do
		name=plain
		[ "$comp" = true ] && name=zstd
		record "3 disks $name: one after another" "disks-$name" $((3 * disk_bytes)) "$(engine three "$(conv ovf "$ovf" $comp)" --disk-parallelism 1)" "$limit"
		record "3 disks $name: parallel (default)" "disks-$name" $((3 * disk_bytes)) "$(engine three "$(conv ovf "$ovf" $comp)")" "$limit"
	done
fi

if want jobs; then
	echo "== a batch of 4 one-disk VMs ($disk_gib GiB of data each): -j 1, 2, 4"
	for comp in false true; do
		name=plain
		[ "$comp" = true ] && name=zstd
		vms=
		for i in 1 2 3 4; do
			# Each VM its own source: one read four times would come from
			# the page cache after the first.
			vms+="${vms:+, }{\"name\": \"vm$i\", \"pipeline\": $(conv vmdk "$cache/disk$i-4g-${disk_gib}g.vmdk" $comp)}"
		done
		for j in 1 2 4; do
			record "4 VMs $name: -j $j" "jobs-$name" $((4 * disk_bytes)) "$(engine_batch "{\"version\": \"1.0\", \"batch\": true, \"vms\": [$vms]}" -j $j)" "$limit"
		done
	done
fi

# cgpeak CMD...: runs CMD in a new memory cgroup; prints the peak of its
# processes' summed RSS (KiB, sampled every 50 ms) and the cgroup's peak
# (bytes, page cache included).
cgpeak() {
	local cg peak pid max s p r
	if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
		cg=/sys/fs/cgroup/h2k-bench-$$
		peak=memory.peak
	else
		cg=/sys/fs/cgroup/memory/h2k-bench-$$
		peak=memory.max_usage_in_bytes
	fi
	mkdir "$cg"
	bash -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' bash "$cg" "$@" >"$work/cgpeak.log" 2>&1 &
	pid=$!
	max=0
	while kill -0 $pid 2>/dev/null; do
		s=0
		for p in $(cat "$cg/cgroup.procs"); do
			r=$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' /proc/$p/status 2>/dev/null)
			s=$((s + ${r:-0}))
		done
		[ $s -gt $max ] && max=$s
		sleep 0.05
	done
	if ! wait $pid; then
		cat "$work/cgpeak.log" >&2
		rmdir "$cg"
		return 1
	fi
	echo "$max $(cat "$cg/$peak")"
	rmdir "$cg"
}

mem_json=()
if want memory; then
	echo "== peak memory of a job: 1 GiB vs 64 GiB image, the same 512 MiB of data"
	made "$cache/mem-1g.raw" bash -c "$(declare -f fill); fill '$cache/mem-1g.tmp' 1 512 64 && mv '$cache/mem-1g.tmp' '$cache/mem-1g.raw'"
	made "$cache/mem-64g.raw" bash -c "$(declare -f fill); fill '$cache/mem-64g.tmp' 64 512 64 && mv '$cache/mem-64g.tmp' '$cache/mem-64g.raw'"
	for size in 1 64; do
		for comp in false true; do
			dir=$(mktemp -d "$work/mem-XXXX")
			# The default pipeline with FIX off: LOAD, INSPECT, CONVERT,
			# VALIDATE (check, compare, sha256 of the output).
			printf '{"version": "1.0", "name": "mem", "pipeline": {"load": {"source_type": "raw", "source_path": "%s"}, "fix": {"enabled": false}, "convert": {"output_format": "qcow2", "compress": %s}}}\n' "$cache/mem-${size}g.raw" "$comp" >"$dir/m.json"
			drop
			# In a memory cgroup of its own, as a job unit runs: it holds the
			# worker and every qemu process it starts.
			out=$(cgpeak "$bin" convert -f "$dir/m.json" -o "$dir/out")
			read -r rss cg <<<"$out"
			name=plain
			[ "$comp" = true ] && name=zstd
			printf '%-34s summed RSS peak %6.1f MiB   cgroup peak %7.1f MiB (page cache included)\n' "${size} GiB image, $name" "$(calc "$rss / 1024")" "$(calc "$cg / 1048576")"
			mem_json+=("$(printf '{"case": "%s GiB image, %s", "virtual_gib": %s, "data_mib": 512, "rss_peak_mib": %s, "cgroup_peak_mib": %s}' "$size" "$name" "$size" "$(calc "$rss / 1024")" "$(calc "$cg / 1048576")")")
			rm -rf "$dir"
		done
	done
fi

fix_json=()
if want fix; then
	guest=$(ls -1 "$base"/debian-*/disk.raw 2>/dev/null | head -1 || true)
	if [ -z "$guest" ]; then
		log "fix: no Debian fixture guest in $base (go test -run TestBoot ./test/ builds it); skipped"
	else
		echo "== INSPECT and FIX (native) of the Debian guest at 4 GiB and 64 GiB (same content)"
		for size in 4 64; do
			g=$work/guest-${size}g.raw
			cp --sparse=always "$guest" "$g"
			truncate -s "${size}G" "$g"
			dir=$(mktemp -d "$work/fix-XXXX")
			printf '{"version": "1.0", "name": "g", "pipeline": {"load": {"source_type": "raw", "source_path": "%s"}, "fix": {"enabled": true, "backend": "native"}, "validate": {"enabled": false}, "convert": {"output_format": "qcow2"}}}\n' "$g" >"$dir/m.json"
			drop
			"$bin" convert -f "$dir/m.json" -o "$dir/out" >"$dir/log" 2>&1 || { cat "$dir/log" >&2; log "fix: hyper2kvmd convert failed"; }
			st=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(" ".join("%s=%.2f" % (s["name"], s["duration_seconds"]) for s in r["stages"]))' "$dir/out/g/report.json" 2>/dev/null || echo "no report")
			printf '%-34s %s\n' "${size} GiB guest" "$st"
			fix_json+=("$(printf '{"case": "%s GiB guest", "virtual_gib": %s, "stages": "%s"}' "$size" "$size" "$st")")
			rm -rf "$dir" "$g"
		done
	fi
fi

stamp=$(date -u +%Y%m%dT%H%M%SZ)
json=bench/results/throughput-$stamp.json
{
	printf '{\n  "benchmark": "throughput",\n  "time": "%s",\n  "machine": %s,\n' "$(date -Iseconds)" "$(machine)"
	printf '  "source": {"virtual_bytes": 17179869184, "data_bytes": %s, "per_disk_data_bytes": %s},\n' "$data_bytes" "$((disk_gib << 30))"
	printf '  "limit_seconds": %s,\n' "${limit:-null}"
	printf '  "cases": [\n    %s\n  ],\n' "$(IFS=$'\n'; echo "${json_cases[*]:-}" | paste -sd, | sed 's/},{/},\n    {/g')"
	printf '  "memory": [%s],\n' "$(IFS=,; echo "${mem_json[*]:-}")"
	printf '  "inspect_fix": [%s]\n}\n' "$(IFS=,; echo "${fix_json[*]:-}")"
} >"$json"
# Every ratio against the fastest copy of the run.
python3 - "$json" <<'PY' || log "warning: $json is not valid JSON"
import json, sys
p = sys.argv[1]
r = json.load(open(p))
lim = r.get("limit_seconds")
if lim:
    for c in r["cases"]:
        if c["group"] != "limit":
            c["ratio_to_limit"] = round(lim / c["seconds"], 3)
    print("against the fastest copy (%.2f s): each case's runs, fastest first" % lim)
    runs = {}
    for c in r["cases"]:
        runs.setdefault(c["case"], []).append(c)
    for name, cs in runs.items():
        cs.sort(key=lambda c: c["seconds"])
        print("  %-36s %s" % (name, "  ".join("%.1f s (%s)" % (c["seconds"], c["ratio_to_limit"]) for c in cs)))
json.dump(r, open(p, "w"), indent=2)
PY
printf 'machine: %s\n' "$(machine)"
log "wrote $json"

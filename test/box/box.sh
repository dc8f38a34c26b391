#!/bin/bash
# box.sh BOXDIR SIZE: the namespace holder of one test box.
#
# Run by the Go harness under `unshare -m --propagation private`, so every mount
# below exists only in this private mount namespace and vanishes with it. It
# mounts a tmpfs on BOXDIR (an empty directory on the host), a tmpfs on /run (so
# systemd-nspawn leaves nothing in the host's /run), and an overlay of / on
# BOXDIR/root whose writes land in BOXDIR/upper. The upper layer lives as long
# as this process, so the box can be booted again on the same state (Reboot).
#
# After "ready" it reads lines on stdin: "nspawn PID" and "pid1 PID" tell it
# which processes make up the running box, "cgroup DIR" a cgroup made for
# it. On end of input (the harness closed
# the pipe, or the test binary died) it stops whatever is still running, removes
# the box's cgroups and exits, which frees every mount.
set -u
box=$1
size=$2

fail() { echo "box.sh: $*" >&2; exit 1; }

mount -t tmpfs -o "size=$size,mode=0755" hyper2kvm-box "$box" || fail "cannot mount tmpfs on $box"
mount -t tmpfs -o mode=0755 hyper2kvm-box-run /run || fail "cannot mount tmpfs on /run"
mkdir -p "$box/upper" "$box/work" "$box/root" || fail "cannot create overlay directories"
mount -t overlay overlay -o "lowerdir=/,upperdir=$box/upper,workdir=$box/work" "$box/root" ||
	fail "cannot mount overlay of / on $box/root"
echo ready

nspawn=
pid1=
cgroups=()
while read -r what arg; do
	case $what in
	nspawn) nspawn=$arg ;;
	pid1) pid1=$arg ;;
	cgroup) cgroups+=("$arg") ;;
	esac
done

alive() { [[ -n $1 ]] && [[ -e /proc/$1 ]] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }

# The harness normally stops the box itself; this is the safety net, for a
# box whose state is thrown away anyway. nspawn turns SIGTERM into an orderly
# shutdown, but one sent while the box is still starting can be lost, and
# SIGKILL to nspawn would leave the box running: after a short wait, SIGKILL
# to the box's PID 1 ends it all.
if alive "$nspawn"; then
	kill -TERM "$nspawn" 2>/dev/null
	for _ in $(seq 50); do alive "$nspawn" || break; sleep 0.1; done
	if alive "$nspawn"; then
		for f in /proc/"$nspawn"/task/*/children; do
			for c in $(cat "$f" 2>/dev/null); do
				[[ $(cat /proc/"$c"/comm 2>/dev/null) == systemd ]] && pid1=$c
			done
		done
	fi
fi
if alive "$pid1"; then
	kill -KILL "$pid1" 2>/dev/null
	for _ in $(seq 100); do alive "$pid1" || break; sleep 0.1; done
fi
for _ in $(seq 50); do alive "$nspawn" || break; sleep 0.1; done
# cgroup directories go with rmdir, deepest first; the box's systemd may
# have left some below ours.
for cg in "${cgroups[@]}"; do
	[[ -d $cg ]] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
done
# The directory on the host is empty but for this namespace's tmpfs: unmount
# it here and remove it, in case the harness is no longer there to do it.
umount -l "$box/root" 2>/dev/null
umount -l "$box" 2>/dev/null && rmdir "$box" 2>/dev/null
exit 0

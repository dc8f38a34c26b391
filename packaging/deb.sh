#!/usr/bin/env bash
# deb.sh BIN VERSION: what `make deb` does. Builds BIN/hyper2kvm_<ver>_<arch>.deb
# with dpkg-deb from a staging `install.sh` (PREFIX=/usr, SYSCONFDIR=/etc)
# plus the maintainer scripts in packaging/debian/. No debhelper needed.
set -euo pipefail

if (($# != 2)); then
	echo "usage: $0 BIN VERSION" >&2
	exit 2
fi
src=$(cd "$(dirname "$0")/.." && pwd)
bin=$1
[[ $bin == /* ]] || bin=$src/$bin

# Debian versions start with a digit and have no '-' outside the revision:
# v1.2.3 -> 1.2.3; a bare git describe like 178a418-dirty -> 0~git178a418.dirty.
version=${2#v}
if [[ ! $version =~ ^[0-9]+\.[0-9] ]]; then
	version=0~git${version}
fi
version=${version//-/.}
version=${version//[^A-Za-z0-9.+~]/.}
arch=$(dpkg --print-architecture)

stage=$(mktemp -d "${TMPDIR:-/tmp}/hyper2kvm-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/root
"$src/packaging/install.sh" "$root" /usr /etc "$bin" >/dev/null

# Documentation as Debian wants it: copyright and a compressed changelog.
doc=$root/usr/share/doc/hyper2kvm
install -D -m 0644 "$src/packaging/debian/copyright" "$doc/copyright"
{
	echo "hyper2kvm ($version) unstable; urgency=medium"
	echo
	echo "  * Built from the source tree ($2)."
	echo
	echo " -- hyper2kvm maintainers <maintainers@hyper2kvm.invalid>  $(date -R -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}")"
} | gzip -9n >"$doc/changelog.gz" # a native package
chmod 0644 "$doc/changelog.gz"
install -D -m 0644 "$src/packaging/debian/lintian-overrides" "$root/usr/share/lintian/overrides/hyper2kvm"
# Go binaries: strip the debug info the build keeps (lintian: unstripped).
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/hyper2kvmd" "$root/usr/bin/hyperctl" 2>/dev/null || true

# Shared libraries the (cgo) binaries link: libc6 at least as new as built against.
depends="qemu-utils, qemu-system-common, systemd (>= 247), dbus, polkitd | policykit-1, fuse3, e2fsprogs, bubblewrap"
if command -v dpkg-shlibdeps >/dev/null; then
	shl=$(mktemp -d)
	mkdir -p "$shl/debian"
	printf 'Source: hyper2kvm\n\nPackage: hyper2kvm\nArchitecture: any\n' >"$shl/debian/control"
	libs=$(cd "$shl" && dpkg-shlibdeps -O "$root/usr/bin/hyper2kvmd" "$root/usr/bin/hyperctl" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
	rm -rf "$shl"
	[[ -n $libs ]] && depends="$libs, $depends"
fi

install -d -m 0755 "$root/DEBIAN"
cat >"$root/DEBIAN/control" <<CONTROL
Package: hyper2kvm
Version: $version
Architecture: $arch
Maintainer: hyper2kvm maintainers <maintainers@hyper2kvm.invalid>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: $depends
Recommends: qemu-system-x86, libguestfs-tools, virt-v2v, nbdkit, ntfs-3g
Section: admin
Priority: optional
Homepage: https://github.com/hyper2kvm/hyper2kvm
Description: systemd-native agent converting VMware and Hyper-V VMs to KVM
 hyper2kvm converts VMware and Hyper-V virtual machines (VMDK, OVA/OVF, VHD,
 VHDX, raw) into KVM guests (qcow2) through a drop-folder queue. Each
 conversion runs as its own transient systemd unit with resource limits,
 visible in systemctl and journalctl. The agent is controlled over D-Bus
 (io.hyper2kvm.Agent1, authorized by polkit) with hyperctl, and a
 socket-activated REST bridge serves a dashboard on 127.0.0.1:8080.
CONTROL
# Every file under /etc is a conffile: dpkg keeps the admin's changes.
(cd "$root" && find etc -type f -printf '/%p\n' | sort) >"$root/DEBIAN/conffiles"
for s in postinst prerm postrm; do
	install -m 0755 "$src/packaging/debian/$s" "$root/DEBIAN/$s"
done
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

out=$bin/hyper2kvm_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "$out"
if command -v lintian >/dev/null; then
	# lintian exits non-zero on errors only; warnings are printed, not fatal.
	if ! report=$(lintian --tag-display-limit 0 "$out" 2>&1); then
		echo "deb: lintian found errors:" >&2
	fi
	grep -v "running with root privileges" <<<"$report" >&2 || true
fi

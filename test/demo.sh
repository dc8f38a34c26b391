#!/usr/bin/env bash
# make demo: builds a small VMware-style sample VM (an OVA holding a
# streamOptimized VMDK of a partitioned disk with a Debian-like ext4 root),
# writes a manifest for it, converts it with `hyper2kvmd convert` and shows
# where the qcow2, NAME.xml and NAME.report.json are, with a summary of the report.
# Nothing is faked: a stage that fails is shown as failed, and the script
# exits with hyper2kvmd's status.
#
# DEMO_DIR (default /var/tmp/hyper2kvm-demo) holds the sample and the outputs;
# each run uses a fresh subdirectory, so nothing is ever overwritten.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-bin}/hyper2kvmd
[ -x "$bin" ] || { echo "demo: $bin is missing; run make build" >&2; exit 2; }
PATH=$PATH:/usr/sbin:/sbin
for t in qemu-img sfdisk mkfs.ext4 tar python3; do
	command -v "$t" >/dev/null || { echo "demo: needs $t (see packaging/deps.txt)" >&2; exit 2; }
done

base=${DEMO_DIR:-/var/tmp/hyper2kvm-demo}
mkdir -p "$base"
run=$(mktemp -d "$base/run-$(date +%Y%m%d-%H%M%S)-XXXX")
src=$run/sample
mkdir -p "$src/tree/etc/network" "$src/tree/boot/grub" "$src/tree/etc/default"
echo "demo: building the sample VM in $src"

# The guest as VMware left it: root on /dev/sda1, a VMware NIC name with a
# pinned MAC, open-vm-tools enabled.
t=$src/tree
cat >"$t/etc/os-release" <<'X'
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
ID=debian
X
printf '/dev/sda1 / ext4 errors=remount-ro 0 1\nproc /proc proc defaults 0 0\n' >"$t/etc/fstab"
printf 'menuentry "Debian" {\n\tlinux /boot/vmlinuz-6.1.0-13-amd64 root=/dev/sda1 ro quiet\n\tinitrd /boot/initrd.img-6.1.0-13-amd64\n}\n' >"$t/boot/grub/grub.cfg"
printf 'GRUB_CMDLINE_LINUX="root=/dev/sda1"\n' >"$t/etc/default/grub"
printf 'auto lo\niface lo inet loopback\nauto ens192\niface ens192 inet dhcp\n    hwaddress ether 00:50:56:aa:bb:cc\n' >"$t/etc/network/interfaces"
echo demo >"$t/etc/hostname"

raw=$src/disk.raw
truncate -s 64M "$raw"
printf 'label: dos\nstart=2048, size=126976, type=83, bootable\n' | sfdisk -q --no-reread --no-tell-kernel "$raw"
mkfs.ext4 -q -F -L root -d "$t" "$src/root.ext4" 63488k
dd if="$src/root.ext4" of="$raw" bs=1M seek=1 conv=notrunc,sparse status=none
rm "$src/root.ext4"
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$raw" "$src/demo-vm-disk1.vmdk"

vmdk_size=$(stat -c %s "$src/demo-vm-disk1.vmdk")
cat >"$src/demo-vm.ovf" <<X
<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References><File ovf:href="demo-vm-disk1.vmdk" ovf:id="file1" ovf:size="$vmdk_size"/></References>
  <DiskSection><Info>disks</Info><Disk ovf:capacity="64" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
  <VirtualSystem ovf:id="demo-vm">
    <Info>A virtual machine</Info>
    <Name>demo-vm</Name>
    <VirtualHardwareSection>
      <Info>hardware</Info>
      <Item><rasd:ElementName>2 virtual CPUs</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>1024MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>
      <Item><rasd:ElementName>Hard disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:Connection>VM Network</rasd:Connection><rasd:ElementName>Network adapter 1</rasd:ElementName><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="bios"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
X
# The descriptor first, as the OVF specification requires.
tar --format=ustar -C "$src" -cf "$src/demo-vm.ova" demo-vm.ovf demo-vm-disk1.vmdk
rm "$src/demo-vm-disk1.vmdk" "$src/demo-vm.ovf"
sum=$(sha256sum "$src/demo-vm.ova" | cut -d' ' -f1)

# FIX is on unless DEMO_FIX=0; the sample has no real kernel, so the
# initramfs is not regenerated (its config is still fixed).
fix=${DEMO_FIX:-1}
if [ "$fix" = 1 ]; then
	fixjson='{"enabled": true, "initramfs": {"enabled": true, "regenerate": false}, "network": {"enabled": true, "fix_level": "full"}, "vmware_tools": {"enabled": true}}'
else
	fixjson='{"enabled": false}'
fi
cat >"$run/demo-vm.json" <<X
{
  "version": "1.0",
  "name": "demo-vm",
  "pipeline": {
    "load": {"source_type": "ova", "source_path": "$src/demo-vm.ova", "sha256": "$sum"},
    "inspect": {"enabled": true, "detect_os": true},
    "fix": $fixjson,
    "convert": {"output_format": "qcow2", "compress": true},
    "validate": {"enabled": true, "boot_test": false}
  }
}
X
echo "demo: manifest $run/demo-vm.json"
echo "demo: running $bin convert -f $run/demo-vm.json -o $run/out"
echo
set +e
"$bin" convert -f "$run/demo-vm.json" -o "$run/out"
rc=$?
set -e
echo
rep=$run/out/demo-vm/demo-vm.report.json
if [ -f "$rep" ]; then
	python3 - "$rep" <<'X'
import json, sys
r = json.load(open(sys.argv[1]))
print("report summary (%s, report_version %s)" % (sys.argv[1], r["report_version"]))
print("  status:   %s  (%s .. %s)" % (r["status"], r["started_at"], r["finished_at"]))
s = r["source"]
print("  source:   %s, detected %s, sha256 %s" % (s["path"], s["detected_format"], "verified" if s.get("sha256") else "not checked"))
for d in s.get("disks", []):
    print("            disk %s: %s %s, %d bytes virtual" % (d["id"], d["format"], d.get("subformat", ""), d["virtual_size"]))
for st in r["stages"]:
    extra = st.get("error") or st.get("reason") or ""
    print("  %-9s %-8s %6.2fs %s" % (st["name"], st["status"], st["duration_seconds"], extra))
g = r.get("guest")
if g and g.get("os"):
    print("  guest:    %s (%s), boot loader %s" % (g["os"].get("pretty_name", g["os"]["type"]), g.get("partition_table", "?"), g.get("boot_loader", "?")))
for c in r.get("changes", []):
    before, after = c.get("before", "").splitlines(), c.get("after", "").splitlines()
    print("  fix %-12s %s %s" % (c["fix"], c["file"], c.get("note", "")))
    for line in before:
        if line not in after:
            print("      - %s" % line.strip())
    for line in after:
        if line not in before:
            print("      + %s" % line.strip())
for a in r.get("artifacts", []):
    print("  artifact: %-10s %s (%s, %d bytes, sha256 %s)" % (a["kind"], a["path"], a.get("format", ""), a["size"], a.get("sha256", "")[:16] + "..."))
for w in r.get("warnings", []):
    print("  warning:  %s" % w)
if r.get("error"):
    print("  FAILED in %s: %s" % (r["error"]["stage"], r["error"]["message"]))
X
	echo
	echo "qcow2:      $(ls "$run"/out/demo-vm/*.qcow2 2>/dev/null || echo 'none (conversion failed)')"
	echo "domain:     $run/out/demo-vm/demo-vm.xml (next step: virsh define it, or set target.libvirt)"
	echo "report:     $rep"
else
	echo "demo: no report was written (see the error above)"
fi
if [ $rc -ne 0 ]; then
	echo "demo: hyper2kvmd convert FAILED with exit status $rc" >&2
else
	echo "demo: conversion completed"
fi
exit $rc

package inspect

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/guest"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

func TestResolve(t *testing.T) {
	one := &report.Guest{Partitions: []report.Partition{
		{Number: 1, UUID: "AbCd-1", PartUUID: "0badcafe-01", Label: "root"},
		{Number: 2, PartLabel: "swap"},
	}}
	two := &report.Guest{Partitions: append(append([]report.Partition{}, one.Partitions...),
		report.Partition{Disk: 1, Number: 1, UUID: "data-uuid"},
		report.Partition{Disk: 1, Number: 0, UUID: "whole-disk"})}
	lvm := &report.Guest{Partitions: []report.Partition{
		{Number: 1, UUID: "boot-uuid"},
		{Number: 2, FSType: "LVM2_member"},
		{Number: 0, Type: "lvm-lv", LV: "my-vg/root", Device: "/dev/mapper/my--vg-root", UUID: "lv-uuid", FSType: "xfs"},
	}}
	tests := []struct {
		g    *report.Guest
		dev  string
		want string // "disk:number", "" when not found
	}{
		{one, "/dev/sda1", "0:1"}, {one, "/dev/hda2", "0:2"}, {one, "/dev/vda1", "0:1"}, {one, "/dev/xvda2", "0:2"}, {one, "/dev/sdb1", ""},
		{one, "UUID=abcd-1", "0:1"}, {one, `UUID="AbCd-1"`, "0:1"}, {one, "PARTUUID=0badcafe-01", "0:1"}, {one, "LABEL=root", "0:1"},
		{one, "PARTLABEL=swap", "0:2"}, {one, "/dev/disk/by-uuid/AbCd-1", "0:1"}, {one, "/dev/disk/by-label/root", "0:1"},
		{one, "/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0-part2", "0:2"}, {one, "/dev/disk/by-id/scsi-36000c29-part1", "0:1"},
		{one, "/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0", ""}, {one, "/dev/sda1x", ""}, {one, "proc", ""}, {one, "/dev/mapper/vg-root", ""},
		// A second disk: its kernel names, SCSI target and ids.
		{two, "/dev/sdb1", "1:1"}, {two, "/dev/hdb1", "1:1"}, {two, "/dev/sdb", "1:0"}, {two, "/dev/sdc1", ""}, {two, "/dev/sda1", "0:1"},
		{two, "UUID=data-uuid", "1:1"}, {two, "/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:1:0-part1", "1:1"},
		{two, "/dev/disk/by-id/scsi-36000c29-part1", ""}, // which disk a serial was is unknown
		// LVs: by mapper name, /dev/VG/LV and UUID; never by a kernel name.
		{lvm, "/dev/mapper/my--vg-root", "lv:my-vg/root"}, {lvm, "/dev/my-vg/root", "lv:my-vg/root"}, {lvm, "UUID=lv-uuid", "lv:my-vg/root"},
		{lvm, "/dev/mapper/my--vg-gone", ""}, {lvm, "/dev/my-vg/gone", ""}, {lvm, "/dev/sda", ""}, {lvm, "/dev/sda1", "0:1"},
	}
	for _, tt := range tests {
		p, ok := Resolve(tt.g, tt.dev)
		got := ""
		if ok {
			got = fmt.Sprintf("%d:%d", p.Disk, p.Number)
			if p.LV != "" {
				got = "lv:" + p.LV
			}
		}
		if got != tt.want {
			t.Errorf("Resolve(%q) = %q, want %q", tt.dev, got, tt.want)
		}
	}
}

func TestDiskDevName(t *testing.T) {
	for _, tt := range []struct {
		disk, n int
		want    string
	}{{0, 1, "/dev/sda1"}, {1, 0, "/dev/sdb"}, {25, 2, "/dev/sdz2"}, {26, 1, "/dev/sdaa1"}, {27, 1, "/dev/sdab1"}} {
		got := DiskDevName(tt.disk, tt.n)
		if got != tt.want {
			t.Errorf("DiskDevName(%d, %d) = %q, want %q", tt.disk, tt.n, got, tt.want)
		}
		if m := kernelDev.FindStringSubmatch(got); m == nil || diskIndex(m[1]) != tt.disk {
			t.Errorf("diskIndex does not invert %q", got)
		}
	}
}

func TestParseTab(t *testing.T) {
	got := ParseTab([]byte("# c\n\n/dev/sda1 / ext4 defaults 0 1\nUUID=x\tnone swap sw\nbad\n"), 2)
	if len(got) != 2 || got[0] != (report.MountEntry{Device: "/dev/sda1", MountPoint: "/", FSType: "ext4", Options: "defaults"}) || got[1].FSType != "swap" {
		t.Errorf("got %+v", got)
	}
}

func TestOSRelease(t *testing.T) {
	kv := parseOSRelease([]byte("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID='12'\n# x=y\n"))
	if kv["ID"] != "debian" || kv["VERSION_ID"] != "12" || kv["PRETTY_NAME"] != "Debian GNU/Linux 12 (bookworm)" || kv["# x"] != "" {
		t.Errorf("got %v", kv)
	}
}

func TestChoose(t *testing.T) {
	for _, tt := range []struct {
		parts []report.Partition
		want  string
	}{
		{[]report.Partition{{Number: 1, FSType: "ext4"}}, "native"},
		{[]report.Partition{{Number: 2, FSType: "LVM2_member"}, {LV: "rhel/root", FSType: "xfs", Start: 1 << 20, Size: 1 << 30}}, "native"},
		{[]report.Partition{{LV: "rhel/root", FSType: "xfs"}, {LV: "rhel/data", Note: "LV rhel/data: segment type \"thin\" with 0 stripes is not linear"}}, "guestfs"},
		// Only md members: the root can only be on an array the appliance assembles.
		{[]report.Partition{{Number: 1, FSType: "linux_raid_member"}, {Number: 1, Disk: 1, FSType: "linux_raid_member"}}, "guestfs"},
		// md members beside a plain root (a mirrored /srv): native still opens the root.
		{[]report.Partition{{Number: 1, FSType: "ext4"}, {Number: 2, FSType: "linux_raid_member"}}, "native"},
	} {
		got, why := Choose(&report.Guest{Partitions: tt.parts})
		if got != tt.want || !strings.HasPrefix(why, got+": ") {
			t.Errorf("Choose(%+v) = %s (%s), want %s", tt.parts, got, why, tt.want)
		}
	}
}

func TestNoRootNamesEncryptedVolumes(t *testing.T) {
	g := &report.Guest{Partitions: []report.Partition{
		{Number: 1, Disk: 0, FSType: "ext4", Device: "/dev/sda1"},
		{Number: 2, Disk: 0, FSType: "crypto_LUKS", Device: "/dev/sda2", UUID: "1c5e0000-aaaa-4bbb-8ccc-dddddddddddd"},
	}}
	err := noRoot(g)
	if !errors.Is(err, errNoRoot) || !strings.Contains(err.Error(), "encrypted volume: /dev/sda2 is LUKS (UUID 1c5e0000-aaaa-4bbb-8ccc-dddddddddddd)") {
		t.Errorf("noRoot = %v", err)
	}
	if got := Encrypted(g); !strings.HasPrefix(got, "encrypted volume: /dev/sda2") {
		t.Errorf("Encrypted = %q", got)
	}
	if got := Encrypted(&report.Guest{Partitions: g.Partitions[:1]}); got != "" {
		t.Errorf("Encrypted without LUKS = %q", got)
	}
}

func TestChooseUEFI(t *testing.T) {
	g := &report.Guest{Firmware: "efi", Partitions: []report.Partition{{Number: 1, FSType: "vfat", Device: "/dev/sda1"}, {Number: 2, FSType: "ext4"}}}
	got, why := Choose(g)
	want := map[bool]string{true: "native", false: "guestfs"}[guest.HostKernelMounts("vfat")]
	if got != want {
		t.Errorf("Choose on a host where vfat is %v = %s (%s), want %s", guest.HostKernelMounts("vfat"), got, why, want)
	}
	if want == "guestfs" && !strings.Contains(why, "the ESP /dev/sda1 is vfat") {
		t.Errorf("reason %q", why)
	}
	g.Firmware = "bios"
	if got, why := Choose(g); got != "native" {
		t.Errorf("a BIOS guest's vfat partition changed the choice: %s (%s)", got, why)
	}
}

func TestNoRootNamesMDMembers(t *testing.T) {
	g := &report.Guest{Partitions: []report.Partition{
		{Number: 1, Disk: 0, FSType: "linux_raid_member", Device: "/dev/sda1"},
		{Number: 1, Disk: 1, FSType: "linux_raid_member", Device: "/dev/sdb1"},
	}}
	err := noRoot(g)
	if !errors.Is(err, errNoRoot) || !strings.Contains(err.Error(), "/dev/sdb1 is an md RAID member") || !strings.Contains(err.Error(), "use fix.backend guestfs") {
		t.Errorf("noRoot = %v", err)
	}
	if !assembled(g) || assembled(&report.Guest{Partitions: []report.Partition{{Number: 1, FSType: "ext4"}}}) {
		t.Error("assembled: md members not seen, or a plain partition taken for one")
	}
}

func TestMountOfMD(t *testing.T) {
	m := mountOf(report.Partition{Type: "md", Device: "/dev/md127", FSType: "ext4"}, "/", true)
	if m.Device != "/dev/md127" || m.Number != 0 {
		t.Errorf("mountOf an md array = %+v, want device /dev/md127", m)
	}
}

// A root on an md array or on an LV with extents on two disks is written
// only through the guestfs appliance, with a writable overlay of every
// disk it spans; anything less is refused before anything is opened.
func TestWriteRefusedAcrossDisks(t *testing.T) {
	md := report.Partition{Type: "md", Device: "/dev/md0", FSType: "ext4", Disks: []int{0, 1}}
	lv := report.Partition{Type: "lvm-lv", LV: "rhel/root", Device: "/dev/mapper/rhel-root", FSType: "ext4", Disks: []int{0, 1},
		Note: "LV rhel/root " + spansDisks + " [1 2]: only the guestfs backend, given every disk, can open it"}
	mdOneDisk := report.Partition{Type: "md", Device: "/dev/md0", FSType: "ext4", Disks: []int{0}}
	ro := []Image{{}, {Path: "/nonexistent-b.qcow2", Format: "qcow2"}}
	for _, c := range []struct {
		name    string
		root    report.Partition
		backend string
		others  []Image
		want    string
	}{
		{"md without the other leg", md, "guestfs", nil, "no writable overlay of disk 2"},
		{"lv with the other disk read-only", lv, "guestfs", ro, "no writable overlay of disk 2"},
		{"md native", md, "native", nil, "only the guestfs backend writes"},
		{"md on one disk native", mdOneDisk, "native", nil, "use fix.backend guestfs or auto"},
		{"lv native", lv, "native", nil, "disks 1 and 2"},
	} {
		g := &report.Guest{Root: c.root.Device, Partitions: []report.Partition{c.root}}
		_, _, err := OpenRootRWDisks(context.Background(), Image{Path: "/nonexistent.qcow2", Format: "qcow2"}, c.others, c.backend, []string{"/"}, g)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a refusal saying %q", c.name, err, c.want)
		}
	}
}

func TestWriteDisks(t *testing.T) {
	legs := []report.Partition{
		{Number: 1, Disk: 0, FSType: "linux_raid_member", UUID: "424de242-5026-2d4e-c1bd-818b421e5150"},
		{Number: 1, Disk: 2, FSType: "linux_raid_member", UUID: "424de242-5026-2d4e-c1bd-818b421e5150"},
		{Number: 1, Disk: 1, FSType: "linux_raid_member", UUID: "11111111-5026-2d4e-c1bd-818b421e5150"},
	}
	if got := mdDisks(&report.Guest{Partitions: legs}, "424de24250262d4ec1bd818b421e5150"); !slices.Equal(got, []int{0, 2}) {
		t.Errorf("mdDisks by the array's UUID = %v, want [0 2]", got)
	}
	if got := mdDisks(&report.Guest{Partitions: legs}, ""); !slices.Equal(got, []int{0, 1, 2}) {
		t.Errorf("mdDisks without a UUID = %v, want every disk with a member", got)
	}
	for _, c := range []struct {
		name string
		g    *report.Guest
		want []int
	}{
		{"plain", &report.Guest{Root: "/dev/sdb1", Partitions: []report.Partition{{Number: 1, Disk: 1, Device: "/dev/sdb1", FSType: "ext4"}}}, []int{1}},
		{"md root", &report.Guest{Root: "/dev/md127", Partitions: []report.Partition{{Type: "md", Device: "/dev/md127", Disks: []int{2, 0}}}}, []int{0, 2}},
		{"lv /boot across disks", &report.Guest{Root: "/dev/sda1",
			Partitions: []report.Partition{{Number: 1, Device: "/dev/sda1", FSType: "ext4"}, {Type: "lvm-lv", LV: "vg/boot", Device: "/dev/mapper/vg-boot", Disks: []int{0, 3}}},
			Fstab:      []report.MountEntry{{Device: "/dev/mapper/vg-boot", MountPoint: "/boot"}, {Device: "/dev/sdd1", MountPoint: "/data"}}}, []int{0, 3}},
	} {
		if got := WriteDisks(c.g); !slices.Equal(got, c.want) {
			t.Errorf("%s: WriteDisks = %v, want %v", c.name, got, c.want)
		}
	}
}

package test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/boot"
	"github.com/hyper2kvm/hyper2kvm/agent/engine"
	"github.com/hyper2kvm/hyper2kvm/agent/fix"
	"github.com/hyper2kvm/hyper2kvm/agent/guest"
	"github.com/hyper2kvm/hyper2kvm/agent/inspect"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// Guest families (issue 19): each test builds its guest's layout from
// scratch, inspects and fixes it with the default settings, and reads the
// result out of the overlay independently of the code under test.

// netGuest is configured as on VMware with every network style, each
// naming a VMware NIC with a static address.
var netGuest = guestTree{files: map[string]string{
	"etc/os-release": "ID=ubuntu\nVERSION_ID=\"22.04\"\n",
	"etc/fstab":      "/dev/sda1 / ext4 defaults 0 1\n",
	"etc/netplan/00-installer-config.yaml": "network:\n  version: 2\n  ethernets:\n    ens160:\n      match:\n        macaddress: 00:50:56:a1:b2:c3\n" +
		"      set-name: ens160\n      addresses:\n        - 192.0.2.10/24\n      routes:\n        - to: default\n          via: 192.0.2.1\n",
	"etc/NetworkManager/system-connections/ens192.nmconnection": "[connection]\nid=ens192\ntype=ethernet\ninterface-name=ens192\n\n" +
		"[ethernet]\nmac-address=00:50:56:A1:B2:C4\n\n[ipv4]\naddress1=198.51.100.7/24,198.51.100.1\nmethod=manual\n",
	"etc/sysconfig/network-scripts/ifcfg-ens224": "DEVICE=ens224\nHWADDR=00:50:56:a1:b2:c5\nBOOTPROTO=none\nIPADDR=203.0.113.9\nPREFIX=24\nONBOOT=yes\n",
	"etc/network/interfaces":                     "auto lo\niface lo inet loopback\n\nallow-hotplug ens256\niface ens256 inet static\n    address 10.9.8.7/24\n    hwaddress ether 00:50:56:a1:b2:c6\n",
	"etc/firewalld/zones/public.xml":             "<?xml version=\"1.0\"?>\n<zone>\n  <interface name=\"ens160\"/>\n</zone>\n",
}}

// TestFamilyNetworkDefaultLevel: at the default fix level every interface a
// VMware guest configured (netplan matched by MAC with set-name, a
// NetworkManager keyfile, ifcfg, ifupdown) is configured for the virtio NIC
// that takes its place, static addresses kept. The old default kept
// "ens160" and the virtio NIC (enp1s0) came up without an address.
func TestFamilyNetworkDefaultLevel(t *testing.T) {
	needRoot(t)
	src := buildGuest(t, netGuest)
	for _, tc := range []struct {
		level    string
		firewall string // what the firewalld zone must name after FIX
	}{
		{"", `name="ens160"`}, // the default: service configuration is left alone
		{"full", `name="enp1s0"`},
	} {
		t.Run("level="+tc.level, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			g, err := inspect.Guest(ctx, inspect.Image{Path: src, Format: "raw"}, "native", true)
			if err != nil {
				t.Fatal(err)
			}
			ov := overlayOf(t, src, "raw")
			spec := &manifest.Fix{Initramfs: &manifest.InitramfsFix{Regenerate: new(bool)}}
			if tc.level != "" {
				spec.Network = &manifest.NetworkFix{FixLevel: tc.level}
			}
			changes, err := fix.Apply(ctx, inspect.Image{Path: ov, Format: "qcow2"}, "native", spec, g)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string][]string{
				"/etc/netplan/00-installer-config.yaml":                      {"    enp1s0:\n      addresses:\n        - 192.0.2.10/24\n", "via: 192.0.2.1"},
				"/etc/NetworkManager/system-connections/ens192.nmconnection": {"interface-name=enp2s0\n", "address1=198.51.100.7/24,198.51.100.1"},
				"/etc/sysconfig/network-scripts/ifcfg-enp3s0":                {"DEVICE=enp3s0\n", "IPADDR=203.0.113.9\n"},
				"/etc/network/interfaces":                                    {"allow-hotplug enp4s0\niface enp4s0 inet static\n    address 10.9.8.7/24\n"},
			}
			for p, subs := range want {
				got, ok := guestFile(t, ov, p)
				if !ok {
					t.Errorf("%s missing after FIX", p)
					continue
				}
				for _, s := range subs {
					if !strings.Contains(got, s) {
						t.Errorf("%s after FIX lacks %q:\n%s", p, s, got)
					}
				}
				for _, bad := range []string{"00:50:56", "00:50:56", "ens160", "ens224", "ens256", "set-name", "macaddress"} {
					if strings.Contains(strings.ToLower(got), bad) {
						t.Errorf("%s after FIX still has %q:\n%s", p, bad, got)
					}
				}
			}
			if _, ok := guestFile(t, ov, "/etc/sysconfig/network-scripts/ifcfg-ens224"); ok {
				t.Error("ifcfg-ens224 still there: the interface's file was not renamed with it")
			}
			if !hasChange(changes, "/etc/netplan/00-installer-config.yaml") {
				t.Error("no change reported for the netplan file")
			}
			if got, _ := guestFile(t, ov, "/etc/firewalld/zones/public.xml"); !strings.Contains(got, tc.firewall) {
				t.Errorf("firewalld zone: want %s:\n%s", tc.firewall, got)
			}
		})
	}
}

// dataDisk is a second disk: an MBR table and one ext4 filesystem with the
// given UUID on partition 1.
func dataDisk(t *testing.T, uuid string) string {
	t.Helper()
	work := t.TempDir()
	fsimg := filepath.Join(work, "data.ext4")
	run(t, "mkfs.ext4", "-q", "-F", "-L", "data", "-U", uuid, fsimg, "14M")
	disk := filepath.Join(work, "data.raw")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 16<<20); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sfdisk", "-q", "--no-reread", "--no-tell-kernel", disk)
	cmd.Stdin = strings.NewReader("label: dos\nlabel-id: 0x0ddba11\nstart=2048, type=83\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
	run(t, "dd", "if="+fsimg, "of="+disk, "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none")
	return disk
}

// TestFamilyMultiDisk: a VM whose fstab mounts /dev/sdb1 from its second
// disk. The engine inspects every disk of the OVA, rewrites that entry to
// the filesystem's UUID (the old code left /dev/sdb1, and the converted
// guest stopped in emergency mode), and the report lists each filesystem
// with its disk, its name on the source VM and its mount point. The
// backend is left to auto, which picks native and says why.
func TestFamilyMultiDisk(t *testing.T) {
	needRoot(t)
	engNeedTools(t)
	const dataUUID = "d47a0000-1111-4222-8333-944445555666"
	tr := guestTree{files: map[string]string{
		"etc/os-release": "ID=debian\nVERSION_ID=\"12\"\n",
		"etc/fstab":      "/dev/sda1 / ext4 errors=remount-ro 0 1\n/dev/sdb1 /data ext4 defaults 0 2\n/dev/mapper/vg-logs /logs xfs defaults 0 2\n",
		"etc/crypttab":   "# none\n",
	}}
	src := t.TempDir()
	ova := fixture.OVA(t, src, buildGuest(t, tr), dataDisk(t, dataUUID))
	sum := fixture.SHA256(t, ova)
	out := filepath.Join(t.TempDir(), "out")
	m := engManifest("md", "ova", ova)
	on := true
	m.Pipeline.Fix = &manifest.Fix{Enabled: &on, Initramfs: &manifest.InitramfsFix{Regenerate: new(bool)}}
	m.Pipeline.Validate = &manifest.Validate{Compare: new(bool)}
	m.SetDefaults()
	// No backend named: auto, which takes native for plain partitions.
	rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: out})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	got, ok := guestFile(t, filepath.Join(out, "md.qcow2"), "/etc/fstab")
	if !ok {
		t.Fatal("no /etc/fstab in the converted first disk")
	}
	want := "UUID=" + rootUUID + " / ext4 errors=remount-ro 0 1\nUUID=" + dataUUID + " /data ext4 defaults 0 2\n/dev/mapper/vg-logs /logs xfs defaults 0 2\n"
	if got != want {
		t.Errorf("converted fstab:\n%s\nwant:\n%s", got, want)
	}
	var data *report.Partition
	for i, p := range rep.Guest.Partitions {
		t.Logf("filesystem %+v", p)
		if p.UUID == dataUUID {
			data = &rep.Guest.Partitions[i]
		}
	}
	if data == nil || data.Disk != 1 || data.Device != "/dev/sdb1" || data.MountPoint != "/data" || !strings.Contains(data.DiskName, "disk2") {
		t.Errorf("the report does not list the second disk's filesystem with its disk and mount point: %+v", data)
	}
	if rep.Guest.Backend != "native" || !strings.HasPrefix(rep.Guest.BackendReason, "native: ") {
		t.Errorf("auto chose %q (%s), want native", rep.Guest.Backend, rep.Guest.BackendReason)
	}
	if rep.Guest.Root != "/dev/sda1" || rep.Guest.Partitions[0].MountPoint != "/" {
		t.Errorf("root %q, first filesystem %+v", rep.Guest.Root, rep.Guest.Partitions[0])
	}
	if fixture.SHA256(t, ova) != sum {
		t.Error("the OVA changed")
	}
}

// partitionFile reads p from partition 1 (at 1 MiB) of a disk image by
// mounting it read-only on the host with opts: an independent check for
// filesystems debugfs cannot read.
func partitionFile(t *testing.T, img, fstype, opts, p string) (string, bool) {
	t.Helper()
	work := t.TempDir()
	raw := filepath.Join(work, "check.raw")
	run(t, "qemu-img", "convert", "-O", "raw", img, raw)
	mnt := filepath.Join(work, "mnt")
	os.Mkdir(mnt, 0o755)
	o := "ro,loop,offset=1048576"
	if opts != "" {
		o += "," + opts
	}
	run(t, "mount", "-t", fstype, "-o", o, raw, mnt)
	defer run(t, "umount", mnt)
	b, err := os.ReadFile(filepath.Join(mnt, p))
	return string(b), err == nil
}

const btrfsUUID = "b7f50000-aaaa-4bbb-8ccc-dddddddddddd"

// btrfsGuest is a disk with one btrfs filesystem on partition 1 whose top
// level holds subvolumes "@" (the root) and "@home", the way Ubuntu's and
// Debian's installers lay it out: the default subvolume is the top level,
// which holds no /etc.
func btrfsGuest(t *testing.T) string {
	t.Helper()
	needTools(t, "mkfs.btrfs", "btrfs", "sfdisk", "mount")
	if b, _ := os.ReadFile("/proc/filesystems"); !strings.Contains(string(b), "btrfs") {
		t.Skip("the host kernel has no btrfs")
	}
	work := t.TempDir()
	fsimg := filepath.Join(work, "root.btrfs")
	if err := os.WriteFile(fsimg, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(fsimg, 128<<20)
	run(t, "mkfs.btrfs", "-q", "-L", "broot", "-U", btrfsUUID, fsimg)
	mnt := filepath.Join(work, "mnt")
	os.Mkdir(mnt, 0o755)
	run(t, "mount", "-o", "loop", fsimg, mnt)
	mounted := true
	defer func() {
		if mounted {
			exec.Command("umount", mnt).Run()
		}
	}()
	run(t, "btrfs", "-q", "subvolume", "create", filepath.Join(mnt, "@"))
	run(t, "btrfs", "-q", "subvolume", "create", filepath.Join(mnt, "@home"))
	for p, c := range map[string]string{
		"@/etc/os-release":     "ID=ubuntu\nVERSION_ID=\"22.04\"\n",
		"@/etc/fstab":          "/dev/sda1 / btrfs defaults,subvol=@ 0 0\n/dev/sda1 /home btrfs defaults,subvol=@home 0 0\n",
		"@/boot/grub/grub.cfg": "menuentry 'Ubuntu' {\n\tlinux /@/boot/vmlinuz-6.1 root=/dev/sda1 ro rootflags=subvol=@ console=ttyS0\n}\n",
		"@/etc/default/grub":   "GRUB_CMDLINE_LINUX=\"root=/dev/sda1\"\n",
		"@/boot/vmlinuz-6.1":   "kernel\n",
		"@home/user/notes.txt": "home\n",
		"@/etc/netplan/a.yaml": "network:\n  ethernets:\n    ens160:\n      dhcp4: true\n",
	} {
		full := filepath.Join(mnt, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "umount", mnt)
	mounted = false
	disk := filepath.Join(work, "disk.raw")
	os.WriteFile(disk, nil, 0o644)
	os.Truncate(disk, 130<<20)
	cmd := exec.Command("sfdisk", "-q", "--no-reread", "--no-tell-kernel", disk)
	cmd.Stdin = strings.NewReader("label: dos\nlabel-id: 0x0b7f5000\nstart=2048, type=83\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
	run(t, "dd", "if="+fsimg, "of="+disk, "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none")
	return disk
}

// TestFamilyBtrfs: the root is subvolume "@" of a btrfs filesystem whose
// default subvolume is the top level. INSPECT finds it (the old code said
// "cannot find the guest's root filesystem"), FIX mounts it with subvol=@,
// makes fstab and root= stable and keeps rootflags=subvol=@.
func TestFamilyBtrfs(t *testing.T) {
	needRoot(t)
	src := btrfsGuest(t)
	srcSum := sha(t, src)
	for _, be := range backends(t) {
		t.Run(be, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			g, err := inspect.Guest(ctx, inspect.Image{Path: src, Format: "raw"}, be, true)
			if err != nil {
				t.Fatal(err)
			}
			if g.Root != "/dev/sda1" || g.RootSubvol != "@" || g.OS == nil || g.OS.ID != "ubuntu" || len(g.Kernels) != 1 {
				t.Fatalf("inspection: root %q subvol %q os %+v kernels %v", g.Root, g.RootSubvol, g.OS, g.Kernels)
			}
			ov := overlayOf(t, src, "raw")
			if _, err := fix.Apply(ctx, inspect.Image{Path: ov, Format: "qcow2"}, be, &manifest.Fix{Initramfs: &manifest.InitramfsFix{Regenerate: new(bool)}}, g); err != nil {
				t.Fatal(err)
			}
			for p, want := range map[string]string{
				"/etc/fstab":          "UUID=" + btrfsUUID + " / btrfs defaults,subvol=@ 0 0\nUUID=" + btrfsUUID + " /home btrfs defaults,subvol=@home 0 0\n",
				"/boot/grub/grub.cfg": "menuentry 'Ubuntu' {\n\tlinux /@/boot/vmlinuz-6.1 root=UUID=" + btrfsUUID + " ro rootflags=subvol=@ console=ttyS0\n}\n",
				"/etc/default/grub":   "GRUB_CMDLINE_LINUX=\"root=UUID=" + btrfsUUID + " rootflags=subvol=@\"\n",
				"/etc/netplan/a.yaml": "network:\n  ethernets:\n    enp1s0:\n      dhcp4: true\n",
			} {
				got, ok := partitionFile(t, ov, "btrfs", "subvol=@", p)
				if !ok || got != want {
					t.Errorf("%s after FIX:\n%s\nwant:\n%s", p, got, want)
				}
			}
			if sha(t, src) != srcSum {
				t.Fatal("source image modified")
			}
		})
	}
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, name := range tools {
		if _, err := exec.LookPath(name); err != nil {
			t.Skipf("%s not installed (packaging/deps.txt)", name)
		}
	}
}

const lvmBootUUID = "b0070000-1111-4222-8333-444455556666"

// lvmGuest is the RHEL layout, built inside the libguestfs appliance (the
// host's device-mapper never sees it): /boot (ext4) on sda1, a PV on
// sda2 with VG "rhel", LVs root (xfs) and swap, everything named by
// /dev/mapper paths and /dev/sda1.
func lvmGuest(t *testing.T) string {
	t.Helper()
	needTools(t, "guestfish")
	work := t.TempDir()
	script := `sparse disk.raw 512M
run
part-init /dev/sda mbr
part-add /dev/sda p 2048 129023
part-add /dev/sda p 129024 -2048
part-set-mbr-id /dev/sda 2 0x8e
pvcreate /dev/sda2
vgcreate rhel /dev/sda2
lvcreate root rhel 320
lvcreate swap rhel 16
lvcreate frag rhel 8
lvcreate pad rhel 8
lvresize /dev/rhel/frag 16
lvcreate var rhel 16
mkfs ext4 /dev/rhel/var
mkfs ext4 /dev/sda1 label:boot
set-uuid /dev/sda1 ` + lvmBootUUID + `
mkfs xfs /dev/rhel/root
mkswap /dev/rhel/swap
mount /dev/rhel/root /
mkdir-p /etc/default
mkdir-p /boot
write /etc/os-release "ID=rhel\nVERSION_ID=\"9.3\"\n"
write /etc/fstab "/dev/mapper/rhel-root / xfs defaults 0 0\n/dev/sda1 /boot ext4 defaults 1 2\n/dev/mapper/rhel-swap none swap defaults 0 0\n/dev/mapper/rhel-var /var ext4 defaults 0 0\n"
mkdir-p /var
mount /dev/rhel/var /var
mkdir-p /var/lib
write /var/lib/h2k-on-var "var\n"
write /etc/default/grub "GRUB_CMDLINE_LINUX=\"root=/dev/mapper/rhel-root rd.lvm.lv=rhel/root resume=/dev/mapper/rhel-swap\"\n"
write /etc/sysconfig/network-scripts/ifcfg-ens192 "DEVICE=ens192\nHWADDR=00:50:56:a1:b2:c4\nBOOTPROTO=none\nIPADDR=192.0.2.20\nPREFIX=24\n"
mount /dev/sda1 /boot
mkdir-p /boot/grub2
write /boot/grub2/grub.cfg "linux /vmlinuz-5.14 root=/dev/mapper/rhel-root ro\n"
write /boot/vmlinuz-5.14 "kernel\n"
umount-all
`
	script = strings.Replace(script, "mkdir-p /etc/default\n", "mkdir-p /etc/default\nmkdir-p /etc/sysconfig/network-scripts\n", 1)
	fixture.Guestfish(t, work, "the LVM guest", script)
	return filepath.Join(work, "disk.raw")
}

// TestFamilyLVM: root on LV rhel/root, /boot on sda1. INSPECT finds the
// root through the LVM2 metadata it reads itself (native: opened by the
// LV's byte range, no device-mapper; guestfs: in the appliance); the old
// code said "cannot find the guest's root filesystem". FIX makes
// /dev/sda1 stable and keeps the /dev/mapper names.
func TestFamilyLVM(t *testing.T) {
	needRoot(t)
	src := lvmGuest(t)
	srcSum := sha(t, src)
	for _, be := range backends(t) {
		t.Run(be, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			g, err := inspect.Guest(ctx, inspect.Image{Path: src, Format: "raw"}, be, true)
			if err != nil {
				t.Fatal(err)
			}
			if g.Root != "/dev/mapper/rhel-root" || g.OS == nil || g.OS.ID != "rhel" || strings.Join(g.Kernels, ",") != "/boot/vmlinuz-5.14" {
				t.Fatalf("inspection: root %q os %+v kernels %v", g.Root, g.OS, g.Kernels)
			}
			lvs := map[string]string{}
			for _, p := range g.Partitions {
				t.Logf("filesystem %+v", p)
				if p.LV != "" {
					lvs[p.LV] = p.FSType + " " + p.MountPoint
				}
			}
			if lvs["rhel/root"] != "xfs /" || lvs["rhel/swap"] != "swap " {
				t.Errorf("LVs in the report: %v", lvs)
			}
			if g.Backend != be {
				t.Errorf("report says backend %q", g.Backend)
			}
			// The guest's tree as its fstab mounts it: /var is its own LV,
			// where the guest's initramfs tools keep their temporary files.
			s, err := inspect.OpenRoot(ctx, inspect.Image{Path: src, Format: "raw"}, be, false, g)
			if err != nil {
				t.Fatal(err)
			}
			if b, err := s.ReadFile(ctx, "/var/lib/h2k-on-var"); err != nil || string(b) != "var\n" {
				t.Errorf("/var (LV rhel/var) not mounted in the session: %q %v", b, err)
			}
			s.Close()
			ov := overlayOf(t, src, "raw")
			changes, err := fix.Apply(ctx, inspect.Image{Path: ov, Format: "qcow2"}, be, &manifest.Fix{Initramfs: &manifest.InitramfsFix{Regenerate: new(bool)}}, g)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range changes {
				t.Logf("change %s %s %s", c.Fix, c.File, c.Note)
			}
			got := fixture.GuestfishRead(t, []string{ov}, []string{"/dev/rhel/root", "/dev/sda1:/boot"},
				"/etc/fstab", "/etc/default/grub", "/boot/grub2/grub.cfg", "/etc/sysconfig/network-scripts/ifcfg-enp1s0")
			want := []string{
				"/dev/mapper/rhel-root / xfs defaults 0 0\nUUID=" + lvmBootUUID + " /boot ext4 defaults 1 2\n/dev/mapper/rhel-swap none swap defaults 0 0\n/dev/mapper/rhel-var /var ext4 defaults 0 0\n",
				"GRUB_CMDLINE_LINUX=\"root=/dev/mapper/rhel-root rd.lvm.lv=rhel/root resume=/dev/mapper/rhel-swap\"\n",
				"linux /vmlinuz-5.14 root=/dev/mapper/rhel-root ro\n",
				"DEVICE=enp1s0\nBOOTPROTO=none\nIPADDR=192.0.2.20\nPREFIX=24\n",
			}
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("after FIX:\n%s\nwant:\n%s", got[i], want[i])
				}
			}
			if sha(t, src) != srcSum {
				t.Fatal("source image modified")
			}
		})
	}
	// auto: the LV "frag" is in two pieces, which only the appliance opens,
	// so auto takes guestfs and says why.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	g, err := inspect.Guest(ctx, inspect.Image{Path: src, Format: "raw"}, "auto", false)
	if err != nil {
		t.Fatal(err)
	}
	if g.Backend != "guestfs" || !strings.Contains(g.BackendReason, "rhel/frag") || !strings.Contains(g.BackendReason, "not contiguous") {
		t.Errorf("auto chose %q: %s", g.Backend, g.BackendReason)
	}
}

// TestFamilyRootOnSecondDisk: the first disk holds only data, the root is
// /dev/sdb1. INSPECT finds the root on the second disk and FIX works on
// that disk, making both disks' entries stable.
func TestFamilyRootOnSecondDisk(t *testing.T) {
	needRoot(t)
	const dataUUID = "da7a0000-1111-4222-8333-944445555777"
	root := buildGuest(t, guestTree{files: map[string]string{
		"etc/os-release":   "ID=debian\n",
		"etc/fstab":        "/dev/sdb1 / ext4 defaults 0 1\n/dev/sda1 /data ext4 defaults 0 2\n",
		"etc/default/grub": "GRUB_CMDLINE_LINUX=\"root=/dev/sdb1\"\n",
	}})
	data := dataDisk(t, dataUUID)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	g, err := inspect.GuestDisks(ctx, []inspect.Image{{Path: data, Format: "raw", Name: "data.vmdk"}, {Path: root, Format: "raw", Name: "root.vmdk"}}, "native", true)
	if err != nil {
		t.Fatal(err)
	}
	if g.Root != "/dev/sdb1" || inspect.RootDisk(g) != 1 {
		t.Fatalf("root %q on disk %d, want /dev/sdb1 on disk 1", g.Root, inspect.RootDisk(g))
	}
	ov := overlayOf(t, root, "raw")
	if _, err := fix.Apply(ctx, inspect.Image{Path: ov, Format: "qcow2"}, "native", &manifest.Fix{Initramfs: &manifest.InitramfsFix{Regenerate: new(bool)}}, g); err != nil {
		t.Fatal(err)
	}
	if got, _ := guestFile(t, ov, "/etc/fstab"); got != "UUID="+rootUUID+" / ext4 defaults 0 1\nUUID="+dataUUID+" /data ext4 defaults 0 2\n" {
		t.Errorf("fstab after FIX:\n%s", got)
	}
	if got, _ := guestFile(t, ov, "/etc/default/grub"); got != "GRUB_CMDLINE_LINUX=\"root=UUID="+rootUUID+"\"\n" {
		t.Errorf("grub after FIX:\n%s", got)
	}
}

// TestBootFamilyMultiDisk boots a converted two-disk guest: the Debian 12
// fixture with "/dev/sdb1 /data" in its fstab and a second disk, shipped
// as a two-disk OVA, converted by the engine with the defaults, then
// booted on virtio with both disks. It must reach a login prompt with
// /data mounted; with /dev/sdb1 left in fstab (the old code) systemd
// times out waiting for the device and stops in emergency mode.
func TestBootFamilyMultiDisk(t *testing.T) {
	needRoot(t)
	needTools(t, "qemu-system-x86_64", "debugfs")
	const dataUUID = "da7a0000-2222-4333-8444-955556666777"
	raw := fixture.DebianDisk(t)
	fstab := filepath.Join(t.TempDir(), "fstab")
	os.WriteFile(fstab, []byte("/dev/sda1 / ext4 errors=remount-ro 0 1\n/dev/sdb1 /data ext4 defaults 0 2\n"), 0o644)
	// The fixture's root starts at 1 MiB; debugfs writes it in place.
	run(t, "debugfs", "-w", "-R", "rm /etc/fstab", raw+"?offset=1048576")
	run(t, "debugfs", "-w", "-R", "write "+fstab+" /etc/fstab", raw+"?offset=1048576")
	run(t, "debugfs", "-w", "-R", "mkdir /data", raw+"?offset=1048576")
	ova := fixture.OVA(t, t.TempDir(), raw, dataDisk(t, dataUUID))
	out := filepath.Join(t.TempDir(), "out")
	m := engManifest("md", "ova", ova)
	on := true
	m.Pipeline.Fix = &manifest.Fix{Enabled: &on}
	m.Pipeline.Validate = &manifest.Validate{Compare: new(bool)}
	m.SetDefaults()
	rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: out})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, c := range rep.Changes {
		t.Logf("change %s %s %s", c.Fix, c.File, c.Note)
	}
	console := filepath.Join(t.TempDir(), "console.log")
	res, err := boot.Test(context.Background(), boot.Options{
		Image: filepath.Join(out, "md.qcow2"), Format: "qcow2",
		ExtraDisks:  []boot.Disk{{Image: filepath.Join(out, "md-disk2.qcow2"), Format: "qcow2"}},
		Timeout:     bootTimeout,
		FailMarkers: []string{"Gave up waiting for root", "emergency mode", "Dependency failed for"},
		Console:     console,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("accelerator %s, %.0fs to %q", res.Accelerator, res.Seconds, res.Marker)
	if !res.Booted {
		t.Fatalf("converted two-disk guest did not reach a login prompt (failed on %q):\n%s", res.FailedOn, res.ConsoleTail)
	}
	b, _ := os.ReadFile(console)
	plain := regexp.MustCompile("\x1b\\[[0-9;]*m").ReplaceAllString(string(b), "")
	if !strings.Contains(plain, "Mounted data.mount") {
		t.Errorf("the console does not show /data mounted:\n%s", res.ConsoleTail)
	}
}

// TestFamilyMDMirrorNotWrittenAlone: root on an md RAID1 (guestfish's
// md-create writes metadata 1.2; 1.0 and 0.90, where each leg starts with
// the filesystem and the old code would have written one leg alone, are
// in the unit test TestProbeMD). Both legs are reported as md members
// (the old code reported them as unknown) and the native backend mounts
// nothing; guestfs assembles the mirror and FIX writes through it, to
// both legs (FIX refused before).
func TestFamilyMDMirrorNotWrittenAlone(t *testing.T) {
	needRoot(t)
	needTools(t, "guestfish")
	work := t.TempDir()
	script := `sparse disk.raw 96M
run
part-init /dev/sda mbr
part-add /dev/sda p 2048 98303
part-add /dev/sda p 98304 194559
md-create md0 "/dev/sda1 /dev/sda2" level:raid1
mkfs ext4 /dev/md/md0
mount /dev/md/md0 /
mkdir-p /etc
write /etc/os-release "ID=debian\n"
write /etc/fstab "/dev/md0 / ext4 defaults 0 1\n"
mkdir-p /etc/network
write /etc/network/interfaces "auto ens160\niface ens160 inet dhcp\n"
umount-all
`
	fixture.Guestfish(t, work, "the md guest", script)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// The native backend never assembles md (nor mounts a leg alone): it
	// fails, saying to use guestfs.
	g, err := inspect.Guest(ctx, inspect.Image{Path: filepath.Join(work, "disk.raw"), Format: "raw"}, "native", true)
	if err == nil || !strings.Contains(err.Error(), "md RAID member") || !strings.Contains(err.Error(), "fix.backend guestfs") {
		t.Fatalf("native inspection of a root on md: guest %+v, error %v; want an error naming md and fix.backend guestfs", g, err)
	}
	d, err := inspect.Disk(ctx, inspect.Image{Path: filepath.Join(work, "disk.raw"), Format: "raw"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range d.Partitions {
		if p.FSType != "linux_raid_member" {
			t.Errorf("partition %d is %q, want linux_raid_member", p.Number, p.FSType)
		}
	}
	// guestfs assembles the mirror, and FIX writes through it: both legs
	// get the change and keep the same data.
	src := filepath.Join(work, "disk.raw")
	g, err = inspect.Guest(ctx, inspect.Image{Path: src, Format: "raw"}, "guestfs", true)
	if err != nil {
		t.Fatalf("guestfs inspection of a root on md: %v", err)
	}
	ov := overlayOf(t, src, "raw")
	changes, err := fix.Apply(ctx, inspect.Image{Path: ov, Format: "qcow2"}, "guestfs", &manifest.Fix{Initramfs: &manifest.InitramfsFix{Regenerate: new(bool)}}, g)
	if err != nil {
		t.Fatalf("FIX through the array: %v", err)
	}
	for _, c := range changes {
		t.Logf("change %s %s %q", c.Fix, c.File, c.After)
	}
	// The VMware interface name renamed for the virtio NIC.
	const want = "iface enp1s0 inet dhcp"
	a, b := mdLegData(t, ov, 1), mdLegData(t, ov, 2)
	if !bytes.Contains(a, []byte(want)) || !bytes.Contains(b, []byte(want)) {
		t.Errorf("%q on leg 1: %v, leg 2: %v; want both", want, bytes.Contains(a, []byte(want)), bytes.Contains(b, []byte(want)))
	}
	if !bytes.Equal(a, b) {
		t.Error("the mirror's legs hold different data after FIX")
	}
}

// TestFamilyUEFIFallback: a GPT guest whose ESP holds only
// EFI/debian/{shimx64,grubx64,mmx64}.efi, the way a VMware VM's NVRAM
// entry points at it. The converted VM starts with empty NVRAM, so FIX
// copies shim (and the grub it loads) to EFI/BOOT/BOOTX64.EFI. The ESP is
// vfat, which this host's kernel may lack: the native backend then leaves
// it alone without failing, and the guestfs backend fixes it.
func TestFamilyUEFIFallback(t *testing.T) {
	needRoot(t)
	needTools(t, "guestfish")
	work := t.TempDir()
	script := `sparse disk.raw 160M
run
part-init /dev/sda gpt
part-add /dev/sda p 2048 133119
part-add /dev/sda p 133120 -2048
part-set-gpt-type /dev/sda 1 C12A7328-F81F-11D2-BA4B-00A0C93EC93B
mkfs vfat /dev/sda1
mkfs ext4 /dev/sda2
mount /dev/sda2 /
mkdir-p /etc
mkdir-p /boot/efi
write /etc/os-release "ID=debian\n"
write /etc/fstab "/dev/sda2 / ext4 defaults 0 1\n/dev/sda1 /boot/efi vfat umask=0077 0 1\n"
mount /dev/sda1 /boot/efi
mkdir-p /boot/efi/EFI/debian
write /boot/efi/EFI/debian/shimx64.efi "shim\n"
write /boot/efi/EFI/debian/grubx64.efi "grub\n"
write /boot/efi/EFI/debian/mmx64.efi "mokmanager\n"
umount-all
`
	fixture.Guestfish(t, work, "the UEFI guest", script)
	src := filepath.Join(work, "disk.raw")
	// auto takes guestfs where the host cannot mount the ESP.
	if g, err := inspect.Guest(context.Background(), inspect.Image{Path: src, Format: "raw"}, "auto", false); err != nil {
		t.Fatal(err)
	} else if want := map[bool]string{true: "native", false: "guestfs"}[guest.HostKernelMounts("vfat")]; g.Backend != want {
		t.Errorf("auto chose %s (%s), want %s", g.Backend, g.BackendReason, want)
	}
	for _, be := range backends(t) {
		t.Run(be, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			g, err := inspect.Guest(ctx, inspect.Image{Path: src, Format: "raw"}, be, true)
			if err != nil {
				t.Fatal(err)
			}
			if g.Firmware != "efi" {
				t.Errorf("firmware %q", g.Firmware)
			}
			ov := overlayOf(t, src, "raw")
			_, err = fix.Apply(ctx, inspect.Image{Path: ov, Format: "qcow2"}, be, &manifest.Fix{Initramfs: &manifest.InitramfsFix{Regenerate: new(bool)}}, g)
			if be == "native" && !guest.HostKernelMounts("vfat") {
				// Without the fallback loader the converted guest does not
				// boot: FIX must say so and what to do, not skip it.
				if err == nil || !strings.Contains(err.Error(), "cannot mount the ESP /dev/sda1") || !strings.Contains(err.Error(), "this host's kernel has no vfat: use fix.backend guestfs") {
					t.Fatalf("native FIX on a host without vfat: %v", err)
				}
				t.Logf("native, no vfat here: %v", err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := fixture.GuestfishRead(t, []string{ov}, []string{"/dev/sda2", "/dev/sda1:/boot/efi"},
				"/boot/efi/EFI/BOOT/BOOTX64.EFI", "/boot/efi/EFI/BOOT/grubx64.efi", "/boot/efi/EFI/BOOT/mmx64.efi")
			if got[0] != "shim\n" || got[1] != "grub\n" || got[2] != "mokmanager\n" {
				t.Errorf("EFI/BOOT after FIX: %q", got)
			}
		})
	}
}

// TestFamilyXFSCloneOfMounted: two VMs cloned from one template share
// their XFS root's UUID, and the host kernel refuses to mount a second XFS
// with a UUID already mounted ("duplicate UUID - can't mount"). Here a
// copy of the guest's root is mounted on the host while the native
// backend inspects and fixes the guest: the old code failed INSPECT with
// "wrong fs type"; the native backend now mounts XFS with nouuid.
func TestFamilyXFSCloneOfMounted(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.xfs", "sfdisk", "mount")
	if b, _ := os.ReadFile("/proc/filesystems"); !strings.Contains(string(b), "xfs") {
		t.Skip("the host kernel has no xfs")
	}
	const uuid = "c10e0000-1111-4222-8333-944445555888"
	work := t.TempDir()
	fsimg := filepath.Join(work, "root.xfs")
	os.WriteFile(fsimg, nil, 0o644)
	os.Truncate(fsimg, 320<<20)
	run(t, "mkfs.xfs", "-q", "-m", "uuid="+uuid, fsimg)
	mnt := filepath.Join(work, "mnt")
	os.Mkdir(mnt, 0o755)
	run(t, "mount", "-o", "loop", fsimg, mnt)
	for p, c := range map[string]string{
		"etc/os-release": "ID=rhel\nVERSION_ID=\"9.3\"\n",
		"etc/fstab":      "/dev/sda1 / xfs defaults 0 0\n",
	} {
		os.MkdirAll(filepath.Join(mnt, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(mnt, p), []byte(c), 0o644)
	}
	run(t, "umount", mnt)
	disk := filepath.Join(work, "disk.raw")
	os.WriteFile(disk, nil, 0o644)
	os.Truncate(disk, 322<<20)
	cmd := exec.Command("sfdisk", "-q", "--no-reread", "--no-tell-kernel", disk)
	cmd.Stdin = strings.NewReader("label: dos\nstart=2048, type=83\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
	run(t, "dd", "if="+fsimg, "of="+disk, "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none")
	// The clone on the host: the same filesystem, mounted.
	run(t, "mount", "-o", "loop,ro", fsimg, mnt)
	defer run(t, "umount", mnt)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	g, err := inspect.Guest(ctx, inspect.Image{Path: disk, Format: "raw"}, "native", true)
	if err != nil {
		t.Fatalf("inspecting a guest whose XFS UUID the host has mounted: %v", err)
	}
	if g.Root != "/dev/sda1" || g.OS == nil || g.OS.ID != "rhel" {
		t.Fatalf("inspection: root %q os %+v", g.Root, g.OS)
	}
	ov := overlayOf(t, disk, "raw")
	if _, err := fix.Apply(ctx, inspect.Image{Path: ov, Format: "qcow2"}, "native", &manifest.Fix{Initramfs: &manifest.InitramfsFix{Regenerate: new(bool)}}, g); err != nil {
		t.Fatalf("fixing it: %v", err)
	}
}

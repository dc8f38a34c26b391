package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/fix"
	"github.com/hyper2kvm/hyper2kvm/agent/guest"
	"github.com/hyper2kvm/hyper2kvm/agent/inspect"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// guestTree describes a quick guest: regular files, symlinks, FIFOs and
// character devices, made into an ext4 root by mkfs.ext4 -d on partition 1
// of an MBR disk.
type guestTree struct {
	files    map[string]string
	symlinks map[string]string // path -> target
	fifos    []string
	chardevs map[string][2]uint32
}

const rootUUID = "5b2a1f0e-9c3d-4e8f-a1b2-c3d4e5f60718"

func buildGuest(t *testing.T, tr guestTree) string {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "sfdisk", "qemu-img", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	work := t.TempDir()
	tree := filepath.Join(work, "tree")
	mk := func(p string) string {
		full := filepath.Join(tree, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		return full
	}
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp"} {
		os.MkdirAll(filepath.Join(tree, d), 0o755)
	}
	for p, c := range tr.files {
		if err := os.WriteFile(mk(p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for p, target := range tr.symlinks {
		if err := os.Symlink(target, mk(p)); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range tr.fifos {
		if err := syscall.Mkfifo(mk(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for p, d := range tr.chardevs {
		if err := syscall.Mknod(mk(p), syscall.S_IFCHR|0o644, int(d[0]<<8|d[1])); err != nil {
			t.Fatal(err)
		}
	}
	fsimg := filepath.Join(work, "root.ext4")
	run(t, "mkfs.ext4", "-q", "-F", "-L", "root", "-U", rootUUID, "-d", tree, fsimg, "30M")
	disk := filepath.Join(work, "disk.raw")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(32 << 20)
	f.Close()
	cmd := exec.Command("sfdisk", "-q", "--no-reread", "--no-tell-kernel", disk)
	cmd.Stdin = strings.NewReader("label: dos\nlabel-id: 0x0badcafe\nstart=2048, size=61440, type=83, bootable\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
	run(t, "dd", "if="+fsimg, "of="+disk, "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none")
	return disk
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func sha(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil))
}

// overlayOf makes the writable qcow2 overlay FIX works on, as the engine does.
func overlayOf(t *testing.T, src, format string) string {
	ov := filepath.Join(t.TempDir(), "overlay.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", src, "-F", format, ov)
	return ov
}

// guestFile reads a file out of a qcow2's first partition with debugfs,
// independently of the code under test.
func guestFile(t *testing.T, img, p string) (string, bool) {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "check.raw")
	run(t, "qemu-img", "convert", "-O", "raw", img, raw)
	part := raw + ".p1"
	run(t, "dd", "if="+raw, "of="+part, "bs=1M", "skip=1", "status=none")
	out, err := exec.Command("debugfs", "-R", "cat "+p, part).CombinedOutput()
	s := string(out)
	if i := strings.Index(s, "\n"); strings.HasPrefix(s, "debugfs ") && i >= 0 {
		s = s[i+1:]
	}
	if err != nil || strings.Contains(s, "File not found by ext2_lookup") {
		return s, false
	}
	return s, true
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices, mounts and namespaces")
	}
}

func backends(t *testing.T) []string {
	b := []string{guest.Native}
	if _, err := exec.LookPath("guestfish"); err == nil && os.Getenv("HYPER2KVM_SKIP_GUESTFS") == "" {
		b = append(b, guest.Guestfs)
	} else {
		t.Log("guestfish not installed or HYPER2KVM_SKIP_GUESTFS set: guestfs backend not tested")
	}
	return b
}

var vmwareGuest = guestTree{
	files: map[string]string{
		"etc/os-release":                           "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
		"etc/fstab":                                "# VMware guest\n/dev/sda1 / ext4 errors=remount-ro 0 1\nproc /proc proc defaults 0 0\n",
		"etc/crypttab":                             "# none\n",
		"boot/grub/grub.cfg":                       "menuentry 'Debian' {\n\tset root='hd0,msdos1'\n\tlinux /boot/vmlinuz-6.1.0-9-amd64 root=/dev/sda1 ro console=ttyS0\n\tinitrd /boot/initrd.img-6.1.0-9-amd64\n}\n",
		"boot/grub/device.map":                     "(hd0) /dev/sda\n",
		"boot/vmlinuz-6.1.0-9-amd64":               "kernel\n",
		"boot/initrd.img-6.1.0-9-amd64":            "initrd\n",
		"boot/grub/i386-pc/normal.mod":             "mod\n",
		"etc/default/grub":                         "GRUB_TIMEOUT=1\nGRUB_CMDLINE_LINUX=\"root=/dev/sda1 console=ttyS0\"\n",
		"etc/kernel/cmdline":                       "root=/dev/sda1 ro\n",
		"boot/loader/entries/debian.conf":          "title Debian\nlinux /vmlinuz\noptions root=/dev/sda1 ro\n",
		"etc/initramfs-tools/modules":              "# modules\nvmw_pvscsi\n",
		"usr/sbin/update-initramfs":                "#!/bin/sh\n",
		"etc/network/interfaces":                   "auto lo\niface lo inet loopback\n\nauto ens192\niface ens192 inet dhcp\n    hwaddress ether 00:50:56:aa:bb:cc\n",
		"etc/netplan/50-vmware.yaml":               "network:\n  version: 2\n  ethernets:\n    ens224:\n      match:\n        macaddress: 00:50:56:aa:bb:dd\n      set-name: ens224\n      dhcp4: true\n",
		"etc/modprobe.d/vmxnet3.conf":              "options vmxnet3 disable_lro=1\n",
		"lib/systemd/system/open-vm-tools.service": "[Unit]\nDescription=open-vm-tools\n",
		"usr/bin/vmtoolsd":                         "#!/bin/sh\n",
	},
	symlinks: map[string]string{
		"etc/systemd/system/multi-user.target.wants/open-vm-tools.service": "/lib/systemd/system/open-vm-tools.service",
	},
}

// TestGuestInspectFix inspects a VMware-configured guest and fixes it through
// each backend, then reads the result out of the overlay with debugfs.
func TestGuestInspectFix(t *testing.T) {
	needRoot(t)
	src := buildGuest(t, vmwareGuest)
	srcSum := sha(t, src)
	for _, be := range backends(t) {
		t.Run(be, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			g, err := inspect.Guest(ctx, inspect.Image{Path: src, Format: "raw"}, be, true)
			if err != nil {
				t.Fatal(err)
			}
			checkInspect(t, g)
			ov := overlayOf(t, src, "raw")
			yes := true
			spec := &manifest.Fix{
				Initramfs:   &manifest.InitramfsFix{Regenerate: new(bool)},
				Network:     &manifest.NetworkFix{FixLevel: "full"},
				VMwareTools: &manifest.Toggle{Enabled: &yes},
			}
			changes, err := fix.Apply(ctx, inspect.Image{Path: ov, Format: "qcow2"}, be, spec, g)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range changes {
				t.Logf("change %s %s: %q -> %q %s", c.Fix, c.File, c.Before, c.After, c.Note)
			}
			want := map[string][]string{ // file -> substrings it must hold after FIX
				"/etc/fstab":                       {"UUID=" + rootUUID + " / ext4"},
				"/boot/grub/grub.cfg":              {"root=UUID=" + rootUUID + " ro console=ttyS0"},
				"/etc/default/grub":                {`"root=UUID=` + rootUUID + ` console=ttyS0"`},
				"/etc/kernel/cmdline":              {"root=UUID=" + rootUUID},
				"/boot/loader/entries/debian.conf": {"options root=UUID=" + rootUUID},
				"/etc/initramfs-tools/modules":     {"vmw_pvscsi\nvirtio_blk\nvirtio_scsi\nvirtio_net\nvirtio_pci\nvirtio_ring\n"},
				"/etc/network/interfaces":          {"iface enp1s0 inet dhcp\n"},
				"/etc/netplan/50-vmware.yaml":      {"    enp2s0:\n      dhcp4: true\n"},
				"/etc/modprobe.d/vmxnet3.conf":     {"# disabled by hyper2kvm"},
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
				if strings.Contains(got, "/dev/sda1") || strings.Contains(got, "00:50:56") || strings.Contains(got, "ens192") {
					t.Errorf("%s still names the VMware device, MAC or NIC:\n%s", p, got)
				}
				if !hasChange(changes, p) {
					t.Errorf("no change reported for %s", p)
				}
			}
			for _, gone := range []string{"/boot/grub/device.map", "/etc/systemd/system/multi-user.target.wants/open-vm-tools.service"} {
				if _, ok := guestFile(t, ov, gone); ok {
					t.Errorf("%s still there after FIX", gone)
				}
				if !hasChange(changes, gone) {
					t.Errorf("no change reported for %s", gone)
				}
			}
			if sha(t, src) != srcSum {
				t.Fatal("source image modified")
			}
		})
	}
}

func hasChange(cs []report.Change, p string) bool {
	for _, c := range cs {
		if c.File == p {
			return true
		}
	}
	return false
}

func checkInspect(t *testing.T, g *report.Guest) {
	t.Helper()
	if g.PartitionTable != "mbr" || len(g.Partitions) != 1 {
		t.Fatalf("partitions: %s %+v", g.PartitionTable, g.Partitions)
	}
	p := g.Partitions[0]
	if p.FSType != "ext4" || p.UUID != rootUUID || p.Label != "root" || p.PartUUID != "0badcafe-01" || p.Start != 1<<20 {
		t.Errorf("partition 1: %+v", p)
	}
	if g.OS == nil || g.OS.Type != "linux" || g.OS.ID != "debian" || g.OS.VersionID != "12" {
		t.Errorf("os: %+v", g.OS)
	}
	if g.Root != "/dev/sda1" || g.InitramfsTool != "initramfs-tools" || g.BootLoader != "grub2-bios" || !g.BLS || g.Firmware != "bios" {
		t.Errorf("root %q initramfs %q boot %q bls %v firmware %q", g.Root, g.InitramfsTool, g.BootLoader, g.BLS, g.Firmware)
	}
	if len(g.Kernels) != 1 || len(g.Initramfs) != 1 || len(g.Fstab) != 2 || g.Fstab[0].Device != "/dev/sda1" {
		t.Errorf("kernels %v initramfs %v fstab %+v", g.Kernels, g.Initramfs, g.Fstab)
	}
	if strings.Join(g.Network, ",") != "ifupdown,netplan" {
		t.Errorf("network %v", g.Network)
	}
	if len(g.VMwareTools) == 0 {
		t.Errorf("VMware tools not found")
	}
}

// TestGuestHostileSymlinks gives the guest symlinks that point out of it
// (relative and absolute) at canary files that exist on the host under the
// same path, a FIFO and a /dev/mem device node where config files belong.
// FIX must read and write only the guest's copies.
func TestGuestHostileSymlinks(t *testing.T) {
	needRoot(t)
	canary := t.TempDir()
	hostFstab := "HOST-SECRET /dev/sda1 / ext4 defaults 0 1\n"
	hostGrub := "GRUB_CMDLINE_LINUX=\"root=/dev/sda1 host-secret\"\n"
	os.WriteFile(filepath.Join(canary, "fstab"), []byte(hostFstab), 0o644)
	os.WriteFile(filepath.Join(canary, "grub"), []byte(hostGrub), 0o644)
	before := map[string]os.FileInfo{}
	for _, n := range []string{"fstab", "grub"} {
		before[n], _ = os.Stat(filepath.Join(canary, n))
	}
	shadowSum := sha(t, "/etc/shadow")
	c := strings.TrimPrefix(canary, "/")
	tr := guestTree{
		files: map[string]string{
			"etc/os-release":     "ID=debian\nVERSION_ID=12\n",
			c + "/fstab":         "/dev/sda1 / ext4 defaults 0 1\n",
			c + "/grub":          "GRUB_CMDLINE_LINUX=\"root=/dev/sda1 guest\"\n",
			"boot/grub/grub.cfg": "linux /vmlinuz root=/dev/sda1\n",
			"etc/shadow":         "root:guest-shadow:1::::::\n",
		},
		symlinks: map[string]string{
			"etc/fstab":              strings.Repeat("../", 8) + c + "/fstab",
			"etc/default/grub":       "/" + c + "/grub",
			"etc/kernel/cmdline":     "/proc/self/root/etc/shadow",
			"etc/network/interfaces": "../../../../../../etc/shadow",
		},
		fifos:    []string{"etc/crypttab"},
		chardevs: map[string][2]uint32{"etc/netplan/01-mem.yaml": {1, 1}},
	}
	src := buildGuest(t, tr)
	for _, be := range backends(t) {
		t.Run(be, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			g, err := inspect.Guest(ctx, inspect.Image{Path: src, Format: "raw"}, be, true)
			if err != nil {
				t.Fatal(err)
			}
			if len(g.Fstab) != 1 || g.Fstab[0].Device != "/dev/sda1" {
				t.Errorf("fstab read from the wrong place: %+v", g.Fstab)
			}
			ov := overlayOf(t, src, "raw")
			changes, err := fix.Apply(ctx, inspect.Image{Path: ov, Format: "qcow2"}, be,
				&manifest.Fix{Initramfs: &manifest.InitramfsFix{Regenerate: new(bool)}}, g)
			if err != nil {
				t.Fatal(err)
			}
			for _, ch := range changes {
				t.Logf("change %s %s: %q -> %q %s", ch.Fix, ch.File, ch.Before, ch.After, ch.Note)
			}
			// The guest's own copies, reached through the symlinks, are fixed.
			if got, _ := guestFile(t, ov, "/"+c+"/fstab"); !strings.HasPrefix(got, "UUID="+rootUUID+" / ext4") {
				t.Errorf("guest fstab target not fixed: %q", got)
			}
			if got, _ := guestFile(t, ov, "/"+c+"/grub"); !strings.Contains(got, "root=UUID="+rootUUID+" guest") {
				t.Errorf("guest grub target not fixed: %q", got)
			}
			if got, _ := guestFile(t, ov, "/etc/shadow"); got != "root:guest-shadow:1::::::\n" {
				t.Errorf("guest shadow changed: %q", got)
			}
			// Nothing on the host was written.
			for n, want := range map[string]string{"fstab": hostFstab, "grub": hostGrub} {
				p := filepath.Join(canary, n)
				got, _ := os.ReadFile(p)
				st, _ := os.Stat(p)
				if string(got) != want || !st.ModTime().Equal(before[n].ModTime()) {
					t.Errorf("host file %s was touched: %q", p, got)
				}
			}
			if sha(t, "/etc/shadow") != shadowSum {
				t.Error("host /etc/shadow changed")
			}
			for _, ch := range changes {
				if strings.Contains(ch.Before, "HOST-SECRET") || strings.Contains(ch.Before, "host-secret") {
					t.Errorf("host file content read into change %+v", ch)
				}
			}
			// The FIFO and the /dev/mem node were left alone, and said so.
			for _, p := range []string{"/etc/crypttab"} {
				found := false
				for _, ch := range changes {
					found = found || ch.File == p && strings.Contains(ch.Note, "not a regular file")
				}
				if !found {
					t.Errorf("no 'not a regular file' note for %s", p)
				}
			}
		})
	}
}

// TestGuestDeviceNodeRefused reads a /dev/mem node planted in the guest.
func TestGuestDeviceNodeRefused(t *testing.T) {
	needRoot(t)
	src := buildGuest(t, guestTree{
		files:    map[string]string{"etc/os-release": "ID=debian\n"},
		chardevs: map[string][2]uint32{"etc/fstab": {1, 1}, "etc/zero": {1, 5}},
		fifos:    []string{"etc/fifo"},
	})
	for _, be := range backends(t) {
		t.Run(be, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			s, err := guest.Open(ctx, be, guest.Image{Path: src, Format: "raw"}, guest.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.Mount(ctx, guest.Mount{Number: 1, Offset: 1 << 20, Size: 30 << 20, FSType: "ext4", Target: "/"}); err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{"/etc/fstab", "/etc/zero", "/etc/fifo"} {
				b, err := s.ReadFile(ctx, p)
				if err == nil {
					t.Errorf("%s: read %d bytes from a device or FIFO", p, len(b))
				}
				if err := s.WriteFile(ctx, p, []byte("x"), 0o644); err == nil {
					t.Errorf("%s: wrote to a device or FIFO", p)
				}
			}
			if _, err := s.ReadFile(ctx, "/etc/os-release"); err != nil {
				t.Errorf("regular file: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
			fmt.Fprint(io.Discard)
		})
	}
}

// TestGuestNativeTeardown checks that closing a native session, also after
// its context was cancelled, leaves no loop device, mount, process or
// scratch file behind.
func TestGuestNativeTeardown(t *testing.T) {
	needRoot(t)
	src := buildGuest(t, vmwareGuest)
	work := t.TempDir()
	leftovers := func() []string {
		var found []string
		out, _ := exec.Command("losetup", "-a").Output()
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, work) {
				found = append(found, "loop: "+l)
			}
		}
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			b, _ := os.ReadFile(p)
			if strings.Contains(string(b), work) {
				found = append(found, "process: "+strings.ReplaceAll(string(b), "\x00", " "))
			}
		}
		ents, _ := os.ReadDir(work)
		for _, e := range ents {
			found = append(found, "file: "+e.Name())
		}
		return found
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := guest.Open(ctx, guest.Native, guest.Image{Path: src, Format: "raw"}, guest.Options{WorkDir: work})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Mount(ctx, guest.Mount{Number: 1, Offset: 1 << 20, Size: 30 << 20, FSType: "ext4", Target: "/"}); err != nil {
		t.Fatal(err)
	}
	if len(leftovers()) == 0 {
		t.Fatal("no session state visible while open: the check below would prove nothing")
	}
	// The host's mount table never shows the guest's mounts.
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), work) {
		t.Error("guest mount visible in the host's mount namespace")
	}
	cancel()
	if _, err := s.Run(ctx, "/bin/true"); err == nil {
		t.Error("Run with a cancelled context succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if l := leftovers(); len(l) > 0 {
		t.Fatalf("left behind after Close: %v", l)
	}
	if sha(t, src) == "" {
		t.Fatal("source unreadable")
	}
}

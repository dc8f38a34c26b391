package test

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/engine"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// Volumes assembled across a VM's disks (issue 19): a root on an md RAID1
// mirror whose legs are on two disks, and a root on an LV of a VG whose
// two PVs are on two disks. One guestfish run builds both two-disk VMs
// (four raw disks); each is exported as an OVA and converted by the engine
// with fix.backend guestfs, which hands every disk of the VM to the
// appliance, INSPECT read-only, FIX with a writable overlay of each disk
// the root spans: the mirror is written through the array (both legs),
// the LV through its VG. The native backend cannot assemble md and says so.

const (
	mdRootUUID = "6d6d0000-1111-4222-8333-944445555601"
	lvRootUUID = "6d6d0000-1111-4222-8333-944445555602"
	mdSwapUUID = "6d6d0000-1111-4222-8333-944445555603"
	lvSwapUUID = "6d6d0000-1111-4222-8333-944445555604"
	mdBootUUID = "6d6d0000-1111-4222-8333-944445555605"
)

// assemblyDisks builds md-a.raw + md-b.raw (root on /dev/md0, RAID1 of
// each disk's first partition) and lv-a.raw + lv-b.raw (VG rhel on both
// disks' first partitions, LV root taking all of it, so it spans both).
// Each first disk has a swap partition 2 that the root's fstab and
// GRUB_CMDLINE_LINUX (resume=) name /dev/sda2, what FIX stabilizes; the md
// guest's first disk also has /boot on /dev/sda3 (ext4), as installers lay
// out a root on md.
func assemblyDisks(t *testing.T) (md, lv []string) {
	t.Helper()
	work := t.TempDir()
	guest := func(osRelease, rootLine string) string {
		return `mkdir-p /etc/default
mkdir-p /boot
write /etc/os-release "` + osRelease + `"
write /etc/fstab "` + rootLine + `\n/dev/sda2 none swap sw 0 0\ntmpfs /tmp tmpfs defaults 0 0\n"
write /etc/default/grub "GRUB_CMDLINE_LINUX=\"resume=/dev/sda2 quiet\"\n"
umount-all
`
	}
	script := `sparse md-a.raw 48M
sparse md-b.raw 48M
sparse lv-a.raw 48M
sparse lv-b.raw 48M
run
part-init /dev/sda mbr
part-add /dev/sda p 2048 65535
part-add /dev/sda p 65536 81919
part-add /dev/sda p 81920 98303
part-disk /dev/sdb mbr
part-init /dev/sdc mbr
part-add /dev/sdc p 2048 81919
part-add /dev/sdc p 81920 98303
part-disk /dev/sdd mbr
mkswap /dev/sda2 uuid:` + mdSwapUUID + `
mkswap /dev/sdc2 uuid:` + lvSwapUUID + `
mkfs ext4 /dev/sda3
set-uuid /dev/sda3 ` + mdBootUUID + `
md-create md0 "/dev/sda1 /dev/sdb1" level:raid1
mkfs ext4 /dev/md/md0
set-uuid /dev/md/md0 ` + mdRootUUID + `
mount /dev/md/md0 /
` + guest(`ID=debian\nVERSION_ID=\"12\"\n`, "UUID="+mdRootUUID+" / ext4 errors=remount-ro 0 1\\n/dev/sda3 /boot ext4 defaults 0 2") + `pvcreate /dev/sdc1
pvcreate /dev/sdd1
vgcreate rhel "/dev/sdc1 /dev/sdd1"
lvcreate-free root rhel 100
mkfs ext4 /dev/rhel/root
set-uuid /dev/rhel/root ` + lvRootUUID + `
mount /dev/rhel/root /
` + guest(`ID=rhel\nVERSION_ID=\"9.4\"\n`, "/dev/mapper/rhel-root / ext4 defaults 0 1")
	fixture.Guestfish(t, work, "the two-disk guests", script)
	p := func(n string) string { return filepath.Join(work, n) }
	return []string{p("md-a.raw"), p("md-b.raw")}, []string{p("lv-a.raw"), p("lv-b.raw")}
}

func TestFamilyAssembledAcrossDisks(t *testing.T) {
	needRoot(t)
	engNeedTools(t)
	needTools(t, "guestfish")
	md, lv := assemblyDisks(t)
	for _, c := range []struct {
		name, rootDev, uuid, swap, osID, mount string
		disks                                  []string
	}{
		{"md", "/dev/md", mdRootUUID, mdSwapUUID, "debian", "", md},
		{"lvm", "/dev/mapper/rhel-root", lvRootUUID, lvSwapUUID, "rhel", "/dev/rhel/root", lv},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ova := fixture.OVA(t, t.TempDir(), c.disks...)
			sum := fixture.SHA256(t, ova)
			on := true

			// native: md is not assembled on the host; the error says what to do.
			if c.name == "md" {
				m := engManifest("md-native", "ova", ova)
				// FIX on: a failed INSPECT then fails the job (with FIX off
				// the disks are converted anyway, with a warning).
				m.Pipeline.Fix.Enabled, m.Pipeline.Fix.Backend = &on, "native"
				m.Pipeline.Validate = &manifest.Validate{Compare: new(bool)}
				m.SetDefaults()
				_, err := engine.Run(context.Background(), m, engine.Options{OutputDir: filepath.Join(t.TempDir(), "out")})
				if err == nil || !strings.Contains(err.Error(), "md RAID member") || !strings.Contains(err.Error(), "fix.backend guestfs") {
					t.Errorf("native on a root on md: %v, want an error naming md and fix.backend guestfs", err)
				}
			}

			m := engManifest("asm-"+c.name, "ova", ova)
			// auto, the default: the VG across disks goes to guestfs at
			// once; for md, native opens /boot, finds no root, and auto
			// then takes guestfs.
			m.Pipeline.Fix.Enabled, m.Pipeline.Fix.Backend = &on, "auto"
			m.Pipeline.Validate = &manifest.Validate{Compare: new(bool)}
			m.SetDefaults()
			out := filepath.Join(t.TempDir(), "out")
			rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: out})
			if err != nil {
				t.Fatalf("Run with guestfs and FIX: %v", err)
			}
			g := rep.Guest
			var root *report.Partition
			for i, p := range g.Partitions {
				t.Logf("filesystem %+v", p)
				if p.UUID == c.uuid {
					root = &g.Partitions[i]
				}
			}
			if g.Backend != "guestfs" || !strings.HasPrefix(g.Root, c.rootDev) || g.OS == nil || g.OS.ID != c.osID {
				t.Errorf("backend %q, root %q, os %+v; want guestfs, %s*, %s", g.Backend, g.Root, g.OS, c.rootDev, c.osID)
			}
			if root == nil || root.MountPoint != "/" || root.FSType != "ext4" || !slices.Equal(root.Disks, []int{0, 1}) {
				t.Fatalf("the report does not list the root filesystem (UUID %s) mounted at /, on disks 0 and 1: %+v", c.uuid, root)
			}
			var mps []string
			for _, e := range g.Fstab {
				mps = append(mps, e.MountPoint)
			}
			wantMps := "/ none /tmp"
			if c.name == "md" {
				wantMps = "/ /boot none /tmp"
			}
			if strings.Join(mps, " ") != wantMps {
				t.Errorf("fstab entries %q, want %s", mps, wantMps)
			}
			t.Logf("backend %s: %s", g.Backend, g.BackendReason)
			fixStage := engStage(t, rep, "fix")
			t.Logf("FIX (guestfs, two disks): %.1f s, %+v", fixStage.Seconds, fixStage.Result)

			// The report: each file FIX changed, on both disks.
			var names []string
			for _, p := range g.Partitions {
				if p.Number == 1 && p.LV == "" && !slices.Contains(names, p.DiskName) {
					names = append(names, p.DiskName)
				}
			}
			wantFstab := "UUID=" + c.swap + " none swap sw 0 0"
			wantGrub := `GRUB_CMDLINE_LINUX="resume=UUID=` + c.swap + ` quiet"`
			seen := map[string]bool{}
			for _, ch := range rep.Changes {
				t.Logf("change %s %s disks %v", ch.Fix, ch.File, ch.Disks)
				if ch.File == "/etc/fstab" || ch.File == "/etc/default/grub" {
					seen[ch.File] = true
					if len(names) != 2 || !slices.Equal(ch.Disks, names) {
						t.Errorf("change of %s reported on disks %q, want both %q", ch.File, ch.Disks, names)
					}
				}
			}
			if !seen["/etc/fstab"] || !seen["/etc/default/grub"] {
				t.Errorf("changes %v: want /etc/fstab and /etc/default/grub", seen)
			}

			// The outputs, read back through an appliance of their own.
			var outs []string
			for _, a := range rep.Artifacts {
				if a.Kind == "disk" {
					outs = append(outs, a.Path)
				}
			}
			if len(outs) != 2 {
				t.Fatalf("outputs %v, want two disks", outs)
			}
			mount := c.mount
			if mount == "" {
				mount = g.Root // the appliance's name for the array
			}
			got := fixture.GuestfishRead(t, outs, []string{mount}, "/etc/fstab", "/etc/default/grub")
			if c.name == "md" && !strings.Contains(got[0], "UUID="+mdBootUUID+" /boot ext4") {
				t.Errorf("converted guest: fstab %q, want /boot by UUID", got[0])
			}
			if !strings.Contains(got[0], wantFstab) || !strings.Contains(got[1], wantGrub) {
				t.Errorf("converted guest: fstab %q, grub %q; want %q and %q", got[0], got[1], wantFstab, wantGrub)
			}
			if c.name == "md" {
				// Both legs hold the change, and the same data: one leg
				// written alone would leave the mirror silently split.
				a, b := mdLegData(t, outs[0], 1), mdLegData(t, outs[1], 1)
				if !bytes.Contains(a, []byte(wantFstab)) || !bytes.Contains(b, []byte(wantFstab)) {
					t.Errorf("the new fstab line is on leg A: %v, leg B: %v; want both", bytes.Contains(a, []byte(wantFstab)), bytes.Contains(b, []byte(wantFstab)))
				}
				if !bytes.Equal(a, b) {
					t.Error("the two legs of the converted mirror hold different data")
				}
			}
			if fixture.SHA256(t, ova) != sum {
				t.Error("the OVA changed")
			}
		})
	}
}

// mdLegData reads the array data of an md 1.2 mirror leg, primary
// partition n of the image img: from the superblock's data_offset, the
// array's size.
func mdLegData(t *testing.T, img string, n int) []byte {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "leg.raw")
	if out, err := exec.Command("qemu-img", "convert", "-O", "raw", img, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert %s: %v\n%s", img, err, out)
	}
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	start := int64(binary.LittleEndian.Uint32(b[446+16*(n-1)+8:])) * 512
	sb := start + 4096 // version 1.2: 4 KiB into the member
	if binary.LittleEndian.Uint32(b[sb:]) != 0xa92b4efc {
		t.Fatalf("%s: no md superblock at %d", img, sb)
	}
	size := int64(binary.LittleEndian.Uint64(b[sb+80:])) * 512
	off := start + int64(binary.LittleEndian.Uint64(b[sb+128:]))*512
	if size <= 0 || off+size > int64(len(b)) {
		t.Fatalf("%s: md data at %d, %d bytes, outside the disk", img, off, size)
	}
	return b[off : off+size]
}

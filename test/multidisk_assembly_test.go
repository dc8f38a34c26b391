package test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
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
// appliance. The native backend cannot assemble md and says so.

const (
	mdRootUUID = "6d6d0000-1111-4222-8333-944445555601"
	lvRootUUID = "6d6d0000-1111-4222-8333-944445555602"
)

// assemblyDisks builds md-a.raw + md-b.raw (root on /dev/md0, RAID1 of
// each disk's first partition) and lv-a.raw + lv-b.raw (VG rhel on both
// disks' first partitions, LV root taking all of it, so it spans both).
func assemblyDisks(t *testing.T) (md, lv []string) {
	t.Helper()
	work := t.TempDir()
	script := `sparse md-a.raw 48M
sparse md-b.raw 48M
sparse lv-a.raw 48M
sparse lv-b.raw 48M
run
part-disk /dev/sda mbr
part-disk /dev/sdb mbr
part-disk /dev/sdc mbr
part-disk /dev/sdd mbr
md-create md0 "/dev/sda1 /dev/sdb1" level:raid1
mkfs ext4 /dev/md/md0
set-uuid /dev/md/md0 ` + mdRootUUID + `
mount /dev/md/md0 /
mkdir-p /etc
write /etc/os-release "ID=debian\nVERSION_ID=\"12\"\n"
write /etc/fstab "UUID=` + mdRootUUID + ` / ext4 errors=remount-ro 0 1\ntmpfs /tmp tmpfs defaults 0 0\n"
umount-all
pvcreate /dev/sdc1
pvcreate /dev/sdd1
vgcreate rhel "/dev/sdc1 /dev/sdd1"
lvcreate-free root rhel 100
mkfs ext4 /dev/rhel/root
set-uuid /dev/rhel/root ` + lvRootUUID + `
mount /dev/rhel/root /
mkdir-p /etc
write /etc/os-release "ID=rhel\nVERSION_ID=\"9.4\"\n"
write /etc/fstab "/dev/mapper/rhel-root / ext4 defaults 0 1\ntmpfs /tmp tmpfs defaults 0 0\n"
umount-all
`
	cmd := exec.Command("guestfish", "--")
	cmd.Dir = work
	cmd.Stdin = strings.NewReader(script)
	cmd.Env = append(os.Environ(), "LIBGUESTFS_BACKEND_SETTINGS=force_tcg")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("guestfish building the two-disk guests: %v\n%s", err, out)
	}
	p := func(n string) string { return filepath.Join(work, n) }
	return []string{p("md-a.raw"), p("md-b.raw")}, []string{p("lv-a.raw"), p("lv-b.raw")}
}

func TestFamilyAssembledAcrossDisks(t *testing.T) {
	needRoot(t)
	engNeedTools(t)
	needTools(t, "guestfish")
	md, lv := assemblyDisks(t)
	for _, c := range []struct {
		name, rootDev, uuid, osID string
		disks                     []string
	}{
		{"md", "/dev/md", mdRootUUID, "debian", md},
		{"lvm", "/dev/mapper/rhel-root", lvRootUUID, "rhel", lv},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ova := fixture.OVA(t, t.TempDir(), c.disks...)
			sum := fixture.SHA256(t, ova)

			// native: md is not assembled on the host; the error says what to do.
			if c.name == "md" {
				m := engManifest("md-native", "ova", ova)
				// FIX on: a failed INSPECT then fails the job (with FIX off
				// the disks are converted anyway, with a warning).
				on := true
				m.Pipeline.Fix.Enabled, m.Pipeline.Fix.Backend = &on, "native"
				m.Pipeline.Validate = &manifest.Validate{Compare: new(bool)}
				m.SetDefaults()
				_, err := engine.Run(context.Background(), m, engine.Options{OutputDir: filepath.Join(t.TempDir(), "out")})
				if err == nil || !strings.Contains(err.Error(), "md RAID member") || !strings.Contains(err.Error(), "fix.backend guestfs") {
					t.Errorf("native on a root on md: %v, want an error naming md and fix.backend guestfs", err)
				}
			}

			m := engManifest("asm-"+c.name, "ova", ova)
			m.Pipeline.Fix.Backend = "guestfs"
			out := filepath.Join(t.TempDir(), "out")
			rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: out})
			if err != nil {
				t.Fatalf("Run with guestfs: %v", err)
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
			if root == nil || root.MountPoint != "/" || root.FSType != "ext4" {
				t.Errorf("the report does not list the root filesystem (UUID %s) mounted at /: %+v", c.uuid, root)
			}
			var mps []string
			for _, e := range g.Fstab {
				mps = append(mps, e.MountPoint)
			}
			if strings.Join(mps, " ") != "/ /tmp" {
				t.Errorf("fstab entries %q, want / and /tmp", mps)
			}
			if fixture.SHA256(t, ova) != sum {
				t.Error("the OVA changed")
			}
		})
	}
}

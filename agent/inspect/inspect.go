// Package inspect looks inside a disk image: partition table, filesystems,
// guest OS, kernels, boot loader, fstab, network style and VMware tools.
// The partition table and superblocks are parsed in Go (agent/partition)
// from bytes qemu-img reads; files are read through a guest-access backend
// (agent/guest), never by following the guest's paths on the host.
package inspect

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/guest"
	"github.com/hyper2kvm/hyper2kvm/agent/partition"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// Image is a disk image qemu can open: a path (or a qemu "json:" spec) and its format.
type Image struct {
	Path   string
	Format string
}

// Guest inspects img through the named guest-access backend (native | guestfs).
func Guest(ctx context.Context, img Image, backend string, detectOS bool) (*report.Guest, error) {
	g, err := Disk(ctx, img)
	if err != nil {
		return nil, err
	}
	if !detectOS {
		return g, nil
	}
	if !hasLinuxFS(g) {
		g.OS = &report.OS{Type: "unknown"}
		if hasFS(g, "ntfs") {
			g.OS = &report.OS{Type: "windows"}
		}
		return g, nil
	}
	s, err := OpenRoot(ctx, img, backend, false, g)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if err := Files(ctx, s, g); err != nil {
		return nil, err
	}
	if err := s.Close(); err != nil {
		return nil, err
	}
	return g, nil
}

// Disk reads the partition table and probes each partition's filesystem.
func Disk(ctx context.Context, img Image) (*report.Guest, error) {
	r, err := newDiskReader(ctx, img)
	if err != nil {
		return nil, err
	}
	defer r.close()
	g := &report.Guest{}
	tab, err := partition.Read(r, r.size)
	if err != nil {
		return nil, fmt.Errorf("cannot inspect %s: %w", img.Path, err)
	}
	g.PartitionTable = tab.Kind
	if tab.Kind == "none" {
		fsi, err := partition.Probe(r, 0, r.size)
		if err != nil {
			return nil, err
		}
		if fsi.Type != "" {
			g.Partitions = append(g.Partitions, report.Partition{Number: 0, Start: 0, Size: r.size, Type: "disk",
				FSType: fsi.Type, UUID: fsi.UUID, Label: fsi.Label})
		}
	}
	efi, biosBoot := false, false
	for _, p := range tab.Partitions {
		rp := report.Partition{Number: p.Number, Start: p.Start, Size: p.Size, Type: p.TypeName,
			PartUUID: p.PartUUID, PartLabel: p.PartLabel}
		if p.TypeName != "extended" {
			fsi, err := partition.Probe(r, p.Start, p.Size)
			if err != nil {
				return nil, err
			}
			rp.FSType, rp.UUID, rp.Label = fsi.Type, fsi.UUID, fsi.Label
		}
		efi = efi || p.TypeName == "efi"
		biosBoot = biosBoot || p.TypeName == "bios-boot"
		g.Partitions = append(g.Partitions, rp)
	}
	g.Firmware = "bios"
	if efi && !biosBoot {
		g.Firmware = "efi"
	}
	return g, nil
}

var linuxFS = map[string]bool{"ext2": true, "ext3": true, "ext4": true, "xfs": true, "btrfs": true}

func hasLinuxFS(g *report.Guest) bool {
	for _, p := range g.Partitions {
		if linuxFS[p.FSType] {
			return true
		}
	}
	return false
}

func hasFS(g *report.Guest, t string) bool {
	for _, p := range g.Partitions {
		if p.FSType == t {
			return true
		}
	}
	return false
}

// DevName is how the source VM named partition n of its first disk; Root and
// the FIX stage use it.
func DevName(n int) string {
	if n == 0 {
		return "/dev/sda"
	}
	return "/dev/sda" + strconv.Itoa(n)
}

// Partition returns the partition g.Root names.
func RootPartition(g *report.Guest) (report.Partition, bool) {
	for _, p := range g.Partitions {
		if g.Root != "" && DevName(p.Number) == g.Root {
			return p, true
		}
	}
	return report.Partition{}, false
}

func mountOf(p report.Partition, target string, ro bool) guest.Mount {
	return guest.Mount{Number: p.Number, Offset: p.Start, Size: p.Size, FSType: p.FSType, Target: target, RO: ro}
}

// OpenRoot opens a session on img with the guest's root filesystem at "/"
// and, when fstab names a separate /boot on this disk, that too. When
// g.Root is empty it finds the root: the first Linux filesystem holding
// /etc/os-release or /etc/fstab, and records it in g.Root.
func OpenRoot(ctx context.Context, img Image, backend string, writable bool, g *report.Guest) (guest.Session, error) {
	s, err := guest.Open(ctx, backend, guest.Image{Path: img.Path, Format: img.Format}, guest.Options{Writable: writable})
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	if root, found := RootPartition(g); found {
		if err := s.Mount(ctx, mountOf(root, "/", !writable)); err != nil {
			return nil, err
		}
	} else {
		for _, p := range g.Partitions {
			if !linuxFS[p.FSType] {
				continue
			}
			if err := s.Mount(ctx, mountOf(p, "/", !writable)); err != nil {
				return nil, err
			}
			if exists(ctx, s, "/etc/os-release") || exists(ctx, s, "/usr/lib/os-release") || exists(ctx, s, "/etc/fstab") {
				g.Root = DevName(p.Number)
				break
			}
			if err := s.Unmount(ctx); err != nil {
				return nil, err
			}
		}
		if g.Root == "" {
			return nil, errors.New("cannot find the guest's root filesystem: no Linux filesystem holds /etc/os-release or /etc/fstab")
		}
	}
	if b, err := s.ReadFile(ctx, "/etc/fstab"); err == nil {
		for _, e := range ParseTab(b, 2) {
			if e.MountPoint != "/boot" {
				continue
			}
			if p, found := Resolve(g, e.Device); found && DevName(p.Number) != g.Root && linuxFS[p.FSType] {
				if err := s.Mount(ctx, mountOf(p, "/boot", !writable)); err != nil {
					return nil, err
				}
			}
		}
	}
	ok = true
	return s, nil
}

func exists(ctx context.Context, s guest.Session, p string) bool {
	_, err := s.Lstat(ctx, p)
	return err == nil
}

// Resolve finds the partition an fstab device field names on this disk:
// UUID=, PARTUUID=, LABEL=, PARTLABEL=, /dev/disk/by-*/..., or a kernel name
// of the first disk under any bus (/dev/sda1, /dev/hda1, /dev/vda1, /dev/xvda1).
func Resolve(g *report.Guest, dev string) (report.Partition, bool) {
	match := func(f func(p report.Partition) bool) (report.Partition, bool) {
		for _, p := range g.Partitions {
			if f(p) {
				return p, true
			}
		}
		return report.Partition{}, false
	}
	unq := func(s string) string { return strings.Trim(s, `"`) }
	switch {
	case strings.HasPrefix(dev, "UUID="):
		v := strings.ToLower(unq(dev[5:]))
		return match(func(p report.Partition) bool { return p.UUID != "" && strings.ToLower(p.UUID) == v })
	case strings.HasPrefix(dev, "PARTUUID="):
		v := strings.ToLower(unq(dev[9:]))
		return match(func(p report.Partition) bool { return p.PartUUID != "" && p.PartUUID == v })
	case strings.HasPrefix(dev, "LABEL="):
		v := unq(dev[6:])
		return match(func(p report.Partition) bool { return p.Label != "" && p.Label == v })
	case strings.HasPrefix(dev, "PARTLABEL="):
		v := unq(dev[10:])
		return match(func(p report.Partition) bool { return p.PartLabel != "" && p.PartLabel == v })
	case strings.HasPrefix(dev, "/dev/disk/by-uuid/"):
		return Resolve(g, "UUID="+path.Base(dev))
	case strings.HasPrefix(dev, "/dev/disk/by-label/"):
		return Resolve(g, "LABEL="+path.Base(dev))
	case strings.HasPrefix(dev, "/dev/disk/by-partuuid/"):
		return Resolve(g, "PARTUUID="+path.Base(dev))
	case strings.HasPrefix(dev, "/dev/disk/by-path/"), strings.HasPrefix(dev, "/dev/disk/by-id/"):
		// The controller path or disk serial is the VMware one; only the
		// partition suffix carries over to the single disk we have.
		i := strings.LastIndex(dev, "-part")
		if i < 0 {
			return report.Partition{}, false
		}
		n, err := strconv.Atoi(dev[i+5:])
		if err != nil {
			return report.Partition{}, false
		}
		return match(func(p report.Partition) bool { return p.Number == n })
	}
	for _, pre := range []string{"/dev/sda", "/dev/hda", "/dev/vda", "/dev/xvda"} {
		if rest, ok := strings.CutPrefix(dev, pre); ok {
			n := 0
			if rest != "" {
				var err error
				if n, err = strconv.Atoi(rest); err != nil {
					return report.Partition{}, false
				}
			}
			return match(func(p report.Partition) bool { return p.Number == n })
		}
	}
	return report.Partition{}, false
}

// ParseTab parses fstab (minFields 2: device, mount point, type) or crypttab
// (name, device) lines. Comments and blank lines are skipped.
func ParseTab(b []byte, minFields int) []report.MountEntry {
	var out []report.MountEntry
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < minFields || strings.HasPrefix(f[0], "#") {
			continue
		}
		e := report.MountEntry{Device: f[0]}
		if len(f) > 1 {
			e.MountPoint = f[1]
		}
		if len(f) > 2 {
			e.FSType = f[2]
		}
		out = append(out, e)
	}
	return out
}

// Files fills g with what the guest's files say; s has the root mounted.
func Files(ctx context.Context, s guest.Session, g *report.Guest) error {
	g.OS = &report.OS{Type: "linux"}
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		if b, err := s.ReadFile(ctx, p); err == nil {
			kv := parseOSRelease(b)
			g.OS.ID, g.OS.VersionID, g.OS.Pretty = kv["ID"], kv["VERSION_ID"], kv["PRETTY_NAME"]
			break
		}
	}
	g.Kernels, g.Initramfs = nil, nil
	if ents, err := s.ReadDir(ctx, "/boot"); err == nil {
		for _, e := range ents {
			switch {
			case strings.HasPrefix(e.Name, "vmlinuz-"), strings.HasPrefix(e.Name, "vmlinux-"):
				g.Kernels = append(g.Kernels, "/boot/"+e.Name)
			case strings.HasPrefix(e.Name, "initrd.img-"), strings.HasPrefix(e.Name, "initramfs-") && strings.HasSuffix(e.Name, ".img"):
				g.Initramfs = append(g.Initramfs, "/boot/"+e.Name)
			}
		}
	}
	sort.Strings(g.Kernels)
	sort.Strings(g.Initramfs)
	g.InitramfsTool = ""
	switch {
	case anyExists(ctx, s, "/usr/sbin/update-initramfs", "/sbin/update-initramfs"):
		g.InitramfsTool = "initramfs-tools"
	case anyExists(ctx, s, "/usr/bin/dracut", "/usr/sbin/dracut", "/sbin/dracut"):
		g.InitramfsTool = "dracut"
	}
	g.BootLoader = "none"
	switch {
	case anyExists(ctx, s, "/boot/grub/x86_64-efi", "/boot/grub2/x86_64-efi", "/boot/efi/EFI") || g.Firmware == "efi":
		g.BootLoader = "grub2-efi"
	case anyExists(ctx, s, "/boot/grub/grub.cfg", "/boot/grub2/grub.cfg", "/boot/grub/i386-pc", "/boot/grub2/i386-pc"):
		g.BootLoader = "grub2-bios"
	}
	ents, _ := s.ReadDir(ctx, "/boot/loader/entries")
	g.BLS = false
	for _, e := range ents {
		if strings.HasSuffix(e.Name, ".conf") {
			g.BLS = true
		}
	}
	g.Fstab, g.Crypttab = nil, nil
	if b, err := s.ReadFile(ctx, "/etc/fstab"); err == nil {
		g.Fstab = ParseTab(b, 2)
	}
	if b, err := s.ReadFile(ctx, "/etc/crypttab"); err == nil {
		g.Crypttab = ParseTab(b, 2)
	}
	g.Network = nil
	if exists(ctx, s, "/etc/network/interfaces") {
		g.Network = append(g.Network, "ifupdown")
	}
	for _, n := range []struct{ dir, suffix, name string }{
		{"/etc/netplan", ".yaml", "netplan"},
		{"/etc/NetworkManager/system-connections", "", "networkmanager"},
		{"/etc/sysconfig/network-scripts", "", "ifcfg"},
		{"/etc/systemd/network", ".network", "systemd-networkd"},
	} {
		ents, _ := s.ReadDir(ctx, n.dir)
		for _, e := range ents {
			if strings.HasSuffix(e.Name, n.suffix) && (n.name != "ifcfg" || strings.HasPrefix(e.Name, "ifcfg-")) && !e.Mode.IsDir() {
				g.Network = append(g.Network, n.name)
				break
			}
		}
	}
	g.VMwareTools = VMwareTools(ctx, s)
	return nil
}

// VMwareUnits are the systemd units of open-vm-tools and VMware's own tools.
var VMwareUnits = []string{"open-vm-tools.service", "vmtoolsd.service", "vgauth.service", "vmware-tools.service",
	"vmware-tools-thinprint.service", "run-vmblock\\x2dfuse.mount", "vmware-vmblock-fuse.service"}

// VMwarePackages are the distribution packages of VMware tools.
var VMwarePackages = []string{"open-vm-tools", "open-vm-tools-desktop", "open-vm-tools-sdmp", "vmware-tools"}

// VMwareTools lists what of VMware's tools the guest has: binaries, units,
// enabled units and installed packages.
func VMwareTools(ctx context.Context, s guest.Session) []string {
	var found []string
	for _, p := range []string{"/usr/bin/vmtoolsd", "/usr/sbin/vmtoolsd", "/etc/vmware-tools", "/etc/init.d/vmware-tools"} {
		if exists(ctx, s, p) {
			found = append(found, p)
		}
	}
	for _, dir := range []string{"/lib/systemd/system", "/usr/lib/systemd/system", "/etc/systemd/system"} {
		for _, u := range VMwareUnits {
			if e, err := s.Lstat(ctx, path.Join(dir, u)); err == nil && e.Mode&fs.ModeSymlink == 0 {
				found = append(found, path.Join(dir, u))
			}
		}
	}
	found = append(found, EnabledVMwareUnits(ctx, s)...)
	for _, pkg := range VMwarePackages {
		if exists(ctx, s, "/var/lib/dpkg/info/"+pkg+".list") {
			found = append(found, "dpkg:"+pkg)
		}
	}
	return found
}

// EnabledVMwareUnits lists the .wants/.requires symlinks that start VMware units.
func EnabledVMwareUnits(ctx context.Context, s guest.Session) []string {
	var out []string
	dirs, _ := s.ReadDir(ctx, "/etc/systemd/system")
	for _, d := range dirs {
		if !d.Mode.IsDir() || !(strings.HasSuffix(d.Name, ".wants") || strings.HasSuffix(d.Name, ".requires")) {
			continue
		}
		ents, _ := s.ReadDir(ctx, "/etc/systemd/system/"+d.Name)
		for _, e := range ents {
			for _, u := range VMwareUnits {
				if e.Name == u {
					out = append(out, "/etc/systemd/system/"+d.Name+"/"+e.Name)
				}
			}
		}
	}
	return out
}

func anyExists(ctx context.Context, s guest.Session, paths ...string) bool {
	for _, p := range paths {
		if exists(ctx, s, p) {
			return true
		}
	}
	return false
}

func parseOSRelease(b []byte) map[string]string {
	kv := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		} else {
			v = strings.Trim(v, `'"`)
		}
		kv[k] = v
	}
	return kv
}

// diskReader reads a disk image's guest-visible bytes with qemu-img dd, so
// any format qemu opens (and "json:" specs) works without mounting anything.
type diskReader struct {
	ctx  context.Context
	img  Image
	dir  string
	size int64
}

func newDiskReader(ctx context.Context, img Image) (*diskReader, error) {
	out, err := exec.CommandContext(ctx, "qemu-img", "info", "-U", "--output=json", "-f", img.Format, img.Path).Output()
	if err != nil {
		msg := ""
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			msg = strings.TrimSpace(string(ee.Stderr))
		}
		return nil, fmt.Errorf("cannot read image info of %s: %v: %s", img.Path, err, msg)
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return nil, fmt.Errorf("cannot parse qemu-img info of %s: %w", img.Path, err)
	}
	dir, err := os.MkdirTemp("", "inspect-")
	if err != nil {
		return nil, err
	}
	return &diskReader{ctx: ctx, img: img, dir: dir, size: info.VirtualSize}, nil
}

func (r *diskReader) close() { os.RemoveAll(r.dir) }

func (r *diskReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= r.size {
		return 0, fmt.Errorf("read at %d outside the %d-byte disk", off, r.size)
	}
	const bs = 512
	first := off / bs
	last := (off + int64(len(p)) + bs - 1) / bs
	if max := (r.size + bs - 1) / bs; last > max {
		last = max
	}
	// A raw node with offset and size over the image's node reads just the
	// range (qemu-img dd's skip/count differ between qemu versions).
	node, err := guest.Node(guest.Image{Path: r.img.Path, Format: r.img.Format})
	if err != nil {
		return 0, err
	}
	spec, err := json.Marshal(map[string]any{"driver": "raw", "offset": first * bs, "size": (last - first) * bs, "file": node})
	if err != nil {
		return 0, err
	}
	tmp := path.Join(r.dir, "chunk")
	os.Remove(tmp)
	cmd := exec.CommandContext(r.ctx, "qemu-img", "convert", "-U", "-O", "raw", "json:"+string(spec), tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("cannot read %d bytes at %d of %s: %v: %s", len(p), off, r.img.Path, err, bytes.TrimSpace(out))
	}
	b, err := os.ReadFile(tmp)
	if err != nil {
		return 0, err
	}
	skip := off - first*bs
	if skip > int64(len(b)) {
		return 0, fmt.Errorf("short read at %d", off)
	}
	n := copy(p, b[skip:])
	if n < len(p) {
		return n, fmt.Errorf("short read: %d of %d bytes at %d", n, len(p), off)
	}
	return n, nil
}

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
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/guest"
	"github.com/hyper2kvm/hyper2kvm/agent/lvm"
	"github.com/hyper2kvm/hyper2kvm/agent/partition"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// Image is a disk image qemu can open: a path (or a qemu "json:" spec) and its format.
type Image struct {
	Path   string
	Format string
	// Name is how the report names the disk (the source file or OVF
	// member); Path when empty.
	Name string
	// Writable marks, among OpenRootRWDisks' others, FIX's own overlay of a
	// disk it writes through an md array or a VG; the others are attached
	// behind a private overlay.
	Writable bool
}

func (i Image) name() string {
	if i.Name != "" {
		return i.Name
	}
	return i.Path
}

// errNoRoot says a disk holds no root filesystem; GuestDisks then tries the next.
var errNoRoot = errors.New("cannot find the guest's root filesystem: no Linux filesystem holds /etc/os-release or /etc/fstab")

// Guest inspects img through the named backend (native | guestfs).
func Guest(ctx context.Context, img Image, backend string, detectOS bool) (*report.Guest, error) {
	return GuestDisks(ctx, []Image{img}, backend, detectOS)
}

// GuestDisks inspects every disk of a VM, in the VM's disk order (the first
// was /dev/sda on the source, the second /dev/sdb, ...): each disk's
// partitions and filesystems, and the guest's files from the first disk
// that holds a root filesystem.
func GuestDisks(ctx context.Context, imgs []Image, backend string, detectOS bool) (*report.Guest, error) {
	if len(imgs) == 0 {
		return nil, errors.New("cannot inspect: no disk")
	}
	g := &report.Guest{}
	var readers []*diskReader
	defer func() {
		for _, r := range readers {
			r.close()
		}
	}()
	var pvs []foundPV
	for i, img := range imgs {
		r, err := newDiskReader(ctx, img)
		if err != nil {
			return nil, fmt.Errorf("disk %d (%s): %w", i+1, img.name(), err)
		}
		readers = append(readers, r)
		dg, dpvs, err := readDisk(r, img)
		if err != nil {
			return nil, fmt.Errorf("disk %d (%s): %w", i+1, img.name(), err)
		}
		if i == 0 {
			g.PartitionTable, g.Firmware = dg.PartitionTable, dg.Firmware
		}
		for _, p := range dg.Partitions {
			p.Disk, p.DiskName, p.Device = i, img.name(), DiskDevName(i, p.Number)
			g.Partitions = append(g.Partitions, p)
		}
		for _, f := range dpvs {
			f.disk = i
			pvs = append(pvs, f)
		}
	}
	g.Partitions = append(g.Partitions, logicalVolumes(readers, imgs, pvs)...)
	auto := backend == guest.Auto || backend == ""
	if auto {
		backend, g.BackendReason = Choose(g)
	}
	g.Backend = backend
	if !detectOS {
		return g, nil
	}
	if isWindowsGuest(g) {
		if err := inspectWindows(ctx, imgs, backend, g); err != nil {
			return nil, err
		}
		return g, nil
	}
	if !hasLinuxFS(g) && !(backend == guest.Guestfs && assembled(g)) {
		if backend != guest.Guestfs && assembled(g) {
			return nil, noRoot(g)
		}
		g.OS = &report.OS{Type: "unknown"}
		return g, nil
	}
	found, err := findRoot(ctx, imgs, backend, g)
	if err == nil && !found && auto && backend == guest.Native && assembled(g) {
		// A plain /boot beside a root on md: native opened /boot, found no
		// root there, and the md members only the appliance assembles.
		backend = guest.Guestfs
		g.Backend, g.BackendReason = backend, "guestfs: no root on the filesystems the native backend opens, and md RAID members only the appliance assembles"
		found, err = findRoot(ctx, imgs, backend, g)
	}
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, noRoot(g)
	}
	return g, nil
}

// findRoot looks for the root disk by disk, and reads the guest's files
// from the first that holds it; false when none does.
func findRoot(ctx context.Context, imgs []Image, backend string, g *report.Guest) (bool, error) {
	for i, img := range imgs {
		o := &opening{}
		if backend == guest.Guestfs {
			for j, other := range imgs {
				if j != i {
					o.others = append(o.others, guest.Image{Path: other.Path, Format: other.Format})
				}
			}
		}
		s, err := openRootOn(ctx, img, i, backend, o, g)
		if errors.Is(err, errNoRoot) {
			continue
		}
		if err != nil {
			return false, err
		}
		defer s.Close()
		if err := Files(ctx, s, g); err != nil {
			return false, err
		}
		if err := s.Close(); err != nil {
			return false, err
		}
		return true, nil
	}
	return false, nil
}

// Choose picks the backend for fix.backend "auto": native when the host
// kernel can mount every Linux filesystem found (partitions and linear
// LVs, by offset), guestfs when something only the appliance opens holds
// one (a striped, mirrored, thin or fragmented LV) or guestfish is the
// only choice. The reason goes into the report.
func Choose(g *report.Guest) (backend, reason string) {
	for _, p := range g.Partitions {
		if p.FSType == "linux_raid_member" && !hasLinuxFS(g) {
			return guest.Guestfs, "guestfs: " + devOf(p) + " is an md RAID member and no other Linux filesystem is found; only the appliance assembles md arrays"
		}
	}
	for _, p := range g.Partitions {
		if p.LV != "" && p.Note != "" {
			return guest.Guestfs, "guestfs: " + p.Note
		}
	}
	// A filesystem type the host kernel lacks (a module not installed).
	for _, p := range g.Partitions {
		if linuxFS[p.FSType] && !guest.HostKernelMounts(p.FSType) {
			return guest.Guestfs, "guestfs: " + devOf(p) + " is " + p.FSType + ", which this host's kernel cannot mount"
		}
	}
	// A UEFI guest's ESP: FIX puts the fallback loader there, and a host
	// kernel without vfat cannot mount it.
	if g.Firmware == "efi" && !guest.HostKernelMounts("vfat") {
		for _, p := range g.Partitions {
			if p.FSType == "vfat" && p.LV == "" {
				return guest.Guestfs, "guestfs: the ESP " + devOf(p) + " is vfat, which this host's kernel cannot mount (FIX checks the UEFI fallback loader there)"
			}
		}
	}
	return guest.Native, "native: every filesystem is a partition or a linear LV the host kernel mounts by offset"
}

// noRoot is errNoRoot with the LVs that could not be looked into, and why.
func noRoot(g *report.Guest) error {
	var notes []string
	for _, p := range g.Partitions {
		if p.LV != "" && p.Note != "" {
			notes = append(notes, p.Note)
		}
		if p.FSType == "crypto_LUKS" {
			notes = append(notes, encrypted(p))
		}
		if p.FSType == "linux_raid_member" {
			notes = append(notes, devOf(p)+" is an md RAID member: the native backend does not assemble md arrays (and never mounts a mirror leg alone); use fix.backend guestfs or auto")
		}
	}
	if len(notes) == 0 {
		return errNoRoot
	}
	return fmt.Errorf("%w; not looked into: %s", errNoRoot, strings.Join(notes, "; "))
}

// encrypted says why a LUKS volume was not looked into.
func encrypted(p report.Partition) string {
	return "encrypted volume: " + devOf(p) + " is LUKS (UUID " + p.UUID + "); hyper2kvm has no key and does not decrypt guests: decrypt it first, or convert with fix disabled"
}

// Encrypted lists the guest's LUKS volumes the way a "no root" error
// names them, "" when it has none.
func Encrypted(g *report.Guest) string {
	var notes []string
	for _, p := range g.Partitions {
		if p.FSType == "crypto_LUKS" {
			notes = append(notes, encrypted(p))
		}
	}
	return strings.Join(notes, "; ")
}

// Disk reads the partition table and probes each partition's filesystem.
func Disk(ctx context.Context, img Image) (*report.Guest, error) {
	r, err := newDiskReader(ctx, img)
	if err != nil {
		return nil, err
	}
	defer r.close()
	g, _, err := readDisk(r, img)
	return g, err
}

// foundPV is an LVM physical volume on a partition (or a whole disk).
type foundPV struct {
	disk        int
	start, size int64
	pv          *lvm.PV
}

// readDisk is Disk on an open reader; it also returns the LVM PVs found,
// with disk 0 (the caller numbers them).
func readDisk(r *diskReader, img Image) (*report.Guest, []foundPV, error) {
	g := &report.Guest{}
	var pvs []foundPV
	probePV := func(rp *report.Partition) error {
		if rp.FSType != "" || rp.Type == "extended" {
			return nil
		}
		pv, err := lvm.ReadPV(r, rp.Start, rp.Size)
		if err != nil {
			// A damaged PV is reported, not fatal: the rest of the disk
			// may still hold the guest.
			rp.Note = err.Error()
			return nil
		}
		if pv != nil {
			rp.FSType, rp.UUID = "LVM2_member", pv.UUID
			pvs = append(pvs, foundPV{start: rp.Start, size: rp.Size, pv: pv})
		}
		return nil
	}
	tab, err := partition.Read(r, r.size)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot inspect %s: %w", img.Path, err)
	}
	g.PartitionTable = tab.Kind
	if tab.Kind == "none" {
		fsi, err := partition.Probe(r, 0, r.size)
		if err != nil {
			return nil, nil, err
		}
		rp := report.Partition{Number: 0, Start: 0, Size: r.size, Type: "disk", FSType: fsi.Type, UUID: fsi.UUID, Label: fsi.Label, Dirty: fsi.Dirty, FreeBytes: freeOf(fsi)}
		probePV(&rp)
		if rp.FSType != "" {
			g.Partitions = append(g.Partitions, rp)
		}
	}
	efi, biosBoot := false, false
	for _, p := range tab.Partitions {
		rp := report.Partition{Number: p.Number, Start: p.Start, Size: p.Size, Type: p.TypeName,
			PartUUID: p.PartUUID, PartLabel: p.PartLabel}
		if p.TypeName != "extended" {
			fsi, err := partition.Probe(r, p.Start, p.Size)
			if err != nil {
				return nil, nil, err
			}
			rp.FSType, rp.UUID, rp.Label, rp.Dirty, rp.FreeBytes = fsi.Type, fsi.UUID, fsi.Label, fsi.Dirty, freeOf(fsi)
			probePV(&rp)
		}
		efi = efi || p.TypeName == "efi"
		biosBoot = biosBoot || p.TypeName == "bios-boot"
		g.Partitions = append(g.Partitions, rp)
	}
	g.Firmware = "bios"
	if efi && !biosBoot {
		g.Firmware = "efi"
	}
	return g, pvs, nil
}

// lvName is what LVM allows in a VG or LV name; the names are the guest's
// and end up in device paths.
var lvName = regexp.MustCompile(`^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,127}$`)

// logicalVolumes reads the VGs the PVs describe (the newest metadata of
// each) and returns every visible LV: a linear one with its byte range on
// the disk holding its PV and its filesystem, anything else with a note
// saying why the native backend cannot open it. Nothing is activated.
func logicalVolumes(readers []*diskReader, imgs []Image, pvs []foundPV) []report.Partition {
	byID := map[string]foundPV{}
	vgs := map[string]*lvm.VG{}
	var order []string
	for _, f := range pvs {
		byID[f.pv.UUID] = f
		if f.pv.Metadata == "" {
			continue
		}
		vg, err := lvm.Parse(f.pv.Metadata)
		if err != nil || !lvName.MatchString(vg.Name) || vg.Name == "." || vg.Name == ".." {
			continue
		}
		key := vg.ID + "/" + vg.Name
		if old, ok := vgs[key]; !ok || vg.Seqno > old.Seqno {
			if !ok {
				order = append(order, key)
			}
			vgs[key] = vg
		}
	}
	var out []report.Partition
	for _, key := range order {
		vg := vgs[key]
		for _, lv := range vg.LVs {
			if !lv.Visible || !lvName.MatchString(lv.Name) || lv.Name == "." || lv.Name == ".." {
				continue
			}
			p := report.Partition{Type: "lvm-lv", LV: vg.Name + "/" + lv.Name, Device: "/dev/mapper/" + lvm.MapperName(vg.Name, lv.Name)}
			rg, err := vg.Linear(lv)
			f, ok := byID[rg.PVID]
			switch {
			case len(lvDisks(vg, lv, byID)) > 1:
				d := lvDisks(vg, lv, byID)
				p.Note = fmt.Sprintf("LV %s %s %v: only the guestfs backend, given every disk, can open it", p.LV, spansDisks, d)
				p.Disk, p.DiskName = d[0]-1, imgs[d[0]-1].name()
				for _, n := range d {
					p.Disks = append(p.Disks, n-1)
				}
			case err != nil:
				p.Note = err.Error() + ": only the guestfs backend can open it"
			case !ok:
				p.Note = fmt.Sprintf("LV %s: its PV %s is on none of the VM's disks", p.LV, rg.PVID)
			case rg.Offset < 0 || rg.Size <= 0 || rg.Offset > f.size || rg.Size > f.size-rg.Offset:
				p.Note = fmt.Sprintf("LV %s: extents outside its PV", p.LV)
			default:
				p.Disk, p.DiskName, p.Start, p.Size = f.disk, imgs[f.disk].name(), f.start+rg.Offset, rg.Size
				if fsi, err := partition.Probe(readers[f.disk], p.Start, p.Size); err == nil {
					p.FSType, p.UUID, p.Label, p.Dirty, p.FreeBytes = fsi.Type, fsi.UUID, fsi.Label, fsi.Dirty, freeOf(fsi)
				}
			}
			out = append(out, p)
		}
	}
	return out
}

// assembled says whether g has volumes only an assembly opens: md RAID
// members, or LVs the native backend cannot open by offset.
func assembled(g *report.Guest) bool {
	for _, p := range g.Partitions {
		if p.FSType == "linux_raid_member" || (p.LV != "" && p.Note != "") {
			return true
		}
	}
	return false
}

// spansDisks is how an LV's note says its extents are on several of the
// VM's disks (listed in its Disks: FIX writes them all, or none).
const spansDisks = "has extents on the VM's disks"

// lvDisks lists the disks (1 for the first) holding lv's extents, in order.
func lvDisks(vg *lvm.VG, lv lvm.LV, byID map[string]foundPV) []int {
	seen := map[int]bool{}
	var disks []int
	for _, s := range lv.Segments {
		for _, st := range s.Stripes {
			pv, ok := vg.PVs[st.PV]
			if !ok {
				continue
			}
			if f, ok := byID[pv.ID]; ok && !seen[f.disk] {
				seen[f.disk] = true
				disks = append(disks, f.disk+1)
			}
		}
	}
	sort.Ints(disks) // in the VM's order, not the extents'
	return disks
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

// DevName is how the source VM named partition n of its first disk.
func DevName(n int) string { return DiskDevName(0, n) }

// DiskDevName is how the source VM named partition n (0: the whole disk) of
// its disk'th disk: /dev/sda1, /dev/sdb1, ..., /dev/sdaa1 after /dev/sdz.
func DiskDevName(disk, n int) string {
	d := "/dev/sd" + diskLetters(disk)
	if n == 0 {
		return d
	}
	return d + strconv.Itoa(n)
}

func diskLetters(i int) string {
	s := ""
	for i++; i > 0; i = (i - 1) / 26 {
		s = string(rune('a'+(i-1)%26)) + s
	}
	return s
}

// diskIndex is the inverse of diskLetters; -1 for anything else.
func diskIndex(letters string) int {
	if letters == "" || len(letters) > 3 {
		return -1
	}
	n := 0
	for _, c := range letters {
		if c < 'a' || c > 'z' {
			return -1
		}
		n = n*26 + int(c-'a') + 1
	}
	return n - 1
}

// RootPartition returns the filesystem g.Root names.
func RootPartition(g *report.Guest) (report.Partition, bool) {
	for _, p := range g.Partitions {
		if g.Root != "" && devOf(p) == g.Root {
			return p, true
		}
	}
	return report.Partition{}, false
}

// RootDisk is the index of the disk holding the guest's root filesystem
// (0 when it is not known): FIX works on that disk.
func RootDisk(g *report.Guest) int {
	if p, ok := RootPartition(g); ok {
		return p.Disk
	}
	return 0
}

// devOf is a filesystem's name on the source VM.
func devOf(p report.Partition) string {
	if p.Device != "" {
		return p.Device
	}
	return DiskDevName(p.Disk, p.Number)
}

func mountOf(p report.Partition, target string, ro bool) guest.Mount {
	m := guest.Mount{Number: p.Number, Offset: p.Start, Size: p.Size, FSType: p.FSType, Target: target, RO: ro}
	if p.LV != "" {
		m.Device = "/dev/" + p.LV
	}
	if p.Type == "md" {
		m.Device = p.Device
	}
	return m
}

// OpenRoot opens a session on img, the disk holding the guest's root
// filesystem, with that filesystem at "/" and, when fstab names a separate
// /boot on the same disk, that too. When g.Root is empty it finds the root
// on the first disk: the first Linux filesystem holding /etc/os-release or
// /etc/fstab, and records it in g.Root.
func OpenRoot(ctx context.Context, img Image, backend string, writable bool, g *report.Guest) (guest.Session, error) {
	o := &opening{all: writable}
	return openRootOn(ctx, img, RootDisk(g), backend, o, g)
}

// OpenRootRW is OpenRoot with only the filesystems mounted at the mount
// points rw ("/", "/boot", "/usr", "/var", "/boot/efi") read-write and the
// others read-only: a filesystem that is only read is not changed by its
// mount either. It also returns the filesystems it mounted read-write.
func OpenRootRW(ctx context.Context, img Image, backend string, rw []string, g *report.Guest) (guest.Session, []report.Partition, error) {
	return OpenRootRWDisks(ctx, img, nil, backend, rw, g)
}

// OpenRootRWDisks is OpenRootRW with the VM's other disks: others[i] is
// disk i (the root disk's entry is not used, an entry without a path is
// left out). The guestfs appliance gets them after img, so it assembles md
// arrays and VGs across disks as INSPECT saw them. Every disk FIX writes
// besides img (WriteDisks) must be there, Writable: FIX's own overlay,
// written through the array (every mirror leg) or the VG.
func OpenRootRWDisks(ctx context.Context, img Image, others []Image, backend string, rw []string, g *report.Guest) (guest.Session, []report.Partition, error) {
	o := &opening{rw: map[string]bool{}, writes: map[int]bool{}}
	for _, mp := range rw {
		o.rw[mp] = true
	}
	rd := RootDisk(g)
	for i, other := range others {
		if i == rd || other.Path == "" {
			continue
		}
		o.others = append(o.others, guest.Image{Path: other.Path, Format: other.Format, Writable: other.Writable})
		o.writes[i] = other.Writable
	}
	s, err := openRootOn(ctx, img, rd, backend, o, g)
	if err != nil {
		return nil, nil, err
	}
	return s, o.mountedRW, nil
}

// opening says which mount points an opening mounts read-write, and
// records the filesystems it did.
type opening struct {
	all       bool
	rw        map[string]bool
	mountedRW []report.Partition
	// others are the VM's other disks, for the guestfs appliance to
	// assemble md arrays and VGs across disks: read-only for INSPECT,
	// FIX's writable overlays for the disks it writes (writes, by index).
	others []guest.Image
	writes map[int]bool
}

func (o *opening) writable() bool { return o.all || len(o.rw) > 0 }

// mount mounts p at target, read-write when the opening says so.
func (o *opening) mount(ctx context.Context, s guest.Session, m guest.Mount, p report.Partition) error {
	m.RO = !o.all && !o.rw[m.Target]
	if err := s.Mount(ctx, m); err != nil {
		return err
	}
	if !m.RO {
		p.MountPoint = m.Target
		o.mountedRW = append(o.mountedRW, p)
	}
	return nil
}

// canWrite refuses to open for writing a root that spans disks the opening
// cannot write together: writing one mirror leg alone leaves the other
// with the old data (the array is then silently inconsistent), and one
// disk's share of an LV alone loses the rest.
func (o *opening) canWrite(g *report.Guest, root report.Partition, backend string) error {
	ws := WriteDisks(g)
	if backend != guest.Guestfs && (root.Type == "md" || len(ws) > 1) {
		return fmt.Errorf("cannot write the guest's root %s: it is on an md RAID array or an LV across the VM's disks %s, which only the guestfs backend writes (through the assembled array or VG, every disk at once); use fix.backend guestfs or auto", devOf(root), diskList(ws))
	}
	var missing []int
	for _, d := range ws[1:] {
		if !o.writes[d] {
			missing = append(missing, d)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("cannot write the guest's root %s: it spans the VM's disks %s, and FIX has no writable overlay of disk %s; writing the others alone would corrupt the mirror or the LV", devOf(root), diskList(ws), diskList(missing))
	}
	return nil
}

// diskList names disks by their place in the VM (1 for the first), as
// the LV notes do: "1 and 2".
func diskList(ds []int) string {
	var n []string
	for _, d := range ds {
		n = append(n, strconv.Itoa(d+1))
	}
	if len(n) < 2 {
		return strings.Join(n, "")
	}
	return strings.Join(n[:len(n)-1], ", ") + " and " + n[len(n)-1]
}

// openRootOn is OpenRoot on the disk'th disk of the VM.
func openRootOn(ctx context.Context, img Image, disk int, backend string, o *opening, g *report.Guest) (guest.Session, error) {
	root, found := RootPartition(g)
	if !found {
		any := false
		for _, p := range g.Partitions {
			any = any || (p.Disk == disk && linuxFS[p.FSType])
		}
		if !any && !(backend == guest.Guestfs && assembled(g)) {
			return nil, errNoRoot
		}
	}
	if found && o.writable() {
		if err := o.canWrite(g, root, backend); err != nil {
			return nil, err
		}
	}
	s, err := guest.Open(ctx, backend, guest.Image{Path: img.Path, Format: img.Format}, guest.Options{Writable: o.writable(), Others: o.others})
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	if found {
		m := mountOf(root, "/", true)
		if g.RootSubvol != "" {
			m.Options = "subvol=" + g.RootSubvol
		}
		if err := o.mount(ctx, s, m, root); err != nil {
			return nil, err
		}
	} else {
		for _, p := range g.Partitions {
			if p.Disk != disk || !linuxFS[p.FSType] {
				continue
			}
			if err := o.mount(ctx, s, mountOf(p, "/", true), p); err != nil {
				return nil, err
			}
			if isRoot(ctx, s, "/") {
				g.Root = devOf(p)
				root = p
				break
			}
			if err := s.Unmount(ctx); err != nil {
				return nil, err
			}
			o.mountedRW = nil
			if p.FSType != "btrfs" {
				continue
			}
			sv, err := findSubvol(ctx, s, mountOf(p, "/", !o.all && !o.rw["/"]))
			if err != nil {
				return nil, err
			}
			if sv != "" {
				if o.all || o.rw["/"] {
					p.MountPoint = "/"
					o.mountedRW = append(o.mountedRW, p)
				}
				g.Root, g.RootSubvol = devOf(p), sv
				root = p
				break
			}
		}
		if g.Root == "" && backend == guest.Guestfs && !o.writable() {
			p, err := rootOnVolume(ctx, s, g, disk)
			if err != nil {
				return nil, err
			}
			root = p
		}
		if g.Root == "" {
			return nil, errNoRoot
		}
	}
	if b, err := s.ReadFile(ctx, "/etc/fstab"); err == nil {
		if err := mountTree(ctx, s, g, root, ParseTab(b, 2), o); err != nil {
			return nil, err
		}
	}
	ok = true
	return s, nil
}

// rootOnVolume looks for the root on the md arrays and LVs the guestfs
// appliance assembled from every disk of the VM (an md mirror, an LV
// spanning two disks), records each Linux filesystem found in
// g.Partitions (an md array as type "md", on the disk'th disk), and
// mounts the root at "/" when one holds it.
func rootOnVolume(ctx context.Context, s guest.Session, g *report.Guest, disk int) (report.Partition, error) {
	vols, err := guest.Volumes(ctx, s)
	if err != nil {
		return report.Partition{}, err
	}
	var root report.Partition
	for _, v := range vols {
		if !linuxFS[v.FSType] {
			continue
		}
		i := -1
		for j, p := range g.Partitions {
			if (p.LV != "" && "/dev/"+p.LV == v.Device) || (p.Type == "md" && p.Device == v.Device) {
				i = j
			}
		}
		if i < 0 {
			md := report.Partition{Type: "md", Device: v.Device, Disk: disk, Disks: mdDisks(g, v.ArrayUUID)}
			for _, p := range g.Partitions {
				if p.Disk == disk && md.DiskName == "" {
					md.DiskName = p.DiskName
				}
			}
			g.Partitions = append(g.Partitions, md)
			i = len(g.Partitions) - 1
		}
		g.Partitions[i].FSType, g.Partitions[i].UUID = v.FSType, v.UUID
		if g.Root != "" {
			continue
		}
		p := g.Partitions[i]
		if err := s.Mount(ctx, mountOf(p, "/", true)); err != nil {
			return report.Partition{}, err
		}
		if isRoot(ctx, s, "/") {
			g.Root, root = devOf(p), p
			continue
		}
		if err := s.Unmount(ctx); err != nil {
			return report.Partition{}, err
		}
	}
	return root, nil
}

// mdDisks lists the disks holding members of the md array whose UUID is
// arrayUUID (32 hex digits, "" when unknown): the members' superblocks
// carry it. When no member matches (a 0.90 superblock, whose UUID INSPECT
// does not read), every disk holding an md member is listed: FIX then
// writes a disk more than needed rather than one leg alone.
func mdDisks(g *report.Guest, arrayUUID string) []int {
	var all, match []int
	for _, p := range g.Partitions {
		if p.FSType != "linux_raid_member" {
			continue
		}
		if !slices.Contains(all, p.Disk) {
			all = append(all, p.Disk)
		}
		if arrayUUID != "" && strings.ReplaceAll(strings.ToLower(p.UUID), "-", "") == arrayUUID && !slices.Contains(match, p.Disk) {
			match = append(match, p.Disk)
		}
	}
	if len(match) == 0 {
		match = all
	}
	sort.Ints(match)
	return match
}

// WriteDisks lists the disks FIX writes (0 for the first), the root's disk
// first: that disk, and every other disk that the root, or the /boot,
// /usr, /var or /boot/efi FIX mounts with it, spans (an md array's
// members, an LV's extents). FIX needs a writable image of each.
func WriteDisks(g *report.Guest) []int {
	rd := RootDisk(g)
	disks := []int{rd}
	add := func(p report.Partition) {
		for _, d := range p.Disks {
			if !slices.Contains(disks, d) {
				disks = append(disks, d)
			}
		}
	}
	root, ok := RootPartition(g)
	if !ok {
		return disks
	}
	add(root)
	for _, e := range g.Fstab {
		if e.MountPoint != "/boot/efi" && !slices.Contains(treeMounts, e.MountPoint) {
			continue
		}
		if p, found := Resolve(g, e.Device); found && p.Disk == rd {
			add(p)
		}
	}
	sort.Ints(disks[1:])
	return disks
}

// treeMounts are the fstab mount points mounted below the root, parents
// first: what the guest's own tools (update-initramfs, dracut) and FIX read
// and write.
var treeMounts = []string{"/usr", "/var", "/boot"}

// mountTree mounts the guest's /usr, /var and /boot the way its fstab says
// (btrfs subvol= included), when they live on the root's disk (the session
// holds one disk) on a Linux filesystem.
func mountTree(ctx context.Context, s guest.Session, g *report.Guest, root report.Partition, tab []report.MountEntry, o *opening) error {
	for _, mp := range treeMounts {
		for _, e := range tab {
			if e.MountPoint != mp {
				continue
			}
			p, found := Resolve(g, e.Device)
			if !found || p.Disk != root.Disk || !linuxFS[p.FSType] {
				break
			}
			if devOf(p) == g.Root {
				// Another subvolume of the root's btrfs: a second loop
				// device with the same filesystem id is not mounted.
				break
			}
			m := mountOf(p, mp, true)
			m.Options = subvolOption(e.Options)
			if err := o.mount(ctx, s, m, p); err != nil {
				return err
			}
			break
		}
	}
	// The ESP, for FIX's UEFI fallback loader. A host kernel without vfat
	// (the native backend) cannot mount it; that is not an error.
	for _, e := range tab {
		if e.MountPoint != "/boot/efi" {
			continue
		}
		if p, found := Resolve(g, e.Device); found && p.Disk == root.Disk && p.FSType == "vfat" && p.LV == "" {
			err := o.mount(ctx, s, mountOf(p, "/boot/efi", true), p)
			if err != nil && (ctx.Err() != nil || o.all || o.rw["/boot/efi"]) {
				// FIX writes the fallback loader there; without it a
				// converted UEFI guest may not boot. The native backend's
				// error says when the host kernel lacks vfat, and what to do.
				return fmt.Errorf("cannot mount the ESP %s (fstab's /boot/efi), where FIX checks the UEFI fallback loader: %w", devOf(p), err)
			}
		}
		break
	}
	return nil
}

// subvolOption keeps fstab's subvol=/subvolid= options, the only ones a
// guest may pass to a mount (guest.CheckOptions).
func subvolOption(opts string) string {
	var keep []string
	for _, o := range strings.Split(opts, ",") {
		if strings.HasPrefix(o, "subvol=") || strings.HasPrefix(o, "subvolid=") {
			if guest.CheckOptions(o) == nil {
				keep = append(keep, o)
			}
		}
	}
	return strings.Join(keep, ",")
}

// isRoot says whether dir holds a Linux root: os-release or fstab.
func isRoot(ctx context.Context, s guest.Session, dir string) bool {
	return exists(ctx, s, path.Join(dir, "etc/os-release")) || exists(ctx, s, path.Join(dir, "usr/lib/os-release")) || exists(ctx, s, path.Join(dir, "etc/fstab"))
}

// rootSubvols are the names distributions give a btrfs root subvolume,
// tried first: Ubuntu and Debian's installer "@", Fedora's "root".
var rootSubvols = []string{"@", "@rootfs", "root", "rootfs"}

// findSubvol looks for the root in the subvolumes at a btrfs filesystem's
// top level (subvolid=5), for a guest whose default subvolume is not its
// root (the top level holds "@" and "@home"). It leaves the root subvolume
// mounted at "/" and returns its name, or mounts nothing and returns "".
func findSubvol(ctx context.Context, s guest.Session, m guest.Mount) (string, error) {
	top := m
	top.Options = "subvolid=5"
	if err := s.Mount(ctx, top); err != nil {
		return "", err
	}
	ents, _ := s.ReadDir(ctx, "/")
	var names []string
	for _, want := range rootSubvols {
		for _, e := range ents {
			if e.Name == want && e.Mode.IsDir() {
				names = append(names, e.Name)
			}
		}
	}
	for _, e := range ents {
		if e.Mode.IsDir() && !slices.Contains(rootSubvols, e.Name) {
			names = append(names, e.Name)
		}
	}
	found := ""
	for _, n := range names {
		if isRoot(ctx, s, "/"+n) {
			found = n
			break
		}
	}
	if err := s.Unmount(ctx); err != nil || found == "" {
		return "", err
	}
	m.Options = "subvol=" + found
	// A plain directory that looks like a root is no subvolume: the mount
	// fails, and the guest has no root we can use.
	if err := s.Mount(ctx, m); err != nil {
		return "", fmt.Errorf("cannot mount btrfs subvolume %q as the root: %w", found, err)
	}
	return found, nil
}

func exists(ctx context.Context, s guest.Session, p string) bool {
	_, err := s.Lstat(ctx, p)
	return err == nil
}

var (
	kernelDev = regexp.MustCompile(`^/dev/(?:sd|hd|vd|xvd)([a-z]{1,3})([0-9]*)$`)
	scsiPath  = regexp.MustCompile(`-scsi-\d+:\d+:(\d+):\d+-part(\d+)$`)
)

// Resolve finds the filesystem an fstab device field names on the VM's
// disks: UUID=, PARTUUID=, LABEL=, PARTLABEL=, /dev/disk/by-*/..., or a
// kernel name under any bus (/dev/sda1, /dev/hdb1, /dev/vda1, /dev/xvdb1):
// the letter is the disk in the VM's order.
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
		// partition suffix carries over, and the SCSI target of a by-path
		// name (VMware's unit number, in disk order). A by-id name on a
		// VM with several disks says nothing about which one.
		disk := 0
		if m := scsiPath.FindStringSubmatch(dev); m != nil {
			disk, _ = strconv.Atoi(m[1])
		} else if diskCount(g) > 1 {
			return report.Partition{}, false
		}
		i := strings.LastIndex(dev, "-part")
		if i < 0 {
			return report.Partition{}, false
		}
		n, err := strconv.Atoi(dev[i+5:])
		if err != nil {
			return report.Partition{}, false
		}
		return match(func(p report.Partition) bool { return p.LV == "" && p.Disk == disk && p.Number == n })
	}
	if strings.HasPrefix(dev, "/dev/mapper/") {
		return match(func(p report.Partition) bool { return p.LV != "" && p.Device == dev })
	}
	if m := kernelDev.FindStringSubmatch(dev); m == nil && strings.Count(dev, "/") == 3 && strings.HasPrefix(dev, "/dev/") {
		// /dev/VG/LV
		return match(func(p report.Partition) bool { return p.LV != "" && "/dev/"+p.LV == dev })
	}
	if m := kernelDev.FindStringSubmatch(dev); m != nil {
		disk := diskIndex(m[1])
		n := 0
		if m[2] != "" {
			var err error
			if n, err = strconv.Atoi(m[2]); err != nil {
				return report.Partition{}, false
			}
		}
		return match(func(p report.Partition) bool { return p.LV == "" && p.Disk == disk && p.Number == n })
	}
	return report.Partition{}, false
}

func diskCount(g *report.Guest) int {
	n := 0
	for _, p := range g.Partitions {
		n = max(n, p.Disk+1)
	}
	return n
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
		if len(f) > 3 && minFields == 2 && e.MountPoint != "" && e.FSType != "" {
			e.Options = f[3]
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
	for i := range g.Partitions {
		g.Partitions[i].MountPoint = ""
	}
	for _, e := range g.Fstab {
		if p, ok := Resolve(g, e.Device); ok {
			for i := range g.Partitions {
				if devOf(g.Partitions[i]) == devOf(p) && g.Partitions[i].MountPoint == "" && strings.HasPrefix(e.MountPoint, "/") {
					g.Partitions[i].MountPoint = e.MountPoint
				}
			}
		}
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

// freeOf is the free space a superblock recorded, nil when unknown (the
// pre-flight checks of / and /boot read it).
func freeOf(fsi partition.FS) *int64 {
	if !fsi.HasFree {
		return nil
	}
	n := fsi.Free
	return &n
}

// Package fix adapts a Linux guest to KVM: stable ids in fstab and crypttab,
// root= in the boot loader, virtio drivers in the initramfs, network
// configuration and VMware tools. It works only on a writable overlay or the
// converted output, never on the source. docs/GUEST.md lists every change.
package fix

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/guest"
	"github.com/hyper2kvm/hyper2kvm/agent/inspect"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// ErrUnsupported is returned for guests FIX cannot adapt (Windows for now).
var ErrUnsupported = errors.New("unsupported guest")

// VirtioModules are the drivers a guest needs in its initramfs to find its
// root disk and network on KVM.
var VirtioModules = []string{"virtio_blk", "virtio_scsi", "virtio_net", "virtio_pci", "virtio_ring"}

// Apply applies spec to the writable image img, whose inspection is g, through
// the named backend, and returns every change made.
func Apply(ctx context.Context, img inspect.Image, backend string, spec *manifest.Fix, g *report.Guest) ([]report.Change, error) {
	return ApplyDisks(ctx, img, nil, backend, spec, g)
}

// ApplyDisks is Apply with the VM's other disks, others[i] being disk i
// (see inspect.OpenRootRWDisks): a root on an md mirror or an LV across
// disks is written through the guestfs appliance's array or VG, to
// FIX's writable overlay of every disk it spans (inspect.WriteDisks).
func ApplyDisks(ctx context.Context, img inspect.Image, others []inspect.Image, backend string, spec *manifest.Fix, g *report.Guest) ([]report.Change, error) {
	if spec == nil {
		spec = &manifest.Fix{}
	}
	if !on(spec.Enabled, true) {
		return nil, nil
	}
	if spec.Backend != "" {
		backend = spec.Backend
	}
	if backend == guest.Auto && g != nil {
		// The one INSPECT chose for this guest.
		backend = g.Backend
		if backend == "" {
			backend, _ = inspect.Choose(g)
		}
	}
	if g == nil {
		var err error
		if g, err = inspect.Guest(ctx, img, backend, true); err != nil {
			return nil, fmt.Errorf("cannot fix: %w", err)
		}
		backend = g.Backend
	}
	if g.OS != nil && g.OS.Type == "windows" {
		return nil, fmt.Errorf("cannot fix a Windows guest: %w (only Linux guests are adapted; convert without fix)", ErrUnsupported)
	}
	if g.OS != nil && g.OS.Type != "linux" {
		if enc := inspect.Encrypted(g); enc != "" {
			return nil, fmt.Errorf("cannot fix: %w: no Linux root filesystem found; %s", ErrUnsupported, enc)
		}
		return nil, fmt.Errorf("cannot fix: %w: no Linux root filesystem found", ErrUnsupported)
	}
	f := &fixer{g: g}
	steps := []struct {
		name string
		on   bool
		run  func(context.Context) error
	}{
		{"fstab", spec.Fstab == nil || on(spec.Fstab.Enabled, true), func(ctx context.Context) error { return f.fstab(ctx, fstabMode(spec.Fstab)) }},
		{"grub", spec.Grub == nil || on(spec.Grub.Enabled, true), f.grub},
		{"network", spec.Network == nil || on(spec.Network.Enabled, true), func(ctx context.Context) error { return f.network(ctx, netLevel(spec.Network)) }},
		{"vmware_tools", spec.VMwareTools != nil && on(spec.VMwareTools.Enabled, false), f.vmwareTools},
		// Last: regenerating the initramfs picks up the files changed above.
		{"initramfs", spec.Initramfs == nil || on(spec.Initramfs.Enabled, true), func(ctx context.Context) error {
			return f.initramfs(ctx, spec.Initramfs == nil || on(spec.Initramfs.Regenerate, true))
		}},
	}
	var rw []string
	for _, st := range steps {
		if st.on {
			rw = append(rw, writes[st.name]...)
		}
	}
	s, mountedRW, err := inspect.OpenRootRWDisks(ctx, img, others, backend, rw, g)
	if err != nil {
		return nil, fmt.Errorf("cannot fix: %w", err)
	}
	defer s.Close()
	f.s = s
	// A read-write mount replays a dirty journal: the disk then differs
	// from its source there too, and the report says so.
	for _, p := range mountedRW {
		if p.Dirty {
			dev := p.Device
			if p.LV != "" {
				dev = "/dev/" + p.LV
			}
			f.changes = append(f.changes, report.Change{Fix: "mount", File: dev, Disks: diskNames(g, p),
				Note: "the " + p.FSType + " journal needed recovery (the guest was not shut down cleanly) and was replayed when FIX mounted it read-write"})
		}
	}
	for _, st := range steps {
		if !st.on {
			continue
		}
		if err := ctx.Err(); err != nil {
			return f.changes, err
		}
		if err := st.run(ctx); err != nil {
			return withDisks(f.changes, mountedRW, g), fmt.Errorf("cannot fix %s: %w", st.name, err)
		}
	}
	if err := s.Close(); err != nil {
		return withDisks(f.changes, mountedRW, g), err
	}
	return withDisks(f.changes, mountedRW, g), nil
}

// withDisks says on each change which disks it was written to: those of
// the filesystem mounted read-write nearest above its file (every disk of
// an md array or an LV across disks).
func withDisks(changes []report.Change, mounted []report.Partition, g *report.Guest) []report.Change {
	for i, c := range changes {
		if c.Disks != nil {
			continue
		}
		best := -1
		for j, p := range mounted {
			mp := p.MountPoint
			under := mp == "/" || c.File == mp || strings.HasPrefix(c.File, mp+"/")
			if under && (best < 0 || len(mp) > len(mounted[best].MountPoint)) {
				best = j
			}
		}
		if best >= 0 && strings.HasPrefix(c.File, "/") {
			changes[i].Disks = diskNames(g, mounted[best])
		}
	}
	return changes
}

// diskNames are the names of the disks p lives on (its Disks, else its Disk).
func diskNames(g *report.Guest, p report.Partition) []string {
	ds := p.Disks
	if len(ds) == 0 {
		ds = []int{p.Disk}
	}
	var names []string
	for _, d := range ds {
		name := fmt.Sprintf("disk %d", d+1)
		for _, q := range g.Partitions {
			if q.Disk == d && q.DiskName != "" {
				name = q.DiskName
				break
			}
		}
		names = append(names, name)
	}
	return names
}

// writes are the mount points each fix may write to; the others are
// mounted read-only. initramfs and vmware_tools run the guest's own tools,
// which may write anywhere in the tree.
var writes = map[string][]string{
	"fstab":        {"/"},
	"network":      {"/"},
	"grub":         {"/", "/boot", "/boot/efi"},
	"initramfs":    {"/", "/boot", "/boot/efi", "/usr", "/var"},
	"vmware_tools": {"/", "/boot", "/boot/efi", "/usr", "/var"},
}

// AnyEnabled says whether spec switches on at least one fix: with none,
// FIX has nothing it could change and does not open the guest at all.
func AnyEnabled(spec *manifest.Fix) bool { return spec.AnyEnabled() }

func on(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}

func fstabMode(f *manifest.FstabFix) string {
	if f == nil || f.Mode == "" {
		return "stabilize-all"
	}
	return f.Mode
}

// netLevel folds the manifest's synonyms: basic = moderate, full = aggressive.
func netLevel(n *manifest.NetworkFix) string {
	if n == nil || n.FixLevel == "" {
		return "moderate"
	}
	switch n.FixLevel {
	case "basic":
		return "moderate"
	case "full":
		return "aggressive"
	}
	return n.FixLevel
}

type fixer struct {
	s       guest.Session
	g       *report.Guest
	changes []report.Change
}

// edit rewrites a guest file through fn and records the change; a missing
// file is no change.
func (f *fixer) edit(ctx context.Context, fix, p string, fn func(string) string) error {
	// A device or FIFO where a config file belongs is hostile or broken;
	// leave it and say so. Look before opening: on a filesystem mounted
	// nodev, opening a device node fails "permission denied" before the
	// backend can see what it is.
	e, err := f.s.Lstat(ctx, p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil && !e.Mode.IsRegular() && e.Mode&fs.ModeSymlink == 0 {
		f.leaveAlone(fix, p, e.Mode)
		return nil
	}
	b, err := f.s.ReadFile(ctx, p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if errors.Is(err, guest.ErrNotRegular) || errors.Is(err, fs.ErrPermission) && e.Mode&fs.ModeSymlink != 0 {
		// Through a symbolic link: what it leads to is not a regular
		// file (a device refused "permission denied" on nodev).
		f.leaveAlone(fix, p, e.Mode)
		return nil
	}
	if err != nil {
		return err
	}
	before := string(b)
	after := fn(before)
	if after == before {
		return nil
	}
	if err := f.s.WriteFile(ctx, p, []byte(after), 0o644); err != nil {
		return err
	}
	f.changes = append(f.changes, report.Change{Fix: fix, File: p, Before: before, After: after})
	return nil
}

// leaveAlone records that p, which is not a regular file, was not edited.
func (f *fixer) leaveAlone(fix, p string, mode fs.FileMode) {
	what := "not a regular file"
	switch {
	case mode&fs.ModeCharDevice != 0:
		what = "a character device, not a regular file"
	case mode&fs.ModeDevice != 0:
		what = "a block device, not a regular file"
	case mode&fs.ModeNamedPipe != 0:
		what = "a FIFO, not a regular file"
	case mode&fs.ModeSocket != 0:
		what = "a socket, not a regular file"
	case mode.IsDir():
		what = "a directory, not a regular file"
	case mode&fs.ModeSymlink != 0:
		what = "a symbolic link to something that is not a regular file"
	}
	f.changes = append(f.changes, report.Change{Fix: fix, File: p, Note: "warning: left unchanged: " + what})
}

func (f *fixer) remove(ctx context.Context, fix, p, note string) error {
	var before string
	e, err := f.s.Lstat(ctx, p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if e.Mode&fs.ModeSymlink != 0 {
		t, _ := f.s.Readlink(ctx, p)
		before = "symlink -> " + t
	} else if e.Mode.IsRegular() {
		b, _ := f.s.ReadFile(ctx, p)
		before = string(b)
	}
	if err := f.s.Remove(ctx, p); err != nil {
		return err
	}
	f.changes = append(f.changes, report.Change{Fix: fix, File: p, Before: before, Note: note})
	return nil
}

// stableID is the best stable name for a partition: UUID > PARTUUID > LABEL > PARTLABEL.
func stableID(p report.Partition) string {
	switch {
	case p.UUID != "":
		return "UUID=" + p.UUID
	case p.PartUUID != "":
		return "PARTUUID=" + p.PartUUID
	case p.Label != "":
		return "LABEL=" + p.Label
	case p.PartLabel != "":
		return "PARTLABEL=" + p.PartLabel
	}
	return ""
}

// unstable says whether mode wants dev rewritten.
func unstable(dev, mode string) bool {
	switch mode {
	case "noop":
		return false
	case "bypath-only":
		return strings.HasPrefix(dev, "/dev/disk/by-path/")
	}
	if strings.HasPrefix(dev, "/dev/disk/by-uuid/") || strings.HasPrefix(dev, "/dev/disk/by-label/") ||
		strings.HasPrefix(dev, "/dev/disk/by-partuuid/") || strings.HasPrefix(dev, "/dev/mapper/") {
		return false
	}
	return strings.HasPrefix(dev, "/dev/")
}

// rewriteTab replaces field col of each line when it names a partition of
// this disk unstably, keeping the line's spacing and comments.
func (f *fixer) rewriteTab(text string, col int, mode string) string {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		fields := strings.Fields(l)
		if len(fields) <= col || !unstable(fields[col], mode) {
			continue
		}
		p, ok := inspect.Resolve(f.g, fields[col])
		if !ok || p.LV != "" { // /dev/VG/LV is stable
			continue
		}
		id := stableID(p)
		if id == "" {
			continue
		}
		lines[i] = replaceField(l, col, id)
	}
	return strings.Join(lines, "\n")
}

// replaceField swaps the col'th whitespace-separated field of l for v.
func replaceField(l string, col int, v string) string {
	idx := regexp.MustCompile(`\S+`).FindAllStringIndex(l, -1)
	if col >= len(idx) {
		return l
	}
	return l[:idx[col][0]] + v + l[idx[col][1]:]
}

func (f *fixer) fstab(ctx context.Context, mode string) error {
	switch mode {
	case "stabilize-all", "bypath-only":
	case "noop":
		return nil
	default:
		return fmt.Errorf("unknown fstab mode %q (want stabilize-all, bypath-only or noop)", mode)
	}
	if err := f.edit(ctx, "fstab", "/etc/fstab", func(s string) string { return f.rewriteTab(s, 0, mode) }); err != nil {
		return err
	}
	return f.edit(ctx, "fstab", "/etc/crypttab", func(s string) string { return f.rewriteTab(s, 1, mode) })
}

var (
	rootArg = regexp.MustCompile(`(^|[\s"'])root=([^\s"']+)`)
	// devArg is a kernel argument naming a device: root= and resume=
	// (hibernation's swap).
	devArg = regexp.MustCompile(`(^|[\s"'])(root|resume)=([^\s"']+)`)
)

// fixRoot rewrites root=DEV and resume=DEV to =UUID=... of the filesystem
// (or swap) DEV names by an unstable name. For a root in a btrfs
// subvolume, a line whose root= it rewrote and that has no rootflags=
// gets rootflags=subvol=NAME: without it the kernel mounts the default
// subvolume, which is not the root. rootflags= already there is kept.
func (f *fixer) fixRoot(s string) string {
	return mapLines(s, func(l string) string {
		changed := false
		l = devArg.ReplaceAllStringFunc(l, func(m string) string {
			sub := devArg.FindStringSubmatch(m)
			dev := sub[3]
			if !unstable(dev, "stabilize-all") && !strings.HasPrefix(dev, "PARTUUID=") && !strings.HasPrefix(dev, "LABEL=") {
				return m
			}
			p, ok := inspect.Resolve(f.g, dev)
			if !ok || p.UUID == "" || p.LV != "" {
				return m
			}
			changed = changed || sub[2] == "root"
			return sub[1] + sub[2] + "=UUID=" + p.UUID
		})
		if changed && f.g.RootSubvol != "" && !strings.Contains(l, "rootflags=") {
			l = rootArg.ReplaceAllString(l, "${0} rootflags=subvol="+f.g.RootSubvol)
		}
		return l
	})
}

func (f *fixer) grub(ctx context.Context) error {
	files := []string{"/boot/grub/grub.cfg", "/boot/grub2/grub.cfg", "/etc/default/grub", "/etc/kernel/cmdline"}
	if ents, err := f.s.ReadDir(ctx, "/boot/loader/entries"); err == nil {
		for _, e := range ents {
			if strings.HasSuffix(e.Name, ".conf") && e.Mode.IsRegular() {
				files = append(files, "/boot/loader/entries/"+e.Name)
			}
		}
	}
	for _, p := range files {
		if err := f.edit(ctx, "grub", p, f.fixRoot); err != nil {
			return err
		}
	}
	for _, p := range []string{"/boot/grub/device.map", "/boot/grub2/device.map"} {
		if err := f.remove(ctx, "grub", p, "stale BIOS disk map removed; grub probes disks itself"); err != nil {
			return err
		}
	}
	return f.efiFallback(ctx)
}

// efiFallback puts the guest's own loader at the ESP's removable-media path
// EFI/BOOT/BOOTX64.EFI when it is missing: the converted VM starts with
// empty NVRAM, so the firmware's boot entry for EFI/<distro>/ is gone and
// only the fallback path is tried. shim is preferred (it then loads
// grubx64.efi from its own directory, which is copied with it), else grub.
func (f *fixer) efiFallback(ctx context.Context) error {
	const esp = "/boot/efi/EFI"
	if e, err := f.s.Lstat(ctx, esp); err != nil || !e.Mode.IsDir() {
		return nil // no ESP mounted (BIOS guest, or a host without vfat)
	}
	if _, err := f.s.Lstat(ctx, esp+"/BOOT/BOOTX64.EFI"); err == nil {
		return nil
	}
	vendors, _ := f.s.ReadDir(ctx, esp)
	sort.Slice(vendors, func(i, j int) bool { return vendors[i].Name < vendors[j].Name })
	for _, want := range []string{"shimx64.efi", "grubx64.efi"} {
		for _, v := range vendors {
			if !v.Mode.IsDir() || strings.EqualFold(v.Name, "BOOT") {
				continue
			}
			src := esp + "/" + v.Name + "/" + want
			b, err := f.s.ReadFile(ctx, src)
			if err != nil {
				continue
			}
			if err := f.s.Mkdir(ctx, esp+"/BOOT"); err != nil {
				return err
			}
			copies := map[string]string{esp + "/BOOT/BOOTX64.EFI": src}
			if want == "shimx64.efi" {
				for _, side := range []string{"grubx64.efi", "mmx64.efi"} {
					copies[esp+"/BOOT/"+side] = esp + "/" + v.Name + "/" + side
				}
			}
			for _, dst := range sortedKeys(copies) {
				from := copies[dst]
				data := b
				if from != src {
					if data, err = f.s.ReadFile(ctx, from); err != nil {
						continue
					}
				}
				if _, err := f.s.Lstat(ctx, dst); err == nil {
					continue
				}
				if err := f.s.WriteFile(ctx, dst, data, 0o644); err != nil {
					return err
				}
				f.changes = append(f.changes, report.Change{Fix: "grub", File: dst, After: "copy of " + from,
					Note: "UEFI fallback loader: the converted VM starts with empty NVRAM"})
			}
			return nil
		}
	}
	f.changes = append(f.changes, report.Change{Fix: "grub", File: esp + "/BOOT/BOOTX64.EFI",
		Note: "missing, and no shimx64.efi or grubx64.efi on the ESP to copy: the VM needs a UEFI boot entry"})
	return nil
}

func (f *fixer) initramfs(ctx context.Context, regenerate bool) error {
	var cmd []string
	switch f.g.InitramfsTool {
	case "initramfs-tools":
		const p = "/etc/initramfs-tools/modules"
		if _, err := f.s.Lstat(ctx, p); errors.Is(err, fs.ErrNotExist) {
			content := "# added by hyper2kvm: drivers for KVM\n" + addModules("")
			if err := f.s.WriteFile(ctx, p, []byte(content), 0o644); err != nil {
				return err
			}
			f.changes = append(f.changes, report.Change{Fix: "initramfs", File: p, After: content})
		} else if err := f.edit(ctx, "initramfs", p, addModules); err != nil {
			return err
		}
		cmd = []string{"update-initramfs", "-u", "-k", "all"}
	case "dracut":
		p := "/etc/dracut.conf.d/90-hyper2kvm-virtio.conf"
		content := "# added by hyper2kvm: drivers for KVM\nadd_drivers+=\" " + strings.Join(VirtioModules, " ") + " \"\n"
		old, err := f.s.ReadFile(ctx, p)
		if err != nil || string(old) != content {
			if err := f.s.WriteFile(ctx, p, []byte(content), 0o644); err != nil {
				return err
			}
			f.changes = append(f.changes, report.Change{Fix: "initramfs", File: p, Before: string(old), After: content})
		}
		cmd = []string{"dracut", "--force", "--regenerate-all"}
		if f.dracutHostOnly(ctx) {
			cmd = append(cmd, "--no-hostonly")
			f.changes = append(f.changes, report.Change{Fix: "initramfs", File: "/boot",
				Note: "the guest builds host-only images: regenerated with --no-hostonly, since host-only detection here would describe the conversion host, not the VM (the guest's next kernel update on KVM builds host-only images again)"})
		}
	default:
		f.changes = append(f.changes, report.Change{Fix: "initramfs", Note: "no initramfs-tools or dracut in the guest; initramfs left as is"})
		return nil
	}
	if !regenerate {
		return nil
	}
	before := f.sizes(ctx)
	out, err := f.s.Run(ctx, cmd...)
	if err != nil {
		return err
	}
	after := f.sizes(ctx)
	for _, p := range sortedKeys(after) {
		if before[p] != after[p] {
			f.changes = append(f.changes, report.Change{Fix: "initramfs", File: p,
				Before: sizeNote(before[p]), After: sizeNote(after[p]),
				Note: "regenerated with the guest's " + strings.Join(cmd, " ") + lastLine(out)})
		}
	}
	return nil
}

// sizes maps each initramfs image to its size and mtime, to report which
// ones the guest's tool rewrote.
func (f *fixer) sizes(ctx context.Context) map[string]string {
	m := map[string]string{}
	ents, _ := f.s.ReadDir(ctx, "/boot")
	for _, e := range ents {
		if strings.HasPrefix(e.Name, "initrd.img-") || strings.HasPrefix(e.Name, "initramfs-") {
			m["/boot/"+e.Name] = strconv.FormatInt(e.Size, 10)
		}
	}
	return m
}

func sizeNote(s string) string {
	if s == "" {
		return ""
	}
	return s + " bytes"
}

func lastLine(b []byte) string {
	l := strings.TrimSpace(string(b))
	if i := strings.LastIndex(l, "\n"); i >= 0 {
		l = l[i+1:]
	}
	if l == "" {
		return ""
	}
	return ": " + l
}

func sortedKeys(m map[string]string) []string {
	k := make([]string, 0, len(m))
	for p := range m {
		k = append(k, p)
	}
	sort.Strings(k)
	return k
}

// addModules appends the virtio modules missing from an initramfs-tools
// modules file.
func addModules(s string) string {
	have := map[string]bool{}
	for _, l := range strings.Split(s, "\n") {
		if f := strings.Fields(l); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
			have[strings.ReplaceAll(f[0], "-", "_")] = true
		}
	}
	var add []string
	for _, m := range VirtioModules {
		if !have[m] {
			add = append(add, m)
		}
	}
	if len(add) == 0 {
		return s
	}
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s + strings.Join(add, "\n") + "\n"
}

func (f *fixer) vmwareTools(ctx context.Context) error {
	for _, p := range inspect.EnabledVMwareUnits(ctx, f.s) {
		if err := f.remove(ctx, "vmware_tools", p, "VMware tools unit disabled"); err != nil {
			return err
		}
	}
	var pkgs []string
	for _, pkg := range inspect.VMwarePackages {
		if _, err := f.s.Lstat(ctx, "/var/lib/dpkg/info/"+pkg+".list"); err == nil {
			pkgs = append(pkgs, pkg)
		}
	}
	if len(pkgs) > 0 {
		out, err := f.s.Run(ctx, append([]string{"dpkg", "--purge"}, pkgs...)...)
		c := report.Change{Fix: "vmware_tools", File: "/var/lib/dpkg/status", Before: "installed: " + strings.Join(pkgs, " ")}
		if err != nil {
			c.Note = "dpkg --purge failed, units masked instead: " + err.Error()
		} else {
			c.After = "purged" + lastLine(out)
		}
		f.changes = append(f.changes, c)
	} else if _, err := f.s.Lstat(ctx, "/usr/bin/rpm"); err == nil {
		if out, err := f.s.Run(ctx, "rpm", "-q", "open-vm-tools"); err == nil {
			if _, err := f.s.Run(ctx, "rpm", "-e", "open-vm-tools"); err == nil {
				f.changes = append(f.changes, report.Change{Fix: "vmware_tools", File: "/var/lib/rpm", Before: strings.TrimSpace(string(out)), After: "removed"})
			}
		}
	}
	// Mask what is left, so nothing pulls the units in again.
	for _, u := range inspect.VMwareUnits {
		for _, dir := range []string{"/lib/systemd/system", "/usr/lib/systemd/system"} {
			if _, err := f.s.Lstat(ctx, path.Join(dir, u)); err != nil {
				continue
			}
			mask := "/etc/systemd/system/" + u
			if _, err := f.s.Lstat(ctx, mask); err == nil {
				break
			}
			if err := f.s.Symlink(ctx, "/dev/null", mask); err != nil {
				return err
			}
			f.changes = append(f.changes, report.Change{Fix: "vmware_tools", File: mask, After: "symlink -> /dev/null", Note: "unit masked"})
			break
		}
	}
	return nil
}

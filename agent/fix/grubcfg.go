package fix

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/guest"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// grubMkconfigTools are the guest programs that write grub.cfg, in order of
// preference. update-grub (Debian, Ubuntu) is a wrapper that runs
// grub-mkconfig -o /boot/grub/grub.cfg; grub-mkconfig itself is called so
// that the output goes to a file FIX checks before it replaces anything.
var grubMkconfigTools = []string{"grub2-mkconfig", "grub-mkconfig"}

// sbinDirs are where a guest keeps its administration programs.
var sbinDirs = []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"}

// noDevicesNote says why the native backend leaves grub.cfg to the textual
// edit: grub-mkconfig starts with grub-probe --target=device /, which maps
// the root's mount to its block device, and the sandbox has none (its
// mountinfo names the host's loop device, which does not exist inside):
// it fails "failed to get canonical path of /dev/loopN". Giving the sandbox
// the device would give a guest program the raw disk.
const noDevicesNote = "not regenerated with the guest's %s: it runs grub-probe on the root's block device, and the native backend's sandbox has none (grub-probe: \"failed to get canonical path of /dev/loopN\"); root= and resume= were edited in the file instead (fix.backend guestfs regenerates it in the appliance)"

// guestProgram returns the guest's path of the first of names found in its
// sbin and bin directories, or "".
func (f *fixer) guestProgram(ctx context.Context, names ...string) string {
	for _, n := range names {
		for _, d := range sbinDirs {
			p := path.Join(d, n)
			// A symlink (update-grub -> grub-mkconfig on some distributions,
			// /sbin -> usr/sbin) is fine: the guest resolves it itself.
			if e, err := f.s.Lstat(ctx, p); err == nil && (e.Mode.IsRegular() || e.Mode&fs.ModeSymlink != 0) {
				return p
			}
		}
	}
	return ""
}

// grubCfgTargets are the guest's grub.cfg files grub-mkconfig would write:
// /boot/grub/grub.cfg and /boot/grub2/grub.cfg when present, and a
// grub.cfg in the ESP's EFI/<vendor>/ that is a whole menu (RHEL 8 and
// older keep it there); a stub that only loads the one in /boot
// (configfile, as Debian and RHEL 9 ship) is left as it is: it names the
// /boot filesystem by UUID, which conversion does not change.
func (f *fixer) grubCfgTargets(ctx context.Context) []string {
	var out []string
	for _, p := range []string{"/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"} {
		if e, err := f.s.Lstat(ctx, p); err == nil && e.Mode.IsRegular() {
			out = append(out, p)
		}
	}
	return append(out, f.espGrubCfgs(ctx, false)...)
}

// espGrubCfgs lists EFI/<vendor>/grub.cfg on a mounted ESP; stubs only
// with all.
func (f *fixer) espGrubCfgs(ctx context.Context, all bool) []string {
	const esp = "/boot/efi/EFI"
	vendors, err := f.s.ReadDir(ctx, esp)
	if err != nil {
		return nil
	}
	sort.Slice(vendors, func(i, j int) bool { return vendors[i].Name < vendors[j].Name })
	var out []string
	for _, v := range vendors {
		if !v.Mode.IsDir() || strings.EqualFold(v.Name, "BOOT") {
			continue
		}
		p := esp + "/" + v.Name + "/grub.cfg"
		if e, err := f.s.Lstat(ctx, p); err != nil || !e.Mode.IsRegular() {
			continue
		}
		if b, err := f.s.ReadFile(ctx, p); err == nil && (all || !grubStub(string(b))) {
			out = append(out, p)
		}
	}
	return out
}

// grubStub says whether a grub.cfg only hands over to another one.
func grubStub(cfg string) bool {
	return strings.Contains(cfg, "configfile") && !grubMenu(cfg)
}

// grubMenu says whether a grub.cfg can boot a kernel: a linux command in a
// menu entry, or blscfg (the entries are in /boot/loader/entries).
func grubMenu(cfg string) bool {
	for _, l := range strings.Split(cfg, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "linux", "linuxefi", "linux16", "blscfg":
			return true
		}
	}
	return false
}

// regenerateGrubCfg rewrites each grub.cfg with the guest's own
// grub-mkconfig, after the textual edits (GRUB_CMDLINE_LINUX in
// /etc/default/grub already names the root by UUID), so the menu is the
// one the guest's own tools would write on KVM. Where the tool cannot run
// (the native sandbox has no block devices) or fails, the textually
// edited file stays and the report says why.
func (f *fixer) regenerateGrubCfg(ctx context.Context) error {
	tool := f.guestProgram(ctx, grubMkconfigTools...)
	if tool == "" {
		return nil
	}
	name := path.Base(tool)
	for _, cfg := range f.grubCfgTargets(ctx) {
		if f.s.Backend() != guest.Guestfs {
			f.changes = append(f.changes, report.Change{Fix: "grub", File: cfg, Note: "note: " + fmt.Sprintf(noDevicesNote, name)})
			continue
		}
		if err := f.mkconfig(ctx, tool, cfg); err != nil {
			if ctx.Err() != nil {
				return err
			}
			f.changes = append(f.changes, report.Change{Fix: "grub", File: cfg,
				Note: "warning: not regenerated with the guest's " + name + ": " + err.Error() + "; root= and resume= were edited in the file instead"})
		}
	}
	return nil
}

// mkconfig runs the guest's tool into a new file next to cfg, checks what
// it wrote and only then replaces cfg: a failed or empty run never leaves
// the guest without a boot menu.
func (f *fixer) mkconfig(ctx context.Context, tool, cfg string) error {
	tmp := cfg + ".hyper2kvm-new"
	defer func() {
		if _, err := f.s.Lstat(ctx, tmp); err == nil {
			f.s.Remove(ctx, tmp)
		}
	}()
	start := time.Now()
	out, err := f.s.Run(ctx, tool, "-o", tmp)
	took := time.Since(start).Round(time.Second)
	if err != nil {
		return errors.New(oneLine(err.Error()))
	}
	b, err := f.s.ReadFile(ctx, tmp)
	if err != nil {
		return errors.New("cannot read what it wrote: " + err.Error())
	}
	// The appliance's device names are not the VM's: name the root (and
	// resume) by UUID as the textual edit does.
	after := f.fixRoot(string(b))
	if !grubMenu(after) {
		return errors.New("it wrote no boot entry (no linux or blscfg command)")
	}
	before, _ := f.s.ReadFile(ctx, cfg)
	if after == string(before) {
		return nil
	}
	if err := f.s.WriteFile(ctx, cfg, []byte(after), 0o644); err != nil {
		return err
	}
	f.changes = append(f.changes, report.Change{Fix: "grub", File: cfg, Before: string(before), After: after,
		Note: "regenerated with the guest's " + path.Base(tool) + " in the appliance (" + took.String() + ")" + lastLine(out)})
	return nil
}

// oneLine keeps a tool's error short enough for a report note.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

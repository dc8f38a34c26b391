// Package preflight checks, before a job writes anything, that it can
// succeed: the source readable, whole and no longer being written, room
// for the outputs on their filesystem; and, after INSPECT, what in the
// guest would make the fixes fail (encrypted volumes, filesystems left
// dirty). The worker runs it inside the job and `hyperctl preflight` runs
// the same checks without queueing. Blockers carry the reason and the fix
// (docs/WORKFLOW.md). It imports only leaf packages.
package preflight

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// Statuses of a check.
const (
	OK      = "ok"
	Warning = "warning"
	Blocker = "blocker"
	Skipped = "skipped"
)

// Names of the checks.
const (
	SourceReadable = "source-readable"
	SourceComplete = "source-complete"
	SourceSettled  = "source-settled"
	OutputSpace    = "output-space"
	GuestEncrypted = "guest-encrypted"
	GuestDirty     = "guest-dirty"
	GuestSpace     = "guest-space"
)

// What the initramfs rebuild needs free in the guest. A new initramfs is
// written beside the old one (30 to 100 MiB for a distribution's; dracut
// stages in /var/tmp), but the superblock's count is only as of the last
// unmount and small appliances have small ones: a blocker only when the
// filesystem is practically full, a warning below a distribution's size.
const (
	BootBlocker = 4 << 20
	BootWarning = 64 << 20
	RootBlocker = 4 << 20
	RootWarning = 128 << 20
)

// CompressedShare is the share of the allocated size a compressed qcow2
// is expected to take: a guest's used blocks compress to about half with
// zstd or zlib; the estimate leans to the safe side.
const CompressedShare = 0.6

// Slack is added to every estimate: qcow2 metadata, NAME.xml, the
// report, the FIX overlay's few changed clusters. It grows with the
// source (an eighth of it) up to MaxSlack, from MinSlack: a fixed 64 MiB
// refused a 4 KiB image on a filesystem with 8 MiB free.
const (
	MinSlack = 1 << 20
	MaxSlack = 64 << 20
)

// slack is the room added to an estimate of need bytes.
func slack(need int64) int64 {
	return min(MaxSlack, max(MinSlack, need/8))
}

// SettleTime is how recently a source may have changed before it counts
// as still being written (agent.yaml's stable_time for drops).
const SettleTime = 5 * time.Second

// Options are what the checks need beyond the manifest.
type Options struct {
	// OutputDir is where the outputs go when the manifest's
	// convert.output_dir says nothing (the agent's output_dir; the job's
	// own directory below it need not exist yet).
	OutputDir string
	// Settled adds the source-settled check: for hyperctl preflight,
	// run before the copy may be over. A job's source was claimed stable
	// (a drop) or submitted, and LOAD holds it against writers.
	Settled bool
	// Now is the clock (nil: time.Now); Avail the free bytes of a
	// filesystem (nil: statfs).
	Now   func() time.Time
	Avail func(path string) (uint64, error)
}

// Result is every check, in order.
type Result []report.Check

// Blocked says whether a check forbids running the job.
func (r Result) Blocked() bool {
	for _, c := range r {
		if c.Status == Blocker {
			return true
		}
	}
	return false
}

// Err is the blockers as one error ("pre-flight: NAME: message; fix: ..."),
// nil when there is none.
func (r Result) Err() error {
	var lines []string
	for _, c := range r {
		if c.Status == Blocker {
			l := c.Name + ": " + c.Message
			if c.Fix != "" {
				l += "; fix: " + c.Fix
			}
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return nil
	}
	return errors.New("pre-flight check failed: " + strings.Join(lines, "; "))
}

// Warnings are the warnings as report lines.
func (r Result) Warnings() []string {
	var out []string
	for _, c := range r {
		if c.Status == Warning {
			l := "pre-flight " + c.Name + ": " + c.Message
			if c.Fix != "" {
				l += " (" + c.Fix + ")"
			}
			out = append(out, l)
		}
	}
	return out
}

// Source runs the checks that need no look inside the guest. It opens
// the source files with the caller's own access: run by hyperctl, that is
// the submitter's; the worker (root) leaves readability to LOAD, which
// opens every file as the submitter.
func Source(ctx context.Context, p *manifest.Pipeline, o Options) Result {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Avail == nil {
		o.Avail = statfsAvail
	}
	src := p.Load.SourcePath
	var out Result
	if p.Load.IsRemote() {
		// The VM lives behind its source's API: LOAD finds it, exports it
		// and checks the space for what it downloads.
		msg := fmt.Sprintf("the VM is read from source %q in LOAD", p.Load.Source)
		for _, n := range []string{SourceReadable, SourceComplete, OutputSpace} {
			out = append(out, report.Check{Name: n, Status: Skipped, Message: msg})
		}
		return out
	}
	files, err := sourceFiles(p.Load.SourceType, src)
	if err != nil {
		out = append(out, report.Check{Name: SourceReadable, Status: Blocker, Message: err.Error(), Fix: readFix(err, src)})
		for _, n := range []string{SourceComplete, OutputSpace} {
			out = append(out, report.Check{Name: n, Status: Skipped, Message: "the source cannot be read"})
		}
		return out
	}
	out = append(out, report.Check{Name: SourceReadable, Status: OK, Message: fmt.Sprintf("%s readable (%d file(s))", src, len(files))})

	complete := report.Check{Name: SourceComplete, Status: OK, Message: "every file is whole by its format's own tables"}
	for _, f := range files {
		if ctx.Err() != nil {
			break
		}
		if _, err := imgfmt.Complete(f.path, filepath.Ext(f.path)); err != nil {
			var inc *imgfmt.IncompleteError
			if errors.As(err, &inc) {
				complete = report.Check{Name: SourceComplete, Status: Blocker, Message: fmt.Sprintf("%s: %v", f.path, err),
					Fix: "wait until the copy of the image has finished, or copy it again"}
			} else {
				complete = report.Check{Name: SourceComplete, Status: Blocker, Message: err.Error(), Fix: readFix(err, f.path)}
			}
			break
		}
	}
	out = append(out, complete)

	if o.Settled {
		settled := report.Check{Name: SourceSettled, Status: OK, Message: "no file changed in the last " + SettleTime.String()}
		for _, f := range files {
			if age := o.Now().Sub(f.mtime); age < SettleTime {
				settled = report.Check{Name: SourceSettled, Status: Warning,
					Message: fmt.Sprintf("%s changed %s ago: it may still be being written", f.path, age.Round(time.Millisecond)),
					Fix:     "submit once the copy has finished (a dropped image is taken only once stable)"}
				break
			}
		}
		out = append(out, settled)
	}
	out = append(out, space(p, files, o))
	return out
}

// file is one file the source is made of.
type file struct {
	path      string
	allocated int64 // bytes on disk
	mtime     time.Time
}

// sourceFiles lists the files a source is made of: a VMDK descriptor's
// extents, an OVF's disks, else the file itself, each stat'ed (and the
// source opened, so that an unreadable one is found here).
func sourceFiles(typ, src string) ([]file, error) {
	f, err := os.Open(src)
	if err != nil {
		return nil, fmt.Errorf("cannot read the source: %w", err)
	}
	f.Close()
	paths := []string{src}
	dir := filepath.Dir(src)
	switch typ {
	case "vmdk":
		if d, err := imgfmt.ReadVMDKDescriptorFile(src); err == nil {
			for _, e := range d.Extents {
				// An extent outside the source's directory is LOAD's to
				// judge (pipeline.load.allow_references), with its own
				// message; pre-flight looks only beside the source.
				if e.File != "" && filepath.IsLocal(e.File) {
					paths = append(paths, filepath.Join(dir, e.File))
				}
			}
		}
	case "ovf":
		if r, err := os.Open(src); err == nil {
			d, err := imgfmt.ParseOVF(r)
			r.Close()
			if err != nil {
				return nil, fmt.Errorf("cannot read the OVF descriptor %s: %w", src, err)
			}
			for _, disk := range d.Disks {
				if filepath.IsLocal(disk.File) {
					paths = append(paths, filepath.Join(dir, disk.File))
				}
			}
		}
	}
	var out []file
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("cannot read %s, a file of the source: %w", p, err)
		}
		if st.IsDir() {
			return nil, fmt.Errorf("cannot read the source: %s is a directory", p)
		}
		if p != src {
			g, err := os.Open(p)
			if err != nil {
				return nil, fmt.Errorf("cannot read %s, a file of the source: %w", p, err)
			}
			g.Close()
		}
		alloc := st.Size()
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			alloc = min(sys.Blocks*512, st.Size())
		}
		out = append(out, file{path: p, allocated: alloc, mtime: st.ModTime()})
	}
	return out, nil
}

func readFix(err error, p string) string {
	switch {
	case errors.Is(err, os.ErrPermission):
		return fmt.Sprintf("make %s readable by the submitting user (e.g. group hyper2kvm with g+r)", p)
	case errors.Is(err, os.ErrNotExist):
		return "check pipeline.load.source_path"
	}
	return ""
}

// space compares the estimated output size with the free space of the
// output filesystem.
func space(p *manifest.Pipeline, files []file, o Options) report.Check {
	var alloc int64
	for _, f := range files {
		alloc += f.allocated
	}
	need := alloc
	how := "the source's allocated size"
	if c := p.Convert; c != nil && c.Compress {
		need = int64(float64(alloc) * CompressedShare)
		how = fmt.Sprintf("%.0f%% of the source's allocated size (compressed)", CompressedShare*100)
	}
	extra := slack(need)
	need += extra
	dir := o.OutputDir
	if p.Convert != nil && p.Convert.OutputDir != "" {
		dir = p.Convert.OutputDir
	}
	if dir == "" {
		return report.Check{Name: OutputSpace, Status: Skipped, Message: "no output directory known"}
	}
	at := existingAncestor(dir)
	avail, err := o.Avail(at)
	if err != nil {
		return report.Check{Name: OutputSpace, Status: Warning, Message: fmt.Sprintf("cannot tell the free space of %s: %v", at, err)}
	}
	msg := fmt.Sprintf("%s free on %s, about %s needed (%s, %s, and %s slack)", human(int64(avail)), at, human(need), how, human(alloc), human(extra))
	switch {
	case uint64(need) > avail:
		return report.Check{Name: OutputSpace, Status: Blocker, Message: msg,
			Fix: fmt.Sprintf("free %s on that filesystem, set pipeline.convert.output_dir to one with room, or set pipeline.convert.compress: true", human(need-int64(avail)))}
	case uint64(need+need/10) > avail:
		return report.Check{Name: OutputSpace, Status: Warning, Message: msg + ": less than 10% to spare", Fix: "free some space before other jobs fill it"}
	}
	return report.Check{Name: OutputSpace, Status: OK, Message: msg}
}

// existingAncestor is dir or its nearest parent that exists (a job's
// output directory is made only when it runs).
func existingAncestor(dir string) string {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil || d == "/" || d == "." {
			return d
		}
	}
}

func statfsAvail(p string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(p, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// Guest runs the checks on INSPECT's findings: an encrypted volume the
// guest mounts (or holding its root) cannot be opened, so the fixes it
// needs cannot be made; a filesystem left dirty (a guest not shut down,
// a hibernated or Fast Startup Windows) is fixed from a state the guest
// will replay over. Nothing to check when INSPECT found no guest.
func Guest(g *report.Guest, p *manifest.Pipeline) Result {
	if g == nil {
		return nil
	}
	fixing := p.Fix == nil || p.Fix.AnyEnabled()
	var out Result
	var enc, dirty []string
	for _, part := range g.Partitions {
		name := part.Device
		if name == "" {
			name = fmt.Sprintf("partition %d of disk %d", part.Number, part.Disk+1)
		}
		switch strings.ToLower(part.FSType) {
		case "crypto_luks", "bitlocker":
			enc = append(enc, fmt.Sprintf("%s (%s)", name, part.FSType))
		}
		if part.Dirty {
			mp := part.MountPoint
			if mp == "" {
				mp = part.FSType
			}
			dirty = append(dirty, fmt.Sprintf("%s (%s)", name, mp))
		}
	}
	switch {
	case len(enc) > 0 && g.Root == "" && fixing:
		out = append(out, report.Check{Name: GuestEncrypted, Status: Blocker,
			Message: "the guest's root is on an encrypted volume without a key: " + strings.Join(enc, ", ") + "; its boot files cannot be fixed",
			Fix:     "decrypt the volume in the source VM before converting, or set pipeline.fix.enabled: false to copy the disks unchanged"})
	case len(enc) > 0:
		out = append(out, report.Check{Name: GuestEncrypted, Status: Warning,
			Message: "encrypted volumes without a key are copied unchanged, not inspected or fixed: " + strings.Join(enc, ", "),
			Fix:     "check after the first boot that they unlock (crypttab names are rewritten only where fstab fixes reach)"})
	default:
		out = append(out, report.Check{Name: GuestEncrypted, Status: OK, Message: "no encrypted volume"})
	}
	out = append(out, guestSpace(g, p))
	if len(dirty) > 0 {
		out = append(out, report.Check{Name: GuestDirty, Status: Warning,
			Message: "filesystems whose journal needs recovery (the VM was not shut down cleanly, or was hibernated): " + strings.Join(dirty, ", "),
			Fix:     "shut the source VM down cleanly (for Windows: without Fast Startup) and export it again"})
	} else {
		out = append(out, report.Check{Name: GuestDirty, Status: OK, Message: "every filesystem clean"})
	}
	return out
}

// guestSpace checks the free space of the guest's / and /boot (as their
// superblocks recorded it) when FIX will rebuild the initramfs.
func guestSpace(g *report.Guest, p *manifest.Pipeline) report.Check {
	rebuild := p.Fix == nil || p.Fix.AnyEnabled()
	if f := p.Fix; rebuild && f != nil && f.Initramfs != nil {
		rebuild = (f.Initramfs.Enabled == nil || *f.Initramfs.Enabled) && (f.Initramfs.Regenerate == nil || *f.Initramfs.Regenerate)
	}
	if !rebuild {
		return report.Check{Name: GuestSpace, Status: Skipped, Message: "the initramfs is not rebuilt"}
	}
	var msgs []string
	status := OK
	known := false
	for _, mp := range []struct {
		at            string
		blocker, warn int64
	}{{"/boot", BootBlocker, BootWarning}, {"/", RootBlocker, RootWarning}} {
		for _, part := range g.Partitions {
			if part.MountPoint != mp.at || part.FreeBytes == nil {
				continue
			}
			known = true
			free := *part.FreeBytes
			msgs = append(msgs, fmt.Sprintf("%s has %s free", mp.at, human(free)))
			switch {
			case free < mp.blocker:
				status = Blocker
			case free < mp.warn && status != Blocker:
				status = Warning
			}
		}
	}
	if !known {
		return report.Check{Name: GuestSpace, Status: Skipped, Message: "the free space of / and /boot is not known (not ext2/3/4 or xfs, or not found)"}
	}
	c := report.Check{Name: GuestSpace, Status: status, Message: strings.Join(msgs, ", ") + " (as recorded at the guest's last unmount)"}
	switch status {
	case Blocker:
		c.Message += fmt.Sprintf("; rebuilding the initramfs needs about %s in /boot and %s in /", human(BootBlocker), human(RootBlocker))
		c.Fix = "free space in the guest (old kernels in /boot, package caches) before exporting it, or set pipeline.fix.initramfs.regenerate: false"
	case Warning:
		c.Fix = "the initramfs rebuild may run out of space; free some in the guest first"
	}
	return c
}

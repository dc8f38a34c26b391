package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/boot"
	"github.com/hyper2kvm/hyper2kvm/agent/fix"
	"github.com/hyper2kvm/hyper2kvm/agent/inspect"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/qemuimg"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// inspect is INSPECT: the guest's partitions, OS, boot loader and more,
// through the guest-access backend. The image facts from qemu-img info
// (read in LOAD) are part of its result.
//
// A failed inspection stops the job only when FIX needs it; otherwise the
// stage is reported failed, a warning says so, and the conversion goes on.
func (r *runner) inspect(set func(any)) error {
	images := make([]any, 0, len(r.disks))
	for _, d := range r.disks {
		images = append(images, d.info)
	}
	res := map[string]any{"images": images}
	set(res)
	if !manifest.Bool(r.p.Inspect.Enabled) {
		return skip("disabled by pipeline.inspect.enabled")
	}
	r.backend = r.p.Fix.Backend
	if r.backend == "" {
		r.backend = r.o.Backend
	}
	if r.backend == "" {
		r.backend = "auto"
	}
	res["backend"] = r.backend
	asked := r.backend
	// Every disk: a second disk's fstab entries (/dev/sdb1) need its
	// filesystems' ids, and the root may live on any disk.
	d := r.disks[0]
	r.progress("inspect", 10, 0, 0, d.display)
	imgs := make([]inspect.Image, 0, len(r.disks))
	for _, d := range r.disks {
		imgs = append(imgs, inspect.Image{Path: d.path, Format: d.format, Name: d.display})
	}
	g, err := inspect.GuestDisks(r.ctx, imgs, accessBackend(r.backend), manifest.Bool(r.p.Inspect.DetectOS))
	if err != nil {
		err = fmt.Errorf("cannot inspect the guest on %s: %w", d.display, err)
		if (manifest.Bool(r.p.Fix.Enabled) && fix.AnyEnabled(r.p.Fix)) || r.ctx.Err() != nil {
			return err
		}
		r.warn("INSPECT failed (%v); converting anyway because FIX is disabled", err)
		return softFail{err}
	}
	r.rep.Guest = g
	if g.Windows != nil {
		res["windows"] = g.Windows
		// A hibernated, encrypted or half-updated Windows is not a
		// closed filesystem: converting it loses data or does not boot.
		if err := inspect.Blocked(g.Windows); err != nil {
			return err
		}
	}
	if noOS(g) && manifest.Bool(r.p.Inspect.DetectOS) && !manifest.Bool(r.p.Fix.Enabled) {
		res["note"] = "no operating system found: converted as a data disk (pipeline.fix.enabled is false)"
	}
	// auto: FIX uses what INSPECT chose for this guest, and says why.
	r.backend = g.Backend
	res["backend"] = g.Backend
	if g.BackendReason != "" {
		res["backend_reason"] = g.BackendReason
	}
	if g.OS != nil && g.OS.Type == "windows" {
		return r.windowsPreflight(asked, res)
	}
	if asked == BackendV2V {
		r.backend = BackendV2V
		res["backend"] = BackendV2V
		res["backend_reason"] = "virt-v2v: asked by fix.backend (INSPECT read the guest with " + g.Backend + ")"
	}
	return nil
}

// fix is FIX: on a qcow2 overlay of the disk holding the guest's root (the
// source is never opened for writing), adapt a Linux guest to KVM.
func (r *runner) fix(set func(any)) error {
	if !manifest.Bool(r.p.Fix.Enabled) {
		return skip("disabled by pipeline.fix.enabled")
	}
	// No overlay and no mount when no fix could change anything: the
	// output is then the source's bytes, and VALIDATE compares them.
	if !fix.AnyEnabled(r.p.Fix) {
		return skip("nothing to do: every fix is disabled")
	}
	g := r.rep.Guest
	if g == nil {
		return errors.New("FIX needs the guest inspection: enable pipeline.inspect or disable pipeline.fix")
	}
	if r.backend == BackendV2V && !noOS(g) {
		return r.fixV2V(set, g)
	}
	if g.OS != nil && g.OS.Type == "windows" {
		r.warn("the guest is Windows, which only the virt-v2v FIX backend adapts: the disk was converted unchanged and needs virtio drivers (virtio-win) before it boots on virtio; the domain XML uses SATA and e1000e instead")
		return skip("unsupported: Windows guest (FIX handles Linux guests only)")
	}
	if g.OS == nil && !manifest.Bool(r.p.Inspect.DetectOS) {
		r.warn("FIX was not applied: pipeline.inspect.detect_os is false, so the guest's system is unknown")
		return skip("no operating system detection (pipeline.inspect.detect_os)")
	}
	if noOS(g) {
		// A data disk converts with FIX switched off; with FIX on, a disk
		// with no system is more likely the wrong file or an unreadable
		// guest than a success.
		return errors.New("inspection found no operating system; set pipeline.fix.enabled=false to convert a data disk as it is")
	}
	if g.OS.Type != "linux" {
		r.warn("no Linux guest found on %s: FIX was not applied", r.disks[0].display)
		return skip("no Linux guest found")
	}
	d, overlay, err := r.rootOverlay(g, "root")
	if err != nil {
		return err
	}
	// A root on an md mirror or an LV across disks: every disk it spans
	// gets its overlay, written through the array or VG.
	others, spanned, err := r.spanOverlays(g)
	if err != nil {
		return err
	}
	r.progress("fix", 10, 0, 0, "overlay "+filepath.Base(overlay))
	changes, err := fix.ApplyDisks(r.ctx, inspect.Image{Path: overlay, Format: "qcow2"}, others, r.backend, r.p.Fix, g)
	r.rep.Changes = append(r.rep.Changes, changes...)
	res := map[string]any{"backend": r.backend, "overlay": overlay, "changes": len(changes)}
	if len(spanned) > 0 {
		ovs := []string{overlay}
		for _, od := range r.disks {
			if ov, ok := spanned[od]; ok {
				ovs = append(ovs, ov)
			}
		}
		res["overlays"] = ovs
	}
	set(res)
	if err != nil {
		return fmt.Errorf("cannot apply fixes: %w", err)
	}
	if len(changes) == 0 {
		// Nothing to change: the output is converted from the source
		// itself, so that it holds the source's very bytes.
		res["note"] = "no change needed: the disk is converted from the source"
		return nil
	}
	d.src, d.srcFormat = overlay, "qcow2"
	for od, ov := range spanned {
		od.src, od.srcFormat = ov, "qcow2"
	}
	r.fixed = true
	return nil
}

// noOS says whether the inspection g found no operating system at all:
// no file systems a system lives on, or none holding a root.
func noOS(g *report.Guest) bool {
	return g.OS == nil || g.OS.Type == "" || g.OS.Type == "unknown"
}

func (r *runner) makeWorkDir() error {
	base := r.o.WorkDir
	if base == "" {
		base = r.outDir
		// Not in an output directory someone else owns: they could rename
		// the work directory away and put theirs under its name, and
		// FIX's overlay, the guest's bytes, would then be created there.
		if st, err := os.Stat(base); err == nil && !ownedByCaller(st) {
			base = ""
		}
	}
	if base == "" {
		// LOAD, before the outputs are settled (a VMDK descriptor to
		// rewrite): the caller's temporary directory, private to it.
		base = os.TempDir()
	}
	if err := os.MkdirAll(base, 0o700); err != nil {
		return fmt.Errorf("cannot create work directory: %w", err)
	}
	w, err := os.MkdirTemp(base, ".work-")
	if err != nil {
		return fmt.Errorf("cannot create work directory: %w", err)
	}
	r.workDir = w
	return nil
}

// ownedByCaller says whether the directory st describes is this process's own.
func ownedByCaller(st os.FileInfo) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	return ok && int(sys.Uid) == os.Geteuid()
}

type convertResult struct {
	Disk        string   `json:"disk"`
	Source      string   `json:"source"`
	Output      string   `json:"output"`
	Format      string   `json:"format"`
	Compression string   `json:"compression,omitempty"`
	FromOverlay bool     `json:"from_overlay,omitempty"`
	Args        []string `json:"qemu_img_args"`
	Seconds     float64  `json:"duration_seconds"`
}

// convert is CONVERT: qemu-img convert of every disk into its output,
// through NAME.part, never over an existing file; up to
// Options.DiskParallelism disks at once (see convertDisks). The artifact
// sha256 sums are computed in the background while VALIDATE runs.
func (r *runner) convert(set func(any)) error {
	// What INSPECT and FIX read must be what LOAD checked: the files
	// unchanged, their headers the same bytes.
	if err := r.files.unchanged(); err != nil {
		return err
	}
	if err := r.files.headersSame(); err != nil {
		return err
	}
	results, err := r.convertDisks()
	set(results)
	if err != nil {
		return err
	}
	if err := r.writeDomain(); err != nil {
		return err
	}
	r.converted = true
	return nil
}

// convertDisk converts one disk; report gets its progress (0-100).
func (r *runner) convertDisk(ctx context.Context, d *disk, report func(pct int)) (*convertResult, []string, error) {
	c := r.p.Convert
	start := time.Now()
	res, err := qemuimg.Convert(ctx, qemuimg.ConvertOptions{
		Source: d.src, SourceFormat: d.srcFormat,
		Target: d.target, TargetFormat: d.outFormat,
		Compress: c.Compress, Compression: c.Compression,
		Preallocation: c.Preallocation,
		// The partial output is root's, 0600, from its creation while
		// qemu-img writes; its owner and mode only once the sources
		// proved unchanged.
		Finish: func(f *os.File) error {
			if d.downloaded != nil {
				if err := d.downloaded(); err != nil {
					return err
				}
			}
			if err := r.files.unchanged(); err != nil {
				return err
			}
			return r.owner.setFile(f)
		},
		Progress: report,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("disk %s: %w", d.id, r.files.explain(err))
	}
	return &convertResult{Disk: d.id, Source: d.display, Output: d.output, Format: d.outFormat,
		Compression: res.Compression, FromOverlay: d.src != d.path, Args: res.Args, Seconds: time.Since(start).Seconds()}, res.Warnings, nil
}

// hashOutputs starts hashing every output in the background, beside
// VALIDATE's check and compare (hashing is CPU bound, they are I/O bound):
// about 0.7 s per GiB written, the one part of the pipeline that qemu-img
// convert alone does not do. The run waits for it at the end.
func (r *runner) hashOutputs() {
	r.hashes = make(chan []report.Artifact, 1)
	go func() { r.hashes <- r.artifacts(true) }()
}

// artifacts describes every output written, hashed when hash is set.
func (r *runner) artifacts(hash bool) []report.Artifact {
	var arts []report.Artifact
	for _, d := range r.disks {
		if d.converted {
			arts = append(arts, r.artifactOf(d.target, d.output, "disk", d.outFormat, hash))
		}
	}
	if r.converted {
		name := manifest.DomainXMLFile(r.vm.Name)
		arts = append(arts, r.artifactOf(filepath.Join(r.outDir, name), filepath.Join(r.outShow, name), "domain-xml", "xml", hash))
	}
	if r.kubevirt {
		name := manifest.KubeVirtFile(r.vm.Name)
		arts = append(arts, r.artifactOf(filepath.Join(r.outDir, name), filepath.Join(r.outShow, name), "kubevirt", "yaml", hash))
	}
	return arts
}

// artifactOf describes the output at p, reported as show, with its
// sha256 when hash is set.
func (r *runner) artifactOf(p, show, kind, format string, hash bool) report.Artifact {
	a := report.Artifact{Path: show, Kind: kind, Format: format}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return a
	}
	defer f.Close()
	if !hash {
		if st, err := f.Stat(); err == nil {
			a.Size = st.Size()
		}
		return a
	}
	h := sha256.New()
	n, err := io.Copy(h, ctxReader{r, f})
	a.Size = n
	if err == nil {
		a.SHA256 = hex.EncodeToString(h.Sum(nil))
	}
	return a
}

// ctxReader stops a long hash when the job is cancelled.
type ctxReader struct {
	r *runner
	f io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.r.ctx.Err(); err != nil {
		return 0, err
	}
	return c.f.Read(p)
}

type validateResult struct {
	Disk    string               `json:"disk"`
	Output  string               `json:"output"`
	Check   *qemuimg.CheckResult `json:"check"`
	Compare string               `json:"compare"` // identical | skipped: reason
	Boot    *boot.Result         `json:"boot,omitempty"`
}

// validate is VALIDATE: qemu-img check of every output (a format without
// checks is "skipped", not passed), qemu-img compare with the source when
// FIX changed nothing, and the boot test when asked.
func (r *runner) validate(set func(any)) error {
	v := r.p.Validate
	if !manifest.Bool(v.Enabled) {
		return skip("disabled by pipeline.validate.enabled")
	}
	if manifest.Bool(v.Checksum) {
		r.hashOutputs()
	}
	var results []*validateResult
	defer func() { set(results) }()
	n := 0
	for _, d := range r.disks {
		if d.converted {
			n++
		}
	}
	i := 0
	for _, d := range r.disks {
		if !d.converted {
			continue
		}
		res := &validateResult{Disk: d.id, Output: d.output}
		results = append(results, res)
		r.progress("validate", 50*i/n, 0, 0, "check "+filepath.Base(d.output))
		chk, err := qemuimg.Check(r.ctx, d.target, d.outFormat)
		if err != nil {
			return r.files.explain(err)
		}
		res.Check = chk
		if chk.Status == "failed" {
			return fmt.Errorf("qemu-img check of %s failed: %s", d.output, chk.Message)
		}
		if chk.Message != "" && chk.Status == "ok" {
			r.warn("qemu-img check of %s: %s", d.output, chk.Message)
		}
		switch {
		case !manifest.Bool(v.Compare):
			res.Compare = "skipped: disabled by pipeline.validate.compare"
		case r.fixed && d.src != d.path:
			res.Compare = "skipped: FIX changed this disk"
		default:
			r.progress("validate", 50*i/n+25/n, 0, 0, "compare "+filepath.Base(d.output))
			same, detail, err := qemuimg.Compare(r.ctx, d.path, d.format, d.target, d.outFormat)
			if err != nil {
				return r.files.explain(err)
			}
			if !same {
				return fmt.Errorf("output %s differs from its source %s: %s", d.output, d.display, detail)
			}
			res.Compare = "identical"
		}
		i++
	}
	if !v.BootTest {
		return nil
	}
	d := r.disks[0]
	if !d.converted {
		return errors.New("boot test: the first disk was skipped (convert.disks), nothing to boot")
	}
	r.progress("validate", 60, 0, 0, "boot test "+filepath.Base(d.output))
	// The console log is created here, never through a symbolic link, and
	// boot.Test reopens this very file by its descriptor's name.
	console := filepath.Join(r.outDir, manifest.ConsoleFile(r.vm.Name))
	cf, err := os.OpenFile(console, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("boot test: cannot create the console log: %w", r.files.explain(err))
	}
	defer cf.Close()
	if err := r.owner.setFile(cf); err != nil {
		return fmt.Errorf("boot test: %w", r.files.explain(err))
	}
	br, err := boot.Test(r.ctx, boot.Options{
		Image: d.target, Format: d.outFormat, Firmware: r.firmware(),
		Timeout: time.Duration(v.BootTimeout) * time.Second, Marker: v.BootMarker,
		Console: fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), cf.Fd()),
	})
	err = r.files.explain(err)
	if len(results) > 0 {
		results[0].Boot = br
	}
	r.rep.Artifacts = append(r.rep.Artifacts, r.artifactOf(console, filepath.Join(r.outShow, manifest.ConsoleFile(r.vm.Name)), "console-log", "text", manifest.Bool(v.Checksum)))
	if err != nil {
		return fmt.Errorf("boot test: %w", err)
	}
	if !br.Booted {
		return fmt.Errorf("boot test: the guest did not reach %q on its serial console within %ds (%s)", v.BootMarker, v.BootTimeout, br.Accelerator)
	}
	return nil
}

// firmware is what the guest boots with: the OVF's word, else what INSPECT
// found, else BIOS.
func (r *runner) firmware() string {
	if hw := r.rep.Source.Hardware; hw != nil && hw.Firmware != "" {
		return hw.Firmware
	}
	if r.ovf != nil && r.ovf.Firmware != "" {
		return r.ovf.Firmware
	}
	if g := r.rep.Guest; g != nil && g.Firmware != "" {
		return g.Firmware
	}
	return "bios"
}

// rootOverlay makes, in the work directory, the qcow2 overlay of the disk
// INSPECT found the guest's root ("what") on: FIX writes only there, never
// to the source.
func (r *runner) rootOverlay(g *report.Guest, what string) (*disk, string, error) {
	rd := inspect.RootDisk(g)
	if rd >= len(r.disks) {
		return nil, "", fmt.Errorf("INSPECT found the %s on disk %d of %d", what, rd+1, len(r.disks))
	}
	d := r.disks[rd]
	if r.workDir == "" {
		if err := r.makeWorkDir(); err != nil {
			return nil, "", err
		}
	}
	overlay := filepath.Join(r.workDir, d.id+"-overlay.qcow2")
	if err := qemuimg.CreateOverlay(r.ctx, d.path, d.format, overlay); err != nil {
		return nil, "", err
	}
	return d, overlay, nil
}

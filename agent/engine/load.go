package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/qemuimg"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// load is LOAD: find the source's real format from its bytes, read the
// OVF/OVA/VMDK metadata, verify the sha256, open every disk with qemu-img
// info, and settle the output paths (none may exist yet).
func (r *runner) load(set func(any)) error {
	if ps := r.vm.Validate(); len(ps) > 0 {
		return fmt.Errorf("invalid manifest: %w", ps)
	}
	l := r.p.Load
	src := l.SourcePath
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("cannot open source: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("source %s is not a regular file", src)
	}
	detected, err := imgfmt.Detect(src)
	if err != nil {
		return err
	}
	r.rep.Source.Detected = detected
	if want := manifest.QemuFormat(l.SourceType); detected != want {
		return fmt.Errorf("source_type is %q but %s holds %s (detected from its bytes, not its name)", l.SourceType, src, describe(detected))
	}
	if l.SHA256 != "" {
		sum, err := r.sha256(src, st.Size())
		if err != nil {
			return err
		}
		want := strings.ToLower(strings.TrimPrefix(l.SHA256, "sha256:"))
		if sum != want {
			return fmt.Errorf("sha256 of %s is %s, but the manifest's load.sha256 says %s", src, sum, want)
		}
		r.rep.Source.SHA256 = sum
	}

	switch detected {
	case imgfmt.OVA:
		err = r.loadOVA(src)
	case imgfmt.OVF:
		err = r.loadOVF(src)
	default:
		var d *disk
		d, err = fileDisk(src, detected, "disk1")
		r.disks = []*disk{d}
	}
	if err != nil {
		return err
	}
	if r.ovf != nil {
		r.rep.Source.OVF = &report.OVF{Name: r.ovf.Name, CPUs: r.ovf.CPUs, MemoryMB: r.ovf.MemoryMB, Firmware: r.ovf.Firmware}
		for _, d := range r.ovf.Disks {
			r.rep.Source.OVF.Disks = append(r.rep.Source.OVF.Disks, d.File)
		}
		for _, n := range r.ovf.NICs {
			r.rep.Source.OVF.NICs = append(r.rep.Source.OVF.NICs, report.NIC{Name: n.Name, Model: n.Model, Network: n.Network})
		}
	}

	for i, d := range r.disks {
		r.progress("load", 50+50*i/len(r.disks), 0, 0, d.display)
		info, err := qemuimg.Info(r.ctx, d.path, d.format)
		if err != nil {
			return fmt.Errorf("disk %s (%s): %w", d.id, d.display, err)
		}
		if info.VirtualSize <= 0 {
			return fmt.Errorf("disk %s (%s): qemu-img reports a virtual size of %d", d.id, d.display, info.VirtualSize)
		}
		if info.BackingFile != "" {
			r.warn("disk %s (%s) has a backing file %s; the output includes its data", d.id, d.display, info.BackingFile)
		}
		// A truncated or damaged image can still open and even convert
		// (qemu reads zeros past the end), so its metadata is checked first.
		if checkable[d.format] {
			chk, err := qemuimg.Check(r.ctx, d.path, d.format)
			if err != nil {
				return fmt.Errorf("disk %s (%s): %w", d.id, d.display, err)
			}
			if chk.Status == "failed" {
				return fmt.Errorf("disk %s (%s) is damaged or truncated: qemu-img check: %s", d.id, d.display, chk.Message)
			}
		}
		d.info = info
		d.src, d.srcFormat = d.path, d.format
		r.rep.Source.Disks = append(r.rep.Source.Disks, report.Disk{ID: d.id, Path: d.display, Format: d.format, VirtualSize: info.VirtualSize, ActualSize: info.ActualSize, Subformat: d.subformat})
	}
	if err := r.planOutputs(); err != nil {
		return err
	}
	res := map[string]any{"detected_format": detected, "disks": len(r.disks)}
	if r.ovaManifest != "" {
		res["ova_manifest"] = r.ovaManifest
	}
	set(res)
	return nil
}

// checkable are the source formats qemu-img check can examine.
var checkable = map[string]bool{imgfmt.QCOW2: true, imgfmt.VMDK: true, imgfmt.VHDX: true}

// describe names a detected format the way a manifest would.
func describe(format string) string {
	switch format {
	case imgfmt.VPC:
		return `a VHD image (source_type "vhd")`
	case imgfmt.OVA:
		return `an OVA archive (source_type "ova")`
	case imgfmt.OVF:
		return `an OVF descriptor (source_type "ovf")`
	}
	return fmt.Sprintf("a %s image (source_type %q)", format, format)
}

// fileDisk describes a disk that is a file of its own, checking that a VMDK
// descriptor's extents are files beside it.
func fileDisk(p, format, id string) (*disk, error) {
	d := &disk{id: id, display: p, path: p, format: format}
	if format != imgfmt.VMDK {
		return d, nil
	}
	desc, err := imgfmt.ReadVMDKDescriptorFile(p)
	if err != nil {
		return nil, err
	}
	d.subformat = desc.CreateType
	if embedded, err := isSparseExtent(p); err != nil || embedded {
		// A sparse VMDK carries its descriptor inside and is its own only
		// extent, whatever name the descriptor gives it (the file may have
		// been renamed); qemu reads it as one file.
		return d, err
	}
	extents, err := desc.ExtentPaths(filepath.Dir(p))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	sizes := map[string]int64{}
	for _, e := range extents {
		st, err := os.Lstat(e)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("vmdk %s lists extent %s, which is missing (copy every file of the disk)", p, filepath.Base(e))
		}
		if err != nil {
			return nil, fmt.Errorf("vmdk %s: extent: %w", p, err)
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("vmdk %s: extent %s is not a regular file", p, filepath.Base(e))
		}
		sizes[e] = st.Size()
	}
	// qemu reads zeros past the end of a short flat extent; refuse it instead.
	for _, x := range desc.Extents {
		if x.Type != "FLAT" {
			continue
		}
		e := filepath.Join(filepath.Dir(p), x.File)
		if need := (x.Offset + x.Sectors) * 512; sizes[e] < need {
			return nil, fmt.Errorf("vmdk %s: flat extent %s is truncated: %d bytes, the descriptor needs %d", p, x.File, sizes[e], need)
		}
	}
	return d, nil
}

// isSparseExtent reports whether p starts with the VMDK sparse magic "KDMV".
func isSparseExtent(p string) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, fmt.Errorf("cannot read vmdk: %w", err)
	}
	defer f.Close()
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil {
		return false, nil
	}
	return string(magic[:]) == "KDMV", nil
}

func (r *runner) loadOVA(src string) error {
	arc, err := imgfmt.ReadOVA(src)
	if err != nil {
		return err
	}
	r.ovf = arc.OVF
	if len(arc.OVF.Disks) == 0 {
		return fmt.Errorf("ova %s: its descriptor %s lists no disks", src, arc.OVFName)
	}
	f, err := os.Open(arc.Path)
	if err != nil {
		return fmt.Errorf("cannot read ova: %w", err)
	}
	defer f.Close()
	if err := r.verifyManifest(src, arc, f); err != nil {
		return err
	}
	for i, od := range arc.OVF.Disks {
		if od.Compression != "" && od.Compression != "identity" {
			return fmt.Errorf("ova %s: disk %s is %s-compressed inside the archive, which cannot be read in place; unpack the OVA and use its .ovf", src, od.File, od.Compression)
		}
		m, ok := arc.Member(od.File)
		if !ok {
			return fmt.Errorf("ova %s: %s references %s, which is not in the archive", src, arc.OVFName, od.File)
		}
		sec := arc.Section(f, m)
		format, err := imgfmt.DetectReader(sec, m.Size)
		if err != nil {
			return fmt.Errorf("ova %s: disk %s: %w", src, od.File, err)
		}
		d := &disk{id: diskID(od.ID, i), display: src + ":" + m.Name, path: imgfmt.QemuSpec(arc.Path, m), format: format}
		switch format {
		case imgfmt.OVA, imgfmt.OVF:
			return fmt.Errorf("ova %s: disk %s is not a disk image (%s)", src, od.File, format)
		case imgfmt.VMDK:
			desc, err := imgfmt.ReadVMDKDescriptor(sec, m.Size)
			if err != nil {
				return fmt.Errorf("ova %s: disk %s: %w", src, od.File, err)
			}
			if len(desc.Extents) != 1 || desc.Extents[0].Type != "SPARSE" {
				return fmt.Errorf("ova %s: disk %s is a %s VMDK whose data lives in other files; only single-file VMDKs (streamOptimized, monolithicSparse) can be read inside an OVA", src, od.File, desc.CreateType)
			}
			d.subformat = desc.CreateType
		}
		r.disks = append(r.disks, d)
	}
	return nil
}

// verifyManifest checks the members of an OVA against its .mf manifest,
// when it has one, as ovftool and virt-v2v do: a corrupted download fails
// here, naming the member, instead of converting garbage.
func (r *runner) verifyManifest(src string, arc *imgfmt.Archive, f *os.File) error {
	var mf *imgfmt.OVAMember
	for i, m := range arc.Members {
		if strings.HasSuffix(strings.ToLower(m.Name), ".mf") {
			mf = &arc.Members[i]
			break
		}
	}
	if mf == nil {
		r.ovaManifest = "none in the archive"
		return nil
	}
	digests, err := imgfmt.ParseManifest(arc.Section(f, *mf))
	if err != nil {
		return fmt.Errorf("ova %s: %s: %w", src, mf.Name, err)
	}
	var total, done int64
	for _, d := range digests {
		if m, ok := arc.Member(d.File); ok {
			total += m.Size
		}
	}
	for _, d := range digests {
		m, ok := arc.Member(d.File)
		if !ok {
			return fmt.Errorf("ova %s: its manifest %s lists %s, which is not in the archive", src, mf.Name, d.File)
		}
		r.progress("load", int(done*50/max(total, 1)), done, total, "verify "+m.Name)
		got, err := d.Sum(ctxReader{r, arc.Section(f, m)})
		if err != nil {
			return fmt.Errorf("ova %s: cannot verify %s: %w", src, m.Name, err)
		}
		if got != d.Hex {
			return fmt.Errorf("ova %s: member %s is corrupted: its %s is %s, the OVA's manifest %s says %s", src, m.Name, d.Algorithm, got, mf.Name, d.Hex)
		}
		done += m.Size
	}
	r.ovaManifest = fmt.Sprintf("verified %d files against %s", len(digests), mf.Name)
	return nil
}

func (r *runner) loadOVF(src string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("cannot read ovf: %w", err)
	}
	desc, err := imgfmt.ParseOVF(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	r.ovf = desc
	if len(desc.Disks) == 0 {
		return fmt.Errorf("ovf %s lists no disks", src)
	}
	dir := filepath.Dir(src)
	for i, od := range desc.Disks {
		p := filepath.Join(dir, filepath.FromSlash(od.File))
		if od.Compression != "" && od.Compression != "identity" {
			return fmt.Errorf("ovf %s: disk file %s is %s-compressed; decompress it first", src, od.File, od.Compression)
		}
		st, err := os.Lstat(p)
		if err != nil {
			return fmt.Errorf("ovf %s references %s: %w", src, od.File, err)
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("ovf %s references %s, which is not a regular file", src, od.File)
		}
		format, err := imgfmt.Detect(p)
		if err != nil {
			return err
		}
		if format == imgfmt.OVA || format == imgfmt.OVF {
			return fmt.Errorf("ovf %s references %s, which is not a disk image (%s)", src, od.File, format)
		}
		d, err := fileDisk(p, format, diskID(od.ID, i))
		if err != nil {
			return err
		}
		r.disks = append(r.disks, d)
	}
	return nil
}

func diskID(id string, i int) string {
	if id != "" {
		return id
	}
	return fmt.Sprintf("disk%d", i+1)
}

// planOutputs settles the output directory and file names and refuses to
// start when any of them exists.
func (r *runner) planOutputs() error {
	c := r.p.Convert
	abs := r.plannedDir()
	if abs == "" {
		return errors.New("no output directory: set pipeline.convert.output_dir or give one to the engine")
	}
	var want []string
	for i, d := range r.disks {
		name, ok := c.OutputFor(i, d.id)
		if !ok {
			continue
		}
		if name != filepath.Base(name) || name == "." || name == ".." {
			return fmt.Errorf("output name %q for disk %s must be a plain file name", name, d.id)
		}
		d.output, d.outFormat = filepath.Join(abs, name), c.OutputFormat
		want = append(want, d.output)
	}
	if len(want) == 0 {
		return errors.New("every disk is skipped (convert.disks): nothing to convert")
	}
	want = append(want, filepath.Join(abs, DomainXMLName), filepath.Join(abs, ReportName))
	if r.p.Validate.BootTest && manifest.Bool(r.p.Validate.Enabled) {
		want = append(want, filepath.Join(abs, ConsoleName))
	}
	seen := map[string]bool{}
	for _, p := range want {
		if seen[p] {
			return fmt.Errorf("two outputs would both be %s", p)
		}
		seen[p] = true
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("output %s exists; not overwriting (remove it or choose another output directory)", p)
		}
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("cannot create output directory: %w", err)
	}
	r.outDir = abs
	return nil
}

// plannedDir is the absolute output directory: the manifest's
// convert.output_dir, else the caller's; "" when neither is set.
func (r *runner) plannedDir() string {
	dir := r.o.OutputDir
	if c := r.p.Convert; c != nil && c.OutputDir != "" {
		dir = c.OutputDir
	}
	if dir == "" {
		return ""
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return ""
	}
	return abs
}

// sha256 hashes the file at p, reporting progress within LOAD's first half.
func (r *runner) sha256(p string, size int64) (string, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return "", fmt.Errorf("cannot verify sha256: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 4<<20)
	var done int64
	for {
		if err := r.ctx.Err(); err != nil {
			return "", err
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		done += int64(n)
		if size > 0 {
			r.progress("load", int(done*50/size), done, size, "sha256 "+filepath.Base(p))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("cannot verify sha256 of %s: %w", p, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

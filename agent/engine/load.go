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

	"golang.org/x/sys/unix"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/qemuimg"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// load is LOAD: find the source's real format from its bytes, read the
// OVF/OVA/VMDK metadata, verify the sha256, open every disk with qemu-img
// info, and settle the output paths (none may exist yet).
func (r *runner) load(set func(any)) error {
	// Errors name the files as the manifest does, not as opened for a user.
	return r.files.explain(r.loadSources(set))
}

func (r *runner) loadSources(set func(any)) error {
	if ps := r.vm.Validate(); len(ps) > 0 {
		return fmt.Errorf("invalid manifest: %w", ps)
	}
	var detected string
	var err error
	if r.p.Load.IsRemote() {
		detected, err = r.loadRemote()
	} else {
		detected, err = r.loadFile()
	}
	if err != nil {
		return err
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
		if (info.BackingFile != "" || info.DataFile() != "") && !d.refs {
			// The header parse found nothing, qemu did: never convert what
			// was not checked.
			return fmt.Errorf("disk %s (%s): qemu-img reports a backing or data file (%q, %q) the header check did not find; not converting it", d.id, d.display, info.BackingFile, info.DataFile())
		}
		if max := r.maxVirtualSize(); info.VirtualSize > max {
			return fmt.Errorf("disk %s (%s) claims a virtual size of %s (%d bytes), more than limits.max_virtual_size %s in agent.yaml; nothing was converted (raise the limit if the disk is genuine)",
				d.id, d.display, humanSize(info.VirtualSize), info.VirtualSize, humanSize(max))
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
	if err := r.planTarget(); err != nil {
		return err
	}
	if err := r.checkSpace(); err != nil {
		return err
	}
	res := map[string]any{"detected_format": detected, "disks": len(r.disks)}
	if r.overlap != "" {
		res["overlap"] = r.overlap
	}
	if r.ovaManifest != "" {
		res["ova_manifest"] = r.ovaManifest
	}
	if len(r.refs) > 0 {
		res["references"] = r.refs
	}
	set(res)
	return nil
}

// loadFile opens a source file (source_path) and its OVA/OVF/VMDK
// metadata, and says what format its bytes hold.
func (r *runner) loadFile() (string, error) {
	l := r.p.Load
	display := l.SourcePath
	src, err := r.openSource(display)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(src)
	if err != nil {
		return "", fmt.Errorf("cannot open source: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("source %s is not a regular file", display)
	}
	detected, err := imgfmt.Detect(src)
	if err != nil {
		return "", err
	}
	r.rep.Source.Detected = detected
	if want := manifest.QemuFormat(l.SourceType); detected != want {
		return "", fmt.Errorf("source_type is %q but %s holds %s (detected from its bytes, not its name)", l.SourceType, display, describe(detected))
	}
	if l.SHA256 != "" {
		sum, err := r.sha256(src, st.Size())
		if err != nil {
			return "", err
		}
		want := strings.ToLower(strings.TrimPrefix(l.SHA256, "sha256:"))
		if sum != want {
			return "", fmt.Errorf("sha256 of %s is %s, but the manifest's load.sha256 says %s", display, sum, want)
		}
		r.rep.Source.SHA256 = sum
	}

	switch detected {
	case imgfmt.OVA:
		err = r.loadOVA(src)
	case imgfmt.OVF:
		err = r.loadOVF(src, display)
	default:
		var d *disk
		d, err = r.fileDisk(src, display, detected, "disk1")
		r.disks = []*disk{d}
	}
	if err != nil {
		return "", err
	}
	if r.ovf != nil {
		r.rep.Source.OVF = &report.OVF{Name: r.ovf.Name, CPUs: r.ovf.CPUs, MemoryMB: r.ovf.MemoryMB, Firmware: r.ovf.Firmware, SecureBoot: r.ovf.SecureBoot}
		for _, d := range r.ovf.Disks {
			r.rep.Source.OVF.Disks = append(r.rep.Source.OVF.Disks, d.File)
		}
		for _, n := range r.ovf.NICs {
			r.rep.Source.OVF.NICs = append(r.rep.Source.OVF.NICs, report.NIC{Name: n.Name, Model: n.Model, Network: n.Network, MAC: n.MAC})
		}
	}
	return detected, nil
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

// fileDisk describes a disk that is a file of its own: p is the file to
// read (opened by openSource or openRef), display the path the manifest or
// the OVF gave. Every file the image refers to is checked and pinned
// (refs.go).
func (r *runner) fileDisk(p, display, format, id string) (*disk, error) {
	d := &disk{id: id, display: display, path: p, format: format}
	if format != imgfmt.QCOW2 && format != imgfmt.VMDK {
		return d, nil
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", display, err)
	}
	// Open until the job ends: its header is read again before CONVERT.
	r.files.hold(f)
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", display, err)
	}
	relDir := filepath.Dir(display)
	if r.files.inTrustedDir(p) {
		// A source's download: display is a datastore path, the files
		// it names are beside it in the download directory.
		relDir = r.files.trustedDir
	}
	n, sub, err := r.imageNode(d, display, format, f, st.Size(), fileNode(p), relDir, 0)
	if err != nil {
		return nil, err
	}
	d.path, d.subformat = spec(n), sub
	return d, nil
}

// checkFlatExtents refuses a flat extent shorter than the descriptor says:
// qemu would read zeros past its end.
func checkFlatExtents(display string, desc *imgfmt.VMDKDescriptor, size func(name string) int64) error {
	for _, x := range desc.Extents {
		if x.Type != "FLAT" {
			continue
		}
		if need := (x.Offset + x.Sectors) * 512; size(x.File) < need {
			return fmt.Errorf("vmdk %s: flat extent %s is truncated: %d bytes, the descriptor needs %d", display, x.File, size(x.File), need)
		}
	}
	return nil
}

// openSource opens the source p once, without following a symbolic link
// on any component of its path, and checks it is a regular file the job's
// user may read (Options.SourceUID; the caller's own access for uid 0). It
// returns the /proc/<pid>/fd/<n> name everything reads it by: a file
// swapped in after this never reaches qemu.
func (r *runner) openSource(p string) (string, error) {
	opened, err := r.files.open(p)
	if err != nil {
		return "", fmt.Errorf("cannot open source: %w", err)
	}
	return opened, nil
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
	// Open until the job ends: the disks' headers are read again before
	// CONVERT.
	r.files.hold(f)
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
		display := r.p.Load.SourcePath + ":" + m.Name
		d := &disk{id: diskID(od.ID, i), display: display, path: imgfmt.QemuSpec(arc.Path, m), format: format}
		switch format {
		case imgfmt.OVA, imgfmt.OVF:
			return fmt.Errorf("ova %s: disk %s is not a disk image (%s)", src, od.File, format)
		case imgfmt.VMDK:
			desc, err := imgfmt.ReadVMDKDescriptor(sec, m.Size)
			if err != nil {
				return fmt.Errorf("ova %s: disk %s: %w", src, od.File, err)
			}
			if sp, err := imgfmt.ReadSparseVMDK(sec, m.Size); (err != nil || !sp.Defers) && (len(desc.Extents) != 1 || desc.Extents[0].Type != "SPARSE") {
				return fmt.Errorf("ova %s: disk %s is a %s VMDK whose data lives in other files; only single-file VMDKs (streamOptimized, monolithicSparse) can be read inside an OVA", src, od.File, desc.CreateType)
			}
			d.subformat = desc.CreateType
		}
		if format == imgfmt.QCOW2 || format == imgfmt.VMDK {
			// A name inside a member is resolved, as qemu does, against
			// the archive's directory.
			member := node{"driver": "raw", "offset": m.Offset, "size": m.Size, "file": fileNode(arc.Path)}
			n, sub, err := r.imageNode(d, display, format, sec, m.Size, member, filepath.Dir(r.p.Load.SourcePath), 0)
			if err != nil {
				return err
			}
			d.path = spec(n)
			if sub != "" {
				d.subformat = sub
			}
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

// loadOVF reads the OVF at src (display: its path in the manifest) and
// its disks, which lie relative to display.
func (r *runner) loadOVF(src, display string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("cannot read ovf: %w", err)
	}
	desc, err := imgfmt.ParseOVF(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", display, err)
	}
	r.ovf = desc
	if len(desc.Disks) == 0 {
		return fmt.Errorf("ovf %s lists no disks", display)
	}
	src = display
	dir := filepath.Dir(display)
	for i, od := range desc.Disks {
		shown := filepath.Join(dir, filepath.FromSlash(od.File))
		if od.Compression != "" && od.Compression != "identity" {
			return fmt.Errorf("ovf %s: disk file %s is %s-compressed; decompress it first", src, od.File, od.Compression)
		}
		// Every directory of the href, not only its last component, is
		// checked and must not be a symbolic link; the file must lie beside
		// the OVF (checkHref refused absolute names and "..").
		id := diskID(od.ID, i)
		_, p, _, err := r.openRef(&disk{id: id}, display, refOVFDisk, filepath.FromSlash(od.File), dir)
		if err != nil {
			return fmt.Errorf("ovf %s references %s: %w", src, od.File, err)
		}
		format, err := imgfmt.Detect(p)
		if err != nil {
			return err
		}
		if format == imgfmt.OVA || format == imgfmt.OVF {
			return fmt.Errorf("ovf %s references %s, which is not a disk image (%s)", src, od.File, format)
		}
		d, err := r.fileDisk(p, shown, format, id)
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
		d.target = d.output
		want = append(want, d.output)
	}
	if len(want) == 0 {
		return errors.New("every disk is skipped (convert.disks): nothing to convert")
	}
	want = append(want, filepath.Join(abs, manifest.DomainXMLFile(r.vm.Name)), filepath.Join(abs, manifest.ReportFile(r.vm.Name)))
	if r.p.Validate.BootTest && manifest.Bool(r.p.Validate.Enabled) {
		want = append(want, filepath.Join(abs, manifest.ConsoleFile(r.vm.Name)))
	}
	seen := map[string]bool{}
	for _, p := range want {
		if seen[p] {
			return fmt.Errorf("two outputs would both be %s", p)
		}
		seen[p] = true
	}
	dir, err := r.openOutDir(abs)
	if err != nil {
		return err
	}
	r.outDir, r.outShow = dir, abs
	for _, d := range r.disks {
		if d.output != "" {
			d.target = filepath.Join(dir, filepath.Base(d.output))
		}
	}
	for _, p := range want {
		if _, err := os.Lstat(filepath.Join(dir, filepath.Base(p))); err == nil {
			return fmt.Errorf("output %s exists; not overwriting (remove it or choose another output directory)", p)
		}
	}
	return nil
}

// openOutDir creates the output directory abs and returns the path the
// outputs are written below. For a job of Options.SourceUID writing into a
// directory the manifest chose, that directory is opened as the user could
// (userFiles.openDir) and kept open, and the path is its /proc/<pid>/fd/<n>
// name: a directory or parent swapped for a symbolic link after the agent's
// check never redirects root's writes.
func (r *runner) openOutDir(abs string) (string, error) {
	if r.files != nil && r.p.Convert != nil && r.p.Convert.OutputDir != "" {
		if r.outFile != nil {
			return r.outDir, nil
		}
		f, name, err := r.files.openDir(abs)
		if err != nil {
			return "", err
		}
		r.outFile = f
		return name, nil
	}
	_, statErr := os.Lstat(abs)
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return "", fmt.Errorf("cannot create output directory: %w", err)
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		// The job's own directory: nobody but who may read its outputs
		// looks into it.
		f, err := os.OpenFile(abs, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return "", fmt.Errorf("cannot open output directory: %w", err)
		}
		err = r.owner.setDir(f)
		f.Close()
		if err != nil {
			return "", err
		}
	}
	return abs, nil
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
	flags := os.O_RDONLY | syscall.O_NOFOLLOW
	if r.files != nil {
		flags = os.O_RDONLY // p is the /proc link to the file opened for the user
	}
	f, err := os.OpenFile(p, flags, 0)
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
			r.progress("load", int(done*50/size), done, size, "sha256 "+filepath.Base(r.p.Load.SourcePath))
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

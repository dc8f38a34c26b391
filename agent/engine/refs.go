package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
)

// Files an image refers to.
//
// A qcow2 image can name a backing file and an external data file, a VMDK
// descriptor (a file of its own, or embedded in a sparse extent whose
// header defers to it) names its extents and a parent, an OVF names its
// disks. qemu opens all of these by name, as the worker runs it: as root.
// So each one must
//
//   - lie in the source's directory or below it (its name resolved as qemu
//     resolves it, against the referring image's directory; no ".."), unless
//     the manifest lists it in pipeline.load.allow_references;
//   - be reachable without a symbolic link on any component and be a regular
//     file, opened once here (userFiles) and read by that descriptor only;
//   - be readable by the submitter (for root's jobs and hyper2kvmd convert:
//     by the caller).
//
// qemu is then never given a name to open: every qemu-img and
// qemu-storage-daemon call gets a "json:" node that pins each checked file
// by its /proc/<pid>/fd/<n> name and sets "backing": null where the image
// has none, and a VMDK descriptor is rewritten into the work directory with
// each extent named as a link to the opened extent.

// maxChain bounds a backing chain.
const maxChain = 16

// refKinds name what an image refers to, for messages.
const (
	refBacking = "backing file"
	refData    = "external data file"
	refExtent  = "extent"
	refParent  = "parent (parentFileNameHint)"
	refOVFDisk = "disk file"
)

// node is a qemu block node description (the body of a "json:" filename).
type node = map[string]any

func fileNode(p string) node { return node{"driver": "file", "filename": p} }

// spec is a node as a qemu "json:" filename.
func spec(n node) string {
	b, _ := json.Marshal(n) // cannot fail: maps of strings, numbers and nil
	return "json:" + string(b)
}

// refError is a reference that breaks the rule.
type refError struct{ msg string }

func (e refError) Error() string { return e.msg }

// resolveRef is where qemu looks for name, referred to by an image in
// relDir, and whether the rule lets it be read: beside the source (in
// srcDir or below it, without ".."), or listed in allow.
func resolveRef(name, relDir, srcDir string, allow map[string]bool) (resolved string, ok bool) {
	resolved = name
	if !filepath.IsAbs(name) {
		resolved = filepath.Join(relDir, name)
	}
	resolved = filepath.Clean(resolved)
	if allow[resolved] {
		return resolved, true
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return resolved, false
		}
	}
	if strings.ContainsRune(name, 0) || strings.Contains(name, "://") || strings.HasPrefix(name, "json:") {
		return resolved, false
	}
	srcDir = filepath.Clean(srcDir)
	return resolved, resolved != srcDir && strings.HasPrefix(resolved, strings.TrimSuffix(srcDir, "/")+"/")
}

// allowList is the manifest's load.allow_references as a set.
func (r *runner) allowList() map[string]bool {
	allow := map[string]bool{}
	for _, p := range r.p.Load.AllowReferences {
		allow[filepath.Clean(p)] = true
	}
	return allow
}

// openRef applies the rule to the file named name that image (as shown to
// the user) refers to as kind, from relDir, and opens it. It returns the
// opened file, its /proc name for qemu and the path it resolved to.
func (r *runner) openRef(d *disk, image, kind, name, relDir string) (*os.File, string, string, error) {
	srcDir := filepath.Dir(r.p.Load.SourcePath)
	if r.p.Load.IsRemote() && r.files.trustedDir != "" {
		// A source's disk and its extents are in the download directory.
		srcDir = r.files.trustedDir
	}
	resolved, ok := resolveRef(name, relDir, srcDir, r.allowList())
	if !ok {
		return nil, "", "", refError{fmt.Sprintf("disk %s (%s): its %s %q (%s) is not in the source's directory %s or below it; "+
			"a job reads no other host file unless the manifest lists it in pipeline.load.allow_references (add %q there if that file belongs to this VM)",
			d.id, image, kind, name, resolved, srcDir, resolved)}
	}
	f, opened, err := r.files.openFile(resolved)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", "", fmt.Errorf("disk %s (%s): its %s %s is missing (copy every file of the disk)", d.id, image, kind, resolved)
	}
	if err != nil {
		return nil, "", "", fmt.Errorf("disk %s (%s): its %s %s cannot be read: %w", d.id, image, kind, resolved, err)
	}
	r.refs = append(r.refs, resolved)
	return f, opened, resolved, nil
}

// imageNode describes for qemu the image of format read from rd (size
// bytes) through the node file, with every file it refers to checked and
// pinned. display names it to the user; relDir is where qemu would look
// for the names it holds. It also returns the VMDK subformat.
func (r *runner) imageNode(d *disk, display, format string, rd io.ReaderAt, size int64, file node, relDir string, depth int) (node, string, error) {
	if depth > maxChain {
		return nil, "", fmt.Errorf("disk %s (%s): the backing chain is longer than %d images", d.id, display, maxChain)
	}
	rd = r.files.record(rd, display)
	switch format {
	case imgfmt.QCOW2:
		n, err := r.qcow2Node(d, display, rd, size, file, relDir, depth)
		return n, "", err
	case imgfmt.VMDK:
		return r.vmdkNode(d, display, rd, size, file, relDir, depth)
	case imgfmt.Raw, imgfmt.VPC, imgfmt.VHDX:
		// qemu opens no other file for these (it refuses differencing VHD
		// and VHDX images).
		return node{"driver": format, "file": file}, "", nil
	}
	return nil, "", fmt.Errorf("disk %s (%s): %s images cannot be read", d.id, display, format)
}

func (r *runner) qcow2Node(d *disk, display string, rd io.ReaderAt, size int64, file node, relDir string, depth int) (node, error) {
	h, err := imgfmt.ReadQCOW2Header(rd, size)
	if err != nil {
		return nil, fmt.Errorf("disk %s (%s) is damaged: cannot read its qcow2 header: %w", d.id, display, err)
	}
	n := node{"driver": imgfmt.QCOW2, "file": file, "backing": nil}
	if h.HasDataFile {
		if h.DataFile == "" {
			return nil, fmt.Errorf("disk %s (%s) keeps its data in an external file but does not name it", d.id, display)
		}
		_, opened, _, err := r.openRef(d, display, refData, h.DataFile, relDir)
		if err != nil {
			return nil, err
		}
		n["data-file"] = fileNode(opened)
		d.refs = true
	}
	if h.BackingFile != "" {
		b, err := r.backingNode(d, display, refBacking, h.BackingFile, h.BackingFormat, relDir, depth)
		if err != nil {
			return nil, err
		}
		n["backing"] = b
		d.refs = true
	}
	return n, nil
}

// backingFormats are the backing formats accepted from a header.
var backingFormats = map[string]bool{imgfmt.QCOW2: true, imgfmt.Raw: true, imgfmt.VMDK: true, imgfmt.VPC: true, imgfmt.VHDX: true}

// backingNode checks, opens and describes the backing file name of the
// image display. format is the image's word for the backing file's format
// ("" to detect it from its bytes, never from its name).
func (r *runner) backingNode(d *disk, display, kind, name, format, relDir string, depth int) (node, error) {
	f, opened, resolved, err := r.openRef(d, display, kind, name, relDir)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("disk %s (%s): its %s %s: %w", d.id, display, kind, resolved, err)
	}
	if format == "" {
		if format, err = imgfmt.DetectReader(r.files.record(f, resolved), st.Size()); err != nil {
			return nil, fmt.Errorf("disk %s (%s): its %s %s: %w", d.id, display, kind, resolved, err)
		}
	}
	if !backingFormats[format] {
		return nil, fmt.Errorf("disk %s (%s): its %s %s is %q, which cannot be read", d.id, display, kind, resolved, format)
	}
	b, _, err := r.imageNode(d, resolved, format, f, st.Size(), fileNode(opened), filepath.Dir(resolved), depth+1)
	return b, err
}

// vmdkNode describes a VMDK: a sparse extent on its own (the common
// monolithicSparse and streamOptimized), or a descriptor, a file of its own
// or embedded in a sparse extent that defers to it, which is rewritten into
// the work directory with every extent pinned.
func (r *runner) vmdkNode(d *disk, display string, rd io.ReaderAt, size int64, file node, relDir string, depth int) (node, string, error) {
	var magic [4]byte
	if _, err := rd.ReadAt(magic[:], 0); err != nil {
		return nil, "", fmt.Errorf("disk %s (%s): cannot read vmdk: %w", d.id, display, err)
	}
	var text []byte
	var subformat string
	switch string(magic[:]) {
	case "KDMV":
		sp, err := imgfmt.ReadSparseVMDK(rd, size)
		if err != nil {
			return nil, "", fmt.Errorf("disk %s (%s): %w", d.id, display, err)
		}
		if desc, err := imgfmt.ParseVMDKDescriptor(strings.NewReader(string(sp.Descriptor))); err == nil {
			subformat = desc.CreateType
		}
		if !sp.Defers {
			// Its own only extent, whatever name its descriptor gives it
			// (the file may have been renamed); qemu reads it as one file.
			n := node{"driver": imgfmt.VMDK, "file": file, "backing": nil}
			if err := r.vmdkParent(d, display, sp.Descriptor, relDir, depth, n); err != nil {
				return nil, "", err
			}
			return n, subformat, nil
		}
		text = sp.Descriptor
	case "COWD":
		// A VMware 3 / ESX sparse extent: one file.
		return node{"driver": imgfmt.VMDK, "file": file, "backing": nil}, "", nil
	default:
		if size > 1<<20 {
			return nil, "", fmt.Errorf("disk %s (%s): a vmdk descriptor of %d bytes is too large", d.id, display, size)
		}
		text = make([]byte, size)
		if _, err := rd.ReadAt(text, 0); err != nil && !errors.Is(err, io.EOF) {
			return nil, "", fmt.Errorf("disk %s (%s): cannot read vmdk descriptor: %w", d.id, display, err)
		}
	}
	cp, desc, err := r.vmdkDescriptor(d, display, text, relDir)
	if err != nil {
		return nil, "", err
	}
	d.refs = true
	n := node{"driver": imgfmt.VMDK, "file": fileNode(cp), "backing": nil}
	if err := r.vmdkParent(d, display, text, relDir, depth, n); err != nil {
		return nil, "", err
	}
	return n, desc.CreateType, nil
}

// vmdkParent pins the parent a VMDK descriptor names, if any, as n's backing.
func (r *runner) vmdkParent(d *disk, display string, text []byte, relDir string, depth int, n node) error {
	name, ok := imgfmt.VMDKParentHint(text)
	if !ok || name == "" {
		return nil
	}
	b, err := r.backingNode(d, display, refParent, name, imgfmt.VMDK, relDir, depth)
	if err != nil {
		return err
	}
	n["backing"] = b
	d.refs = true
	return nil
}

// vmdkDescriptor writes descriptor text, with each extent renamed to a link
// in a private work directory to that extent as checked and opened, and
// returns the copy's path and the parsed descriptor. qemu resolves extent
// names against the descriptor's own path, so it opens those links.
func (r *runner) vmdkDescriptor(d *disk, display string, text []byte, relDir string) (string, *imgfmt.VMDKDescriptor, error) {
	desc, err := imgfmt.ParseVMDKDescriptor(strings.NewReader(string(text)))
	if err != nil {
		return "", nil, fmt.Errorf("vmdk %s: %w", display, err)
	}
	if r.workDir == "" {
		if err := r.makeWorkDir(); err != nil {
			return "", nil, err
		}
	}
	dir, err := os.MkdirTemp(r.workDir, "vmdk-"+d.id+"-")
	if err != nil {
		return "", nil, fmt.Errorf("cannot prepare vmdk %s: %w", display, err)
	}
	var names []string
	rewritten, err := imgfmt.RewriteVMDKExtents(text, func(i int, name string) string {
		names = append(names, name)
		return fmt.Sprintf("extent-%d", i)
	})
	if err != nil {
		return "", nil, fmt.Errorf("vmdk %s: %w", display, err)
	}
	sizes := map[string]int64{}
	for i, name := range names {
		f, opened, resolved, err := r.openRef(d, display, refExtent, name, relDir)
		if err != nil {
			return "", nil, err
		}
		st, err := f.Stat()
		if err != nil {
			return "", nil, fmt.Errorf("vmdk %s: extent %s: %w", display, resolved, err)
		}
		sizes[name] = st.Size()
		// A sparse extent that defers to its own embedded descriptor would
		// make qemu open further names, unchecked.
		if sp, err := imgfmt.ReadSparseVMDK(r.files.record(f, resolved), st.Size()); err == nil && sp.Defers {
			return "", nil, fmt.Errorf("vmdk %s: extent %s is itself a sparse extent deferring to the extents of its embedded descriptor, which is not accepted", display, resolved)
		}
		if err := os.Symlink(opened, filepath.Join(dir, fmt.Sprintf("extent-%d", i))); err != nil {
			return "", nil, fmt.Errorf("cannot prepare vmdk %s: %w", display, err)
		}
	}
	if err := checkFlatExtents(display, desc, func(name string) int64 { return sizes[name] }); err != nil {
		return "", nil, err
	}
	cp := filepath.Join(dir, "descriptor.vmdk")
	if err := os.WriteFile(cp, rewritten, 0o600); err != nil {
		return "", nil, fmt.Errorf("cannot prepare vmdk %s: %w", display, err)
	}
	return cp, desc, nil
}

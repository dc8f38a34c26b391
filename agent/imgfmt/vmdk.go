package imgfmt

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// VMDK createType values this package understands.
const (
	MonolithicSparse     = "monolithicSparse"
	MonolithicFlat       = "monolithicFlat"
	TwoGbMaxExtentSparse = "twoGbMaxExtentSparse"
	TwoGbMaxExtentFlat   = "twoGbMaxExtentFlat"
	StreamOptimized      = "streamOptimized"
)

// maxDescriptor bounds a descriptor's size: real ones are a few KiB, and a
// hostile image must not make us read gigabytes of "text".
const maxDescriptor = 1 << 20

// VMDKDescriptor is the text descriptor of a VMDK, either a file of its own
// (flat and split layouts) or embedded in a sparse extent.
type VMDKDescriptor struct {
	Version    int
	CID        string
	ParentCID  string
	CreateType string
	Extents    []VMDKExtent
	DDB        map[string]string // ddb.* keys, e.g. ddb.adapterType
}

// VMDKExtent is one "RW 2048 SPARSE "file.vmdk"" line.
type VMDKExtent struct {
	Access  string // RW | RDONLY | NOACCESS
	Sectors int64  // size in 512-byte sectors
	Type    string // SPARSE | FLAT | ZERO | VMFS | VMFSSPARSE | ...
	File    string // relative to the descriptor; empty for ZERO
	Offset  int64  // sectors into File (FLAT only)
}

// Size is the virtual size the extents add up to, in bytes.
func (d *VMDKDescriptor) Size() int64 {
	var n int64
	for _, e := range d.Extents {
		n += e.Sectors * 512
	}
	return n
}

// ParseVMDKDescriptor parses descriptor text. It checks what qemu needs to
// open the image and no more, and never panics on input.
func ParseVMDKDescriptor(r io.Reader) (*VMDKDescriptor, error) {
	d := &VMDKDescriptor{DDB: map[string]string{}}
	sc := bufio.NewScanner(io.LimitReader(r, maxDescriptor))
	sc.Buffer(make([]byte, 64*1024), maxDescriptor)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(strings.TrimRight(sc.Text(), "\x00"))
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok && !isExtentLine(line) {
			k, v = strings.TrimSpace(k), unquote(strings.TrimSpace(v))
			switch {
			case k == "version":
				ver, err := strconv.Atoi(v)
				if err != nil {
					return nil, fmt.Errorf("vmdk descriptor line %d: version %q is not a number", n, v)
				}
				d.Version = ver
			case k == "CID":
				d.CID = v
			case k == "parentCID":
				d.ParentCID = v
			case k == "createType":
				d.CreateType = v
			case strings.HasPrefix(k, "ddb."):
				d.DDB[k] = v
			}
			continue
		}
		e, err := parseExtent(line)
		if err != nil {
			return nil, fmt.Errorf("vmdk descriptor line %d: %w", n, err)
		}
		d.Extents = append(d.Extents, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("vmdk descriptor: %w", err)
	}
	if d.CreateType == "" {
		return nil, errors.New("vmdk descriptor: createType is missing")
	}
	if len(d.Extents) == 0 {
		return nil, errors.New("vmdk descriptor: no extents")
	}
	if d.ParentCID != "" && d.ParentCID != "ffffffff" {
		// A delta disk (snapshot) needs its parent; we convert whole disks.
		if _, ok := d.DDB["ddb.parentFileNameHint"]; ok {
			return nil, fmt.Errorf("vmdk descriptor: a snapshot delta (parentFileNameHint %q) is not a whole disk; convert its base or consolidate the snapshot first", d.DDB["ddb.parentFileNameHint"])
		}
	}
	return d, nil
}

// isExtentLine reports whether line starts with an access mode token,
// separated by any white space as qemu's sscanf reads it.
func isExtentLine(line string) bool {
	f := strings.Fields(line)
	if len(f) < 2 {
		return false
	}
	switch f[0] {
	case "RW", "RDONLY", "NOACCESS":
		return true
	}
	return false
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// parseExtent reads `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`.
func parseExtent(line string) (VMDKExtent, error) {
	var e VMDKExtent
	f := strings.Fields(line)
	if len(f) < 3 {
		return e, fmt.Errorf("extent %q: want ACCESS SECTORS TYPE \"FILE\"", line)
	}
	e.Access, e.Type = f[0], f[2]
	switch e.Access {
	case "RW", "RDONLY", "NOACCESS":
	default:
		return e, fmt.Errorf("extent %q: unknown access %q", line, e.Access)
	}
	s, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || s < 0 || s > 1<<50 {
		return e, fmt.Errorf("extent %q: bad sector count %q", line, f[1])
	}
	e.Sectors = s
	if e.Type == "ZERO" {
		return e, nil
	}
	rest := line[strings.Index(line, e.Type)+len(e.Type):]
	q1 := strings.IndexByte(rest, '"')
	q2 := -1
	if q1 >= 0 {
		q2 = strings.IndexByte(rest[q1+1:], '"')
	}
	if q1 < 0 || q2 < 0 {
		return e, fmt.Errorf("extent %q: file name must be in double quotes", line)
	}
	e.File = rest[q1+1 : q1+1+q2]
	if e.File == "" {
		return e, fmt.Errorf("extent %q: empty file name", line)
	}
	if tail := strings.TrimSpace(rest[q1+2+q2:]); tail != "" {
		off, err := strconv.ParseInt(strings.Fields(tail)[0], 10, 64)
		if err != nil || off < 0 {
			return e, fmt.Errorf("extent %q: bad offset %q", line, tail)
		}
		e.Offset = off
	}
	return e, nil
}

// ExtentPaths resolves the descriptor's extent files against dir (the
// directory holding the descriptor) and refuses any that would leave it: an
// image must not make the root-run worker read /etc/shadow.
func (d *VMDKDescriptor) ExtentPaths(dir string) ([]string, error) {
	var out []string
	for _, e := range d.Extents {
		if e.File == "" {
			continue
		}
		if filepath.IsAbs(e.File) || strings.Contains(e.File, "/") || strings.Contains(e.File, `\`) || e.File == ".." || e.File == "." {
			return nil, fmt.Errorf("vmdk extent %q: must be a file name beside the descriptor", e.File)
		}
		out = append(out, filepath.Join(dir, e.File))
	}
	return out, nil
}

// sparseHeader is the start of a hosted sparse extent (VMDK spec 5.0, "KDMV").
type sparseHeader struct {
	Magic              uint32
	Version            uint32
	Flags              uint32
	Capacity           uint64
	GrainSize          uint64
	DescriptorOffset   uint64
	DescriptorSize     uint64
	NumGTEsPerGT       uint32
	RGDOffset          uint64
	GDOffset           uint64
	OverHead           uint64
	UncleanShutdown    uint8
	SingleEndLineChar  byte
	NonEndLineChar     byte
	DoubleEndLineChar1 byte
	DoubleEndLineChar2 byte
	CompressAlgorithm  uint16
}

// ReadVMDKDescriptor returns the descriptor of the VMDK in r: the text itself
// for a descriptor file, or the descriptor embedded in a sparse extent.
func ReadVMDKDescriptor(r io.ReaderAt, size int64) (*VMDKDescriptor, error) {
	var h sparseHeader
	if err := binary.Read(io.NewSectionReader(r, 0, size), binary.LittleEndian, &h); err != nil {
		// Too short for a header: it can still be a small text descriptor.
		return ParseVMDKDescriptor(io.NewSectionReader(r, 0, size))
	}
	if h.Magic != 0x564d444b { // "KDMV" little-endian
		return ParseVMDKDescriptor(io.NewSectionReader(r, 0, size))
	}
	if h.DescriptorOffset == 0 || h.DescriptorSize == 0 {
		return nil, errors.New("vmdk sparse extent has no embedded descriptor")
	}
	off, n := int64(h.DescriptorOffset)*512, int64(h.DescriptorSize)*512
	if h.DescriptorOffset > 1<<40 || h.DescriptorSize > maxDescriptor/512 || off+n > size {
		return nil, fmt.Errorf("vmdk embedded descriptor at sector %d (%d sectors) lies outside the %d-byte file: truncated or corrupt", h.DescriptorOffset, h.DescriptorSize, size)
	}
	return ParseVMDKDescriptor(io.NewSectionReader(r, off, n))
}

// ReadVMDKDescriptorFile is ReadVMDKDescriptor for a file.
func ReadVMDKDescriptorFile(path string) (*VMDKDescriptor, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read vmdk descriptor: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot read vmdk descriptor: %w", err)
	}
	d, err := ReadVMDKDescriptor(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// vmdkSparseMagic is "KDMV" read as a little-endian uint32.
const vmdkSparseMagic = 0x564d444b

// qemuDescSize is how much descriptor text qemu's vmdk driver reads when
// it looks for a parent (DESC_SIZE in block/vmdk.c).
const qemuDescSize = 20 * 512

// SparseVMDK is what the header of a hosted sparse extent ("KDMV") tells
// about the files qemu opens beside it.
type SparseVMDK struct {
	Capacity uint64 // sectors
	// Defers is a header of capacity 0 pointing to an embedded descriptor:
	// qemu then opens the extents that descriptor names instead of reading
	// this file.
	Defers bool
	// Descriptor is the embedded descriptor text as qemu reads it: from the
	// descriptor offset up to the first NUL, at most 1 MiB (for a deferring
	// header qemu ignores the descriptor size field); nil without one.
	Descriptor []byte
	// DescriptorOffset is the byte offset of the embedded descriptor.
	DescriptorOffset int64
}

// ReadSparseVMDK reads the sparse extent header at the start of r (size
// bytes) and its embedded descriptor. It fails for anything that does not
// start with the "KDMV" magic.
func ReadSparseVMDK(r io.ReaderAt, size int64) (*SparseVMDK, error) {
	var h sparseHeader
	if err := binary.Read(io.NewSectionReader(r, 0, max(size, 0)), binary.LittleEndian, &h); err != nil {
		return nil, fmt.Errorf("cannot read vmdk sparse header: %w", err)
	}
	if h.Magic != vmdkSparseMagic {
		return nil, errors.New("not a vmdk sparse extent")
	}
	s := &SparseVMDK{Capacity: h.Capacity, Defers: h.Capacity == 0 && h.DescriptorOffset != 0}
	if h.DescriptorOffset == 0 {
		return s, nil
	}
	if h.DescriptorOffset > 1<<40 || int64(h.DescriptorOffset)*512 >= size {
		if s.Defers {
			return nil, fmt.Errorf("vmdk embedded descriptor at sector %d lies outside the %d-byte file", h.DescriptorOffset, size)
		}
		return s, nil
	}
	s.DescriptorOffset = int64(h.DescriptorOffset) * 512
	// As qemu's vmdk_read_desc: up to 1 MiB - 1 from the start of the
	// file, whatever the header's descriptor size says.
	want := min(size, maxDescriptor-1) - s.DescriptorOffset
	if want <= 0 {
		if s.Defers {
			return nil, fmt.Errorf("vmdk embedded descriptor at sector %d lies beyond the first MiB", h.DescriptorOffset)
		}
		return s, nil
	}
	buf := make([]byte, want)
	n, err := r.ReadAt(buf, s.DescriptorOffset)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("cannot read vmdk embedded descriptor: %w", err)
	}
	buf = buf[:n]
	if i := bytes.IndexByte(buf, 0); i >= 0 {
		buf = buf[:i]
	}
	s.Descriptor = buf
	return s, nil
}

// VMDKParentHint returns the parent (backing) file name qemu's vmdk driver
// takes from descriptor text: the first "parentFileNameHint" anywhere in
// its first 10 KiB, even in a comment, followed by two characters (`="`)
// and the name up to the next double quote. ok is false when there is
// none.
func VMDKParentHint(desc []byte) (name string, ok bool) {
	if len(desc) > qemuDescSize {
		desc = desc[:qemuDescSize]
	}
	if i := bytes.IndexByte(desc, 0); i >= 0 {
		desc = desc[:i]
	}
	const key = "parentFileNameHint"
	i := bytes.Index(desc, []byte(key))
	if i < 0 {
		return "", false
	}
	rest := desc[min(i+len(key)+2, len(desc)):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		// qemu refuses such a descriptor; nothing is opened.
		return "", false
	}
	return string(rest[:j]), true
}

// RewriteVMDKExtents returns descriptor text with the file name of every
// extent line replaced by rename(i, name) (i counts extent lines with a
// file), every other byte unchanged. qemu then opens the renamed files.
func RewriteVMDKExtents(desc []byte, rename func(i int, name string) string) ([]byte, error) {
	var out bytes.Buffer
	i := 0
	for _, line := range bytes.SplitAfter(desc, []byte("\n")) {
		// The lines ParseVMDKDescriptor takes for extents: anything but
		// blanks, comments and key=value lines.
		trimmed := strings.TrimSpace(strings.TrimRight(string(line), "\x00"))
		if trimmed == "" || strings.HasPrefix(trimmed, "#") || (strings.Contains(trimmed, "=") && !isExtentLine(trimmed)) {
			out.Write(line)
			continue
		}
		e, err := parseExtent(trimmed)
		if err != nil {
			return nil, err
		}
		if e.File == "" {
			out.Write(line)
			continue
		}
		// The name is the first quoted string after the type, as parseExtent
		// and qemu read it.
		start := bytes.Index(line, []byte(trimmed)) + strings.Index(trimmed, e.Type) + len(e.Type)
		q1 := bytes.IndexByte(line[start:], '"') + start
		q2 := bytes.IndexByte(line[q1+1:], '"') + q1 + 1
		out.Write(line[:q1+1])
		out.WriteString(rename(i, e.File))
		out.Write(line[q2:])
		i++
	}
	return out.Bytes(), nil
}

// Package lvm reads LVM2 physical volumes and their text metadata in Go,
// so INSPECT can find a guest's logical volumes and the native backend can
// open a linear one by its byte range on the disk, the way it opens a
// partition, without device-mapper and without ever activating the guest's
// volume group on the host (a guest's "rhel" VG must not meet the host's,
// or another job's). Everything read is guest data: sizes and offsets are
// bounded and checked, and a malformed PV or metadata text is an error,
// never a panic.
package lvm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// SectorSize is LVM2's unit for pe_start and extent_size.
const SectorSize = 512

// MaxMetadata bounds the metadata text read from a PV.
const MaxMetadata = 4 << 20

// PV is a physical volume's label and the metadata text it carries.
type PV struct {
	UUID     string // with LVM's dashes: 6-4-4-4-4-4-6
	Size     int64  // device size the label records, bytes
	Metadata string // the newest metadata text, "" when the PV carries none
}

// ReadPV reads the LVM2 label at off (a partition or a whole disk) of size
// bytes. It returns nil and no error when there is no LVM2 label.
func ReadPV(r io.ReaderAt, off, size int64) (*PV, error) {
	if size < 4*SectorSize {
		return nil, nil
	}
	head := make([]byte, 4*SectorSize)
	if _, err := r.ReadAt(head, off); err != nil && err != io.EOF {
		return nil, fmt.Errorf("cannot read the LVM label: %w", err)
	}
	for s := 0; s < 4; s++ {
		l := head[s*SectorSize : (s+1)*SectorSize]
		if !bytes.Equal(l[:8], []byte("LABELONE")) || !bytes.Equal(l[24:32], []byte("LVM2 001")) {
			continue
		}
		if binary.LittleEndian.Uint64(l[8:]) != uint64(s) {
			continue
		}
		ho := int(binary.LittleEndian.Uint32(l[20:]))
		if ho < 32 || ho+32+8+16 > SectorSize {
			return nil, fmt.Errorf("LVM label: pv_header offset %d out of the label sector", ho)
		}
		return readPVHeader(r, off, size, l[ho:])
	}
	return nil, nil
}

func readPVHeader(r io.ReaderAt, off, size int64, h []byte) (*PV, error) {
	pv := &PV{UUID: dashed(string(h[:32])), Size: int64(binary.LittleEndian.Uint64(h[32:]))}
	// Two lists of (offset, size) disk locations, each ended by a zero
	// entry: data areas, then metadata areas.
	p := 40
	var mdas [][2]int64
	for list := 0; list < 2; list++ {
		for {
			if p+16 > len(h) {
				return nil, errors.New("LVM label: disk area lists run past the label sector")
			}
			o, n := int64(binary.LittleEndian.Uint64(h[p:])), int64(binary.LittleEndian.Uint64(h[p+8:]))
			p += 16
			if o == 0 {
				break
			}
			if list == 1 {
				mdas = append(mdas, [2]int64{o, n})
			}
		}
	}
	for _, m := range mdas {
		text, err := readMDA(r, off, size, m[0], m[1])
		if err != nil {
			return nil, err
		}
		if text != "" {
			pv.Metadata = text
			break
		}
	}
	return pv, nil
}

// mdaMagic starts every metadata area header.
var mdaMagic = []byte(" LVM2 x[5A%r0N*>")

const mdaHeaderSize = 512

// readMDA reads the current metadata text of the metadata area at mo (from
// the PV's start) of ms bytes: a header, then a circular buffer.
func readMDA(r io.ReaderAt, off, size, mo, ms int64) (string, error) {
	if mo < 0 || ms < 2*mdaHeaderSize || mo > size || ms > size-mo {
		return "", fmt.Errorf("LVM metadata area at %d (%d bytes) is outside the %d-byte volume", mo, ms, size)
	}
	h := make([]byte, mdaHeaderSize)
	if _, err := r.ReadAt(h, off+mo); err != nil && err != io.EOF {
		return "", fmt.Errorf("cannot read the LVM metadata area: %w", err)
	}
	if !bytes.Equal(h[4:20], mdaMagic) {
		return "", errors.New("LVM metadata area: bad magic")
	}
	// raw_locn[0]: offset (from the area's start), size, checksum, flags.
	lo, ln := int64(binary.LittleEndian.Uint64(h[40:])), int64(binary.LittleEndian.Uint64(h[48:]))
	if lo == 0 || ln == 0 {
		return "", nil
	}
	if lo < mdaHeaderSize || lo >= ms || ln > ms-mdaHeaderSize || ln > MaxMetadata {
		return "", fmt.Errorf("LVM metadata text at %d (%d bytes) is outside its %d-byte area", lo, ln, ms)
	}
	buf := make([]byte, ln)
	first := min(ln, ms-lo)
	if _, err := r.ReadAt(buf[:first], off+mo+lo); err != nil && err != io.EOF {
		return "", fmt.Errorf("cannot read the LVM metadata text: %w", err)
	}
	if first < ln { // wrapped around the circular buffer
		if _, err := r.ReadAt(buf[first:], off+mo+mdaHeaderSize); err != nil && err != io.EOF {
			return "", fmt.Errorf("cannot read the LVM metadata text: %w", err)
		}
	}
	return string(bytes.TrimRight(buf, "\x00")), nil
}

// dashed writes a 32-character PV/VG/LV id the way LVM prints it.
func dashed(id string) string {
	if len(id) != 32 {
		return id
	}
	return id[0:6] + "-" + id[6:10] + "-" + id[10:14] + "-" + id[14:18] + "-" + id[18:22] + "-" + id[22:26] + "-" + id[26:32]
}

// VG is a volume group as its metadata describes it.
type VG struct {
	Name       string
	ID         string
	Seqno      int64
	ExtentSize int64           // bytes
	PVs        map[string]VGPV // by the metadata's name: pv0, pv1, ...
	LVs        []LV
}

// VGPV is a PV as the VG metadata names it.
type VGPV struct {
	ID      string
	PEStart int64 // bytes from the PV's start to its first extent
	PECount int64
}

// LV is a logical volume and its segments.
type LV struct {
	Name     string
	Visible  bool
	Segments []Segment
}

// Segment maps extents of an LV.
type Segment struct {
	StartExtent, ExtentCount int64
	Type                     string // striped (linear when one stripe), thin, raid1, ...
	Stripes                  []Stripe
}

// Stripe is where a segment's extents are: a PV (by its metadata name) and
// the first extent on it.
type Stripe struct {
	PV     string
	Extent int64
}

// Range is a byte range of a PV.
type Range struct {
	PVID   string
	Offset int64 // bytes from the PV's start
	Size   int64
}

// Linear returns the byte range holding lv when it is linear and its
// extents are contiguous on one PV: the native backend opens it like a
// partition. Anything else (striped, mirrored, thin, cached LVs, or a
// linear LV in pieces) is an error that says so.
func (vg *VG) Linear(lv LV) (Range, error) {
	segs := append([]Segment(nil), lv.Segments...)
	sort.Slice(segs, func(i, j int) bool { return segs[i].StartExtent < segs[j].StartExtent })
	var r Range
	next, nextPE := int64(0), int64(0)
	var pvName string
	for i, s := range segs {
		if s.Type != "striped" || len(s.Stripes) != 1 {
			return Range{}, fmt.Errorf("LV %s/%s: segment type %q with %d stripes is not linear", vg.Name, lv.Name, s.Type, len(s.Stripes))
		}
		st := s.Stripes[0]
		if s.StartExtent != next || s.ExtentCount <= 0 || st.Extent < 0 {
			return Range{}, fmt.Errorf("LV %s/%s: segments do not cover its extents in order", vg.Name, lv.Name)
		}
		if i > 0 && (st.PV != pvName || st.Extent != nextPE) {
			return Range{}, fmt.Errorf("LV %s/%s: extents are not contiguous on one PV", vg.Name, lv.Name)
		}
		pv, ok := vg.PVs[st.PV]
		if !ok {
			return Range{}, fmt.Errorf("LV %s/%s: unknown PV %q", vg.Name, lv.Name, st.PV)
		}
		if st.Extent+s.ExtentCount > pv.PECount && pv.PECount > 0 {
			return Range{}, fmt.Errorf("LV %s/%s: extents past the end of PV %s", vg.Name, lv.Name, st.PV)
		}
		if i == 0 {
			pvName = st.PV
			r = Range{PVID: pv.ID, Offset: pv.PEStart + st.Extent*vg.ExtentSize}
		}
		r.Size += s.ExtentCount * vg.ExtentSize
		next += s.ExtentCount
		nextPE = st.Extent + s.ExtentCount
	}
	if len(segs) == 0 {
		return Range{}, fmt.Errorf("LV %s/%s has no segments", vg.Name, lv.Name)
	}
	return r, nil
}

// MapperName is the LV's /dev/mapper name: VG-LV with each "-" doubled.
func MapperName(vg, lv string) string {
	return strings.ReplaceAll(vg, "-", "--") + "-" + strings.ReplaceAll(lv, "-", "--")
}

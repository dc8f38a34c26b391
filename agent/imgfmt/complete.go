package imgfmt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
)

// IncompleteError says an image file is not whole by what its own container
// format says: a writer has not finished it (or it was cut). Check names
// the rule that failed, as users see it in a report.
type IncompleteError struct {
	Format string
	Check  string
	Reason string
}

func (e *IncompleteError) Error() string {
	return fmt.Sprintf("%s is not complete (%s): %s", e.Format, e.Check, e.Reason)
}

// Check names of Complete.
const (
	CheckVMDKStream   = "vmdk end-of-stream marker"
	CheckVMDKTables   = "vmdk grain tables"
	CheckVHDFooter    = "vhd footer"
	CheckVHDBAT       = "vhd block allocation table"
	CheckVHDXTables   = "vhdx headers and tables"
	CheckQCOW2Tables  = "qcow2 tables"
	CheckOVATrailer   = "ova tar trailer"
	CheckOVAManifest  = "ova manifest checksums"
	maxTableBytes     = 64 << 20 // metadata read to check one image, at most
	vmdkGDAtEnd       = ^uint64(0)
	vmdkMarkerEOS     = 0
	vmdkMarkerFooter  = 3
	vhdxRegionTableAt = 192 << 10
)

// Complete detects the format of the image at path and checks that the
// file holds everything its container format says it holds: a
// streamOptimized VMDK's last grain lies inside the file, followed by a
// whole end-of-stream marker if anything (and, when its grain directory is
// at its end, its footer and end-of-stream marker end the file), a
// sparse VMDK's grain directory, tables and grains lie inside the file, a
// VHD ends with its footer (and a dynamic VHD's BAT and blocks fit), a
// VHDX's headers, region table, BAT and blocks fit, a qcow2's L1, L2 and
// refcount tables and clusters fit, and an OVA's tar ends with its trailer
// and its .mf checksums match. It reads headers and tables only, except
// for an OVA with a .mf, whose members it hashes once the tar is whole.
//
// It returns the detected format and nil when the file is whole, an
// *IncompleteError when it is not, and another error when it cannot be
// read. Raw images and descriptors have nothing to check.
//
// ext is the file name's extension (".vhd", ...) or "". A file whose bytes
// look raw but whose name says it is a VHD, VHDX, qcow2 or OVA is not
// complete: a fixed VHD without its footer, or a file whose first blocks
// are not written yet, looks raw.
func Complete(p, ext string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("cannot check %s: %w", p, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("cannot check %s: %w", p, err)
	}
	size := st.Size()
	if size == 0 {
		return Raw, nil
	}
	format, err := DetectReader(f, size)
	if err != nil {
		return "", fmt.Errorf("cannot check %s: %w", p, err)
	}
	if format == Raw && !maybeHeaderPrefix(f, size, ext) {
		// Text is no disk, however long one waits for it.
		if text, start, err := TextStart(f, size); err == nil && text {
			return "", &NotImageError{Path: p, Start: start}
		}
	}
	switch want := strings.TrimPrefix(strings.ToLower(ext), "."); {
	case format != Raw:
	case want == VMDK && size%512 != 0:
		// Not a descriptor nor a sparse extent; a flat extent is whole sectors.
		return VMDK, incomplete(VMDK, CheckVMDKTables, "the %d-byte file is neither a descriptor, a sparse extent nor whole sectors of a flat extent", size)
	case want == "vhd":
		return VPC, incomplete("vhd", CheckVHDFooter, "the last 512 bytes of the %d-byte file are not a VHD footer", size)
	case want == VHDX:
		return VHDX, incomplete(VHDX, CheckVHDXTables, "the file does not start with a VHDX file identifier")
	case want == QCOW2:
		return QCOW2, incomplete(QCOW2, CheckQCOW2Tables, "the file does not start with a qcow2 header")
	case want == OVA:
		return OVA, incomplete(OVA, CheckOVATrailer, "the file does not start with a tar header")
	}
	switch format {
	case VMDK:
		err = vmdkComplete(f, size)
	case VPC:
		err = vhdComplete(f, size)
	case VHDX:
		err = vhdxComplete(f, size)
	case QCOW2:
		err = qcow2Complete(f, size)
	case OVA:
		err = ovaComplete(f, size)
	}
	return format, err
}

func incomplete(format, check, reason string, args ...any) error {
	return &IncompleteError{Format: format, Check: check, Reason: fmt.Sprintf(reason, args...)}
}

// readAt reads exactly len(b) bytes at off; a short read is io.ErrUnexpectedEOF.
func readAt(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// fits reports whether [off, off+n) lies inside a file of size bytes,
// without overflowing.
func fits(off, n uint64, size int64) bool {
	return off <= uint64(size) && n <= uint64(size)-off
}

// vmdkComplete checks a hosted sparse extent (a "KDMV" header). A
// descriptor file has nothing in it to check.
func vmdkComplete(r io.ReaderAt, size int64) error {
	var h [512]byte
	if err := readAt(r, h[:], 0); err != nil {
		if binary.LittleEndian.Uint32(h[:]) == vmdkSparseMagic {
			return incomplete(VMDK, CheckVMDKTables, "the file ends inside its 512-byte header")
		}
		return nil
	}
	if binary.LittleEndian.Uint32(h[:]) != vmdkSparseMagic {
		return nil // a descriptor
	}
	gdOffset := binary.LittleEndian.Uint64(h[56:])
	// Flag bit 17: the grains are preceded by markers, as in a
	// streamOptimized file, whose header may give a grain directory the
	// footer supersedes.
	stream := gdOffset == vmdkGDAtEnd || binary.LittleEndian.Uint32(h[8:])&(1<<17) != 0
	footer := gdOffset == vmdkGDAtEnd
	if footer {
		// The footer (a footer marker, a copy of the header with the real
		// grain directory offset) and the end-of-stream marker are the
		// last three sectors of a streamOptimized file, written last.
		if size < 512+1536 {
			return incomplete(VMDK, CheckVMDKStream, "the file is %d bytes, too short for a footer and end-of-stream marker", size)
		}
		var tail [1536]byte
		if err := readAt(r, tail[:], size-1536); err != nil {
			return fmt.Errorf("cannot read vmdk footer: %w", err)
		}
		eos := tail[1024:]
		if !(binary.LittleEndian.Uint32(tail[12:]) == vmdkMarkerFooter &&
			binary.LittleEndian.Uint32(tail[512:]) == vmdkSparseMagic &&
			binary.LittleEndian.Uint32(eos[8:]) == 0 && binary.LittleEndian.Uint32(eos[12:]) == vmdkMarkerEOS &&
			binary.LittleEndian.Uint64(eos[0:]) == 0) {
			return incomplete(VMDK, CheckVMDKStream, "the last 1536 bytes of the %d-byte file are not a footer and an end-of-stream marker", size)
		}
		copy(h[:], tail[512:1024])
		gdOffset = binary.LittleEndian.Uint64(h[56:])
	}
	check := CheckVMDKTables
	if stream {
		check = CheckVMDKStream
	}
	capacity := binary.LittleEndian.Uint64(h[12:])
	grain := binary.LittleEndian.Uint64(h[20:])
	perGT := uint64(binary.LittleEndian.Uint32(h[44:]))
	if capacity == 0 {
		return nil // defers to an embedded descriptor: no grains here
	}
	if grain == 0 || grain > 1<<20 || perGT == 0 || perGT > 1<<20 {
		return incomplete(VMDK, check, "the header's grain size %d or grain table size %d is invalid", grain, perGT)
	}
	span := grain * perGT
	gdEntries := capacity/span + boolInt(capacity%span != 0)
	if gdEntries > uint64(size)/4 {
		return incomplete(VMDK, check, "a grain directory of %d entries cannot fit the %d-byte file", gdEntries, size)
	}
	if gdOffset > uint64(size)/512 || !fits(gdOffset*512, gdEntries*4, size) {
		return incomplete(VMDK, check, "the grain directory (sector %d, %d entries) does not fit the %d-byte file", gdOffset, gdEntries, size)
	}
	if gdEntries*4 > maxTableBytes {
		return nil // too large to read cheaply; the header fits
	}
	gd := make([]byte, gdEntries*4)
	if err := readAt(r, gd, int64(gdOffset*512)); err != nil {
		return fmt.Errorf("cannot read vmdk grain directory: %w", err)
	}
	gt := make([]byte, perGT*4)
	read := uint64(len(gd))
	var lastGrain uint64
	for i := range gdEntries {
		gtOff := uint64(binary.LittleEndian.Uint32(gd[i*4:]))
		if gtOff == 0 {
			continue
		}
		if !fits(gtOff*512, perGT*4, size) {
			return incomplete(VMDK, check, "grain table %d (sector %d) lies past the end of the %d-byte file", i, gtOff, size)
		}
		if read += perGT * 4; read > maxTableBytes {
			return nil
		}
		if err := readAt(r, gt, int64(gtOff*512)); err != nil {
			return fmt.Errorf("cannot read vmdk grain table %d: %w", i, err)
		}
		for j := range perGT {
			g := uint64(binary.LittleEndian.Uint32(gt[j*4:]))
			if g <= 1 { // unallocated, or a zeroed grain
				continue
			}
			need := grain * 512
			if stream {
				need = 512 // a grain marker; compressed data follows
			}
			if !fits(g*512, need, size) {
				return incomplete(VMDK, check, "grain %d lies past the end of the %d-byte file", i*perGT+j, size)
			}
			lastGrain = max(lastGrain, g)
		}
	}
	if stream {
		return vmdkStreamEnd(r, size, lastGrain, footer)
	}
	return nil
}

// vmdkStreamEnd checks that the last grain of a stream (by the grain
// tables, whose marker gives the length of its compressed data) lies
// inside the file, and that what follows it, if anything, is at least a
// whole end-of-stream marker. qemu writes the grain tables at the start
// of the file and no footer, and its last grain may end the file.
func vmdkStreamEnd(r io.ReaderAt, size int64, lastGrain uint64, footer bool) error {
	if lastGrain == 0 {
		return nil
	}
	if size%512 != 0 {
		// Markers, grains and the footer are sector-aligned.
		return incomplete(VMDK, CheckVMDKStream, "the %d-byte file is not whole sectors", size)
	}
	var m [12]byte
	if err := readAt(r, m[:], int64(lastGrain*512)); err != nil {
		return incomplete(VMDK, CheckVMDKStream, "the last grain's marker (sector %d) is cut", lastGrain)
	}
	n := uint64(binary.LittleEndian.Uint32(m[8:]))
	if !fits(lastGrain*512, 12+n, size) {
		return incomplete(VMDK, CheckVMDKStream, "the last grain (sector %d, %d bytes) runs past the end of the %d-byte file", lastGrain, n, size)
	}
	if tail := size - int64((lastGrain*512+12+n+511)/512*512); !footer && tail > 0 && tail < 512 {
		return incomplete(VMDK, CheckVMDKStream, "the %d-byte file ends inside the end-of-stream marker after its last grain", size)
	}
	return nil
}

func boolInt(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// vhdComplete checks that a VHD ends with its footer and, for a dynamic or
// differencing VHD, that its dynamic header, BAT and blocks fit the file.
func vhdComplete(r io.ReaderAt, size int64) error {
	if size < 512 {
		return incomplete("vhd", CheckVHDFooter, "the file is %d bytes, shorter than a footer", size)
	}
	var foot [512]byte
	if err := readAt(r, foot[:], size-512); err != nil {
		return fmt.Errorf("cannot read vhd footer: %w", err)
	}
	if string(foot[:8]) != "conectix" {
		return incomplete("vhd", CheckVHDFooter, "the last 512 bytes of the %d-byte file are not a VHD footer", size)
	}
	end := uint64(size - 512) // where the footer starts
	cur := binary.BigEndian.Uint64(foot[48:])
	switch binary.BigEndian.Uint32(foot[60:]) {
	case 2: // fixed
		if cur > end {
			return incomplete("vhd", CheckVHDFooter, "a fixed VHD of %d bytes needs a %d-byte file, this one is %d", cur, cur+512, size)
		}
		return nil
	case 3, 4:
	default:
		return nil
	}
	dataOff := binary.BigEndian.Uint64(foot[16:])
	if !fits(dataOff, 1024, int64(end)) {
		return incomplete("vhd", CheckVHDBAT, "the dynamic header (offset %d) does not fit before the footer", dataOff)
	}
	var dh [1024]byte
	if err := readAt(r, dh[:], int64(dataOff)); err != nil {
		return fmt.Errorf("cannot read vhd dynamic header: %w", err)
	}
	if string(dh[:8]) != "cxsparse" {
		return incomplete("vhd", CheckVHDBAT, "no dynamic header at offset %d", dataOff)
	}
	batOff := binary.BigEndian.Uint64(dh[16:])
	entries := uint64(binary.BigEndian.Uint32(dh[28:]))
	block := uint64(binary.BigEndian.Uint32(dh[32:]))
	if !fits(batOff, entries*4, int64(end)) {
		return incomplete("vhd", CheckVHDBAT, "the BAT (offset %d, %d entries) does not fit before the footer", batOff, entries)
	}
	if entries*4 > maxTableBytes || block == 0 {
		return nil
	}
	bat := make([]byte, entries*4)
	if err := readAt(r, bat, int64(batOff)); err != nil {
		return fmt.Errorf("cannot read vhd BAT: %w", err)
	}
	bitmap := (block/512/8 + 511) / 512 * 512
	for i := range entries {
		s := binary.BigEndian.Uint32(bat[i*4:])
		if s == 0xffffffff {
			continue
		}
		if !fits(uint64(s)*512, bitmap+block, int64(end)) {
			return incomplete("vhd", CheckVHDBAT, "block %d (sector %d) lies past the footer of the %d-byte file", i, s, size)
		}
	}
	return nil
}

// VHDX GUIDs as stored (the first three fields little-endian).
var (
	vhdxBATRegion   = []byte{0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08}
	vhdxMetaRegion  = []byte{0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e}
	vhdxFileParams  = []byte{0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b}
	vhdxDiskSize    = []byte{0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48, 0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8}
	vhdxLogicalSect = []byte{0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47, 0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f}
)

// vhdxComplete checks that a VHDX's headers, log, region table, metadata
// and BAT lie inside the file, and every block the BAT says is present.
func vhdxComplete(r io.ReaderAt, size int64) error {
	bad := func(reason string, args ...any) error { return incomplete(VHDX, CheckVHDXTables, reason, args...) }
	if size < 1<<20 {
		return bad("the file is %d bytes, shorter than the 1 MiB header section", size)
	}
	// The current header is the valid one with the higher sequence number.
	var best [80]byte
	var bestSeq uint64
	found := false
	for _, off := range []int64{64 << 10, 128 << 10} {
		var h [80]byte
		if err := readAt(r, h[:], off); err != nil {
			return fmt.Errorf("cannot read vhdx header: %w", err)
		}
		if string(h[:4]) == "head" {
			if seq := binary.LittleEndian.Uint64(h[8:]); !found || seq > bestSeq {
				best, bestSeq, found = h, seq, true
			}
		}
	}
	if !found {
		return bad("neither header at 64 KiB nor at 128 KiB is valid")
	}
	logLen := uint64(binary.LittleEndian.Uint32(best[68:]))
	logOff := binary.LittleEndian.Uint64(best[72:])
	if !fits(logOff, logLen, size) {
		return bad("the log (offset %d, %d bytes) does not fit the %d-byte file", logOff, logLen, size)
	}
	var rt [64 << 10]byte
	if err := readAt(r, rt[:], vhdxRegionTableAt); err != nil {
		return fmt.Errorf("cannot read vhdx region table: %w", err)
	}
	if string(rt[:4]) != "regi" {
		return bad("no region table at 192 KiB")
	}
	n := min(binary.LittleEndian.Uint32(rt[8:]), (uint32(len(rt))-16)/32)
	var batOff, batLen, metaOff, metaLen uint64
	for i := range n {
		e := rt[16+32*i : 16+32*(i+1)]
		off, l := binary.LittleEndian.Uint64(e[16:]), uint64(binary.LittleEndian.Uint32(e[24:]))
		if !fits(off, l, size) {
			return bad("region %d (offset %d, %d bytes) does not fit the %d-byte file", i, off, l, size)
		}
		switch {
		case bytes.Equal(e[:16], vhdxBATRegion):
			batOff, batLen = off, l
		case bytes.Equal(e[:16], vhdxMetaRegion):
			metaOff, metaLen = off, l
		}
	}
	if batLen == 0 || metaLen < 32 || metaLen > maxTableBytes || batLen > maxTableBytes {
		return bad("the region table names no usable BAT and metadata regions")
	}
	meta := make([]byte, metaLen)
	if err := readAt(r, meta, int64(metaOff)); err != nil {
		return fmt.Errorf("cannot read vhdx metadata: %w", err)
	}
	if string(meta[:8]) != "metadata" {
		return bad("no metadata table at offset %d", metaOff)
	}
	item := func(id []byte, n int) []byte {
		count := int(binary.LittleEndian.Uint16(meta[10:]))
		for i := 0; i < count && 32+32*(i+1) <= len(meta); i++ {
			e := meta[32+32*i:]
			if bytes.Equal(e[:16], id) {
				off := int(binary.LittleEndian.Uint32(e[16:]))
				if off >= 0 && off+n <= len(meta) {
					return meta[off : off+n]
				}
			}
		}
		return nil
	}
	fp, ds, ls := item(vhdxFileParams, 8), item(vhdxDiskSize, 8), item(vhdxLogicalSect, 4)
	if fp == nil || ds == nil || ls == nil {
		return bad("the metadata lacks the block size, disk size or sector size")
	}
	block := uint64(binary.LittleEndian.Uint32(fp))
	disk := binary.LittleEndian.Uint64(ds)
	sector := uint64(binary.LittleEndian.Uint32(ls))
	if block < 1<<20 || block > 256<<20 || (sector != 512 && sector != 4096) {
		return bad("block size %d or sector size %d is invalid", block, sector)
	}
	chunk := (uint64(1) << 23) * sector / block // payload blocks per sector bitmap block
	payload := disk/block + boolInt(disk%block != 0)
	total := payload
	if payload > 0 {
		total += (payload - 1) / chunk
	}
	if total*8 > batLen {
		return bad("the BAT region (%d bytes) is too small for %d entries", batLen, total)
	}
	bat := make([]byte, total*8)
	if err := readAt(r, bat, int64(batOff)); err != nil {
		return fmt.Errorf("cannot read vhdx BAT: %w", err)
	}
	for i := range total {
		e := binary.LittleEndian.Uint64(bat[i*8:])
		state, off := e&7, e>>20<<20
		bitmapEntry := (i+1)%(chunk+1) == 0
		need := block
		if bitmapEntry {
			need = 1 << 20
		}
		if (state == 6 || (state == 7 && !bitmapEntry)) && !fits(off, need, size) {
			return bad("BAT entry %d (offset %d) lies past the end of the %d-byte file", i, off, size)
		}
	}
	return nil
}

// qcow2Complete checks that a qcow2's L1, refcount table, refcount blocks,
// L2 tables and clusters lie inside the file.
func qcow2Complete(r io.ReaderAt, size int64) error {
	bad := func(reason string, args ...any) error { return incomplete(QCOW2, CheckQCOW2Tables, reason, args...) }
	var h [104]byte
	if err := readAt(r, h[:72], 0); err != nil {
		return bad("the file ends inside its header")
	}
	bits := binary.BigEndian.Uint32(h[20:])
	if bits < 9 || bits > 21 {
		return bad("cluster bits %d out of range", bits)
	}
	cluster := uint64(1) << bits
	l1Size := uint64(binary.BigEndian.Uint32(h[36:]))
	l1Off := binary.BigEndian.Uint64(h[40:])
	rtOff := binary.BigEndian.Uint64(h[48:])
	rtLen := uint64(binary.BigEndian.Uint32(h[56:])) * cluster
	if !fits(l1Off, l1Size*8, size) {
		return bad("the L1 table (offset %d, %d entries) does not fit the %d-byte file", l1Off, l1Size, size)
	}
	if !fits(rtOff, rtLen, size) {
		return bad("the refcount table (offset %d, %d bytes) does not fit the %d-byte file", rtOff, rtLen, size)
	}
	stride := uint64(8)
	external := false
	if binary.BigEndian.Uint32(h[4:]) >= 3 {
		if err := readAt(r, h[72:104], 72); err == nil {
			incompat := binary.BigEndian.Uint64(h[72:])
			if incompat&(1<<4) != 0 {
				stride = 16 // extended L2 entries
			}
			// An external data file (data_file=) holds the guest's
			// clusters: the L2 entries are offsets into it, not into
			// this file, whose tables alone must fit.
			external = incompat&(1<<2) != 0
		}
	}
	const offMask = 0x00fffffffffffe00
	budget := uint64(maxTableBytes)
	table := func(off, n uint64) ([]byte, bool, error) {
		if n > budget {
			return nil, false, nil
		}
		budget -= n
		b := make([]byte, n)
		return b, true, readAt(r, b, int64(off))
	}
	rt, ok, err := table(rtOff, rtLen)
	if err != nil {
		return fmt.Errorf("cannot read qcow2 refcount table: %w", err)
	}
	for i := 0; ok && i+8 <= len(rt); i += 8 {
		if b := binary.BigEndian.Uint64(rt[i:]) & offMask; b != 0 && !fits(b, cluster, size) {
			return bad("refcount block %d (offset %d) lies past the end of the %d-byte file", i/8, b, size)
		}
	}
	l1, ok, err := table(l1Off, l1Size*8)
	if err != nil || !ok {
		return err
	}
	cbits := 62 - (bits - 8) // where a compressed entry's sector count starts
	for i := 0; i+8 <= len(l1); i += 8 {
		l2Off := binary.BigEndian.Uint64(l1[i:]) & offMask
		if l2Off == 0 {
			continue
		}
		if !fits(l2Off, cluster, size) {
			return bad("L2 table %d (offset %d) lies past the end of the %d-byte file", i/8, l2Off, size)
		}
		l2, ok, err := table(l2Off, cluster)
		if err != nil {
			return fmt.Errorf("cannot read qcow2 L2 table: %w", err)
		}
		if !ok || external {
			// Too large to read cheaply, or its data lies in another
			// file: the tables fit.
			continue
		}
		for j := uint64(0); j+8 <= uint64(len(l2)); j += stride {
			e := binary.BigEndian.Uint64(l2[j:])
			if e&(1<<62) != 0 {
				off := e & (1<<cbits - 1)
				extra := (e >> cbits) & (1<<(bits-8) - 1)
				// The compressed data starts in sector off/512 and takes
				// extra more sectors; the last one may be partial.
				if !fits(off/512*512, extra*512+1, size) {
					return bad("a compressed cluster (offset %d) lies past the end of the %d-byte file", off, size)
				}
				continue
			}
			if d := e & offMask; d != 0 && !fits(d, cluster, size) {
				return bad("a data cluster (offset %d) lies past the end of the %d-byte file", d, size)
			}
		}
	}
	return nil
}

// ovaComplete checks that an OVA's tar ends with its trailer (two zero
// blocks, then only zero padding) and that the members its .mf names have
// the digests it lists.
func ovaComplete(r io.ReaderAt, size int64) error {
	var blk [512]byte
	var members []OVAMember
	off := int64(0)
	longName := ""
	for {
		if err := readAt(r, blk[:], off); err != nil {
			return incomplete(OVA, CheckOVATrailer, "the archive ends at byte %d without its trailer (after %d members)", size, len(members))
		}
		if blk == [512]byte{} {
			var next [512]byte
			if err := readAt(r, next[:], off+512); err != nil || next != [512]byte{} {
				return incomplete(OVA, CheckOVATrailer, "the archive ends at byte %d without its trailer (after %d members)", size, len(members))
			}
			break
		}
		if !tarChecksumOK(blk[:]) {
			return incomplete(OVA, CheckOVATrailer, "no valid tar header at byte %d (after %d members)", off, len(members))
		}
		n, ok := tarSize(blk[124:136])
		if !ok || n < 0 || n > size {
			return incomplete(OVA, CheckOVATrailer, "the tar header at byte %d has an invalid size", off)
		}
		data := off + 512
		if data+n > size {
			return incomplete(OVA, CheckOVATrailer, "member %d ends past the end of the %d-byte archive", len(members)+1, size)
		}
		name := cstr(blk[0:100])
		if p := cstr(blk[345:500]); p != "" && string(blk[257:262]) == "ustar" {
			name = p + "/" + name
		}
		switch blk[156] {
		case 'L': // GNU long name: the data is the next member's name
			b := make([]byte, min(n, 4096))
			if err := readAt(r, b, data); err == nil {
				longName = cstr(b)
			}
		case 'x', 'g', 'K':
		default:
			if longName != "" {
				name, longName = longName, ""
			}
			members = append(members, OVAMember{Name: name, Offset: data, Size: n})
		}
		off = data + (n+511)/512*512
	}
	// Past the trailer there may only be zero padding to the end of a record.
	rest := size - off - 1024
	if rest > 20*512 {
		return incomplete(OVA, CheckOVATrailer, "%d bytes follow the tar trailer at byte %d", rest, off)
	}
	if rest > 0 {
		pad := make([]byte, rest)
		if err := readAt(r, pad, off+1024); err != nil || !bytes.Equal(pad, make([]byte, rest)) {
			return incomplete(OVA, CheckOVATrailer, "data follows the tar trailer at byte %d", off)
		}
	}
	return ovaManifestOK(r, members)
}

// ovaManifestOK hashes the members the OVA's .mf names and compares.
func ovaManifestOK(r io.ReaderAt, members []OVAMember) error {
	byName := map[string]OVAMember{}
	var mf *OVAMember
	for i, m := range members {
		byName[path.Clean(m.Name)] = m
		if mf == nil && strings.HasSuffix(strings.ToLower(m.Name), ".mf") {
			mf = &members[i]
		}
	}
	if mf == nil {
		return nil
	}
	digests, err := ParseManifest(io.NewSectionReader(r, mf.Offset, mf.Size))
	if err != nil {
		return incomplete(OVA, CheckOVAManifest, "%s: %v", mf.Name, err)
	}
	for _, d := range digests {
		m, ok := byName[path.Clean(d.File)]
		if !ok {
			return incomplete(OVA, CheckOVAManifest, "%s names %s, which is not in the archive", mf.Name, d.File)
		}
		got, err := d.Sum(io.NewSectionReader(r, m.Offset, m.Size))
		if err != nil {
			return fmt.Errorf("cannot hash %s: %w", m.Name, err)
		}
		if got != d.Hex {
			return incomplete(OVA, CheckOVAManifest, "the %s digest of %s is %s, %s says %s", d.Algorithm, d.File, got, mf.Name, d.Hex)
		}
	}
	return nil
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// tarSize parses a tar header's size field: octal, or base-256 when the
// high bit of its first byte is set.
func tarSize(f []byte) (int64, bool) {
	if f[0]&0x80 != 0 {
		if f[0] != 0x80 || f[1]|f[2]|f[3] != 0 {
			return 0, false // negative or over 2^63
		}
		return int64(binary.BigEndian.Uint64(f[4:12])), true
	}
	s := strings.Trim(string(f), " \x00")
	if s == "" {
		return 0, true
	}
	n, err := strconv.ParseInt(s, 8, 64)
	return n, err == nil
}

// tarChecksumOK checks a tar header's checksum (unsigned, as POSIX says,
// or signed, as some old tars wrote it).
func tarChecksumOK(b []byte) bool {
	want, err := strconv.ParseInt(strings.Trim(string(b[148:156]), " \x00"), 8, 64)
	if err != nil {
		return false
	}
	var u, s int64
	for i, c := range b {
		if i >= 148 && i < 156 {
			c = ' '
		}
		u += int64(c)
		s += int64(int8(c))
	}
	return want == u || want == s
}

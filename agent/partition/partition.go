// Package partition parses MBR and GPT partition tables, and identifies the
// filesystem on a partition from its superblock (type, UUID, label). It reads
// untrusted bytes through an io.ReaderAt and never trusts a size or count it
// reads: every offset is bounds-checked against the disk size, and loops are
// bounded, so a hostile table yields an error, never a panic or a hang.
package partition

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf16"
)

// SectorSize is the logical sector size assumed for MBR and GPT.
const SectorSize = 512

// maxLogical bounds the EBR chain of an extended partition.
const maxLogical = 128

// Table is a parsed partition table.
type Table struct {
	Kind       string // mbr | gpt | none
	DiskGUID   string // GPT disk GUID
	DiskID     string // MBR disk signature, 8 hex digits
	Partitions []Partition
}

// Partition is one partition of a table.
type Partition struct {
	Number    int    // Linux numbering: MBR primaries 1-4, logicals from 5; GPT entry index + 1
	Start     int64  // bytes from the start of the disk
	Size      int64  // bytes
	Type      string // MBR: "0x83"; GPT: type GUID
	TypeName  string // linux, linux-swap, efi, bios-boot, extended, ntfs, lvm, ...
	PartUUID  string // what Linux calls PARTUUID
	PartLabel string // GPT name
	Bootable  bool
}

// Read parses the partition table of a disk of the given size. A disk with
// neither an MBR signature nor a GPT gives Kind "none" and no error.
func Read(r io.ReaderAt, size int64) (*Table, error) {
	if size < SectorSize {
		return nil, fmt.Errorf("cannot read partition table: disk of %d bytes is smaller than one sector", size)
	}
	mbr := make([]byte, SectorSize)
	if _, err := r.ReadAt(mbr, 0); err != nil {
		return nil, fmt.Errorf("cannot read MBR: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA {
		return &Table{Kind: "none"}, nil
	}
	// A protective MBR (type 0xEE) means the real table is the GPT.
	for i := 0; i < 4; i++ {
		if mbr[446+16*i+4] == 0xEE {
			return readGPT(r, size)
		}
	}
	return readMBR(r, size, mbr)
}

func readMBR(r io.ReaderAt, size int64, mbr []byte) (*Table, error) {
	sig := binary.LittleEndian.Uint32(mbr[440:444])
	t := &Table{Kind: "mbr", DiskID: fmt.Sprintf("%08x", sig)}
	var ext *mbrEntry
	for i := 0; i < 4; i++ {
		e := parseMBREntry(mbr[446+16*i:])
		if e.typ == 0 || e.sectors == 0 {
			continue
		}
		p, err := e.partition(i+1, 0, size, sig)
		if err != nil {
			return nil, err
		}
		t.Partitions = append(t.Partitions, p)
		if isExtended(e.typ) && ext == nil {
			ee := e
			ext = &ee
		}
	}
	if ext != nil {
		logical, err := readEBRChain(r, size, int64(ext.lba), sig)
		if err != nil {
			return nil, err
		}
		t.Partitions = append(t.Partitions, logical...)
	}
	return t, nil
}

type mbrEntry struct {
	boot    byte
	typ     byte
	lba     uint32
	sectors uint32
}

func parseMBREntry(b []byte) mbrEntry {
	return mbrEntry{
		boot:    b[0],
		typ:     b[4],
		lba:     binary.LittleEndian.Uint32(b[8:12]),
		sectors: binary.LittleEndian.Uint32(b[12:16]),
	}
}

func isExtended(t byte) bool { return t == 0x05 || t == 0x0F || t == 0x85 }

func (e mbrEntry) partition(num int, base int64, size int64, sig uint32) (Partition, error) {
	start := (base + int64(e.lba)) * SectorSize
	length := int64(e.sectors) * SectorSize
	if start <= 0 || start >= size || length > size-start {
		return Partition{}, fmt.Errorf("cannot use MBR partition %d: start %d size %d outside the disk of %d bytes", num, start, length, size)
	}
	return Partition{
		Number:   num,
		Start:    start,
		Size:     length,
		Type:     fmt.Sprintf("0x%02x", e.typ),
		TypeName: mbrTypeName(e.typ),
		PartUUID: fmt.Sprintf("%08x-%02x", sig, num),
		Bootable: e.boot == 0x80,
	}, nil
}

// readEBRChain follows the linked list of extended boot records. Each EBR's
// first entry is a logical partition relative to that EBR; its second entry
// points at the next EBR relative to the start of the extended partition.
func readEBRChain(r io.ReaderAt, size int64, extLBA int64, sig uint32) ([]Partition, error) {
	var out []Partition
	seen := map[int64]bool{}
	ebr := extLBA
	buf := make([]byte, SectorSize)
	for n := 5; n < 5+maxLogical; n++ {
		if seen[ebr] {
			return nil, fmt.Errorf("cannot read extended partition: EBR chain loops at sector %d", ebr)
		}
		seen[ebr] = true
		if ebr*SectorSize+SectorSize > size {
			return nil, fmt.Errorf("cannot read EBR at sector %d: outside the disk", ebr)
		}
		if _, err := r.ReadAt(buf, ebr*SectorSize); err != nil {
			return nil, fmt.Errorf("cannot read EBR at sector %d: %w", ebr, err)
		}
		if buf[510] != 0x55 || buf[511] != 0xAA {
			return nil, fmt.Errorf("cannot read EBR at sector %d: no boot signature", ebr)
		}
		e := parseMBREntry(buf[446:])
		if e.typ != 0 && e.sectors != 0 {
			p, err := e.partition(n, ebr, size, sig)
			if err != nil {
				return nil, err
			}
			out = append(out, p)
		}
		next := parseMBREntry(buf[462:])
		if next.typ == 0 || next.lba == 0 {
			return out, nil
		}
		ebr = extLBA + int64(next.lba)
	}
	return nil, fmt.Errorf("cannot read extended partition: more than %d logical partitions", maxLogical)
}

var gptSig = []byte("EFI PART")

// maxGPTEntries bounds how many entries are read whatever the header claims.
const maxGPTEntries = 1024

func readGPT(r io.ReaderAt, size int64) (*Table, error) {
	hdr := make([]byte, SectorSize)
	if _, err := r.ReadAt(hdr, SectorSize); err != nil {
		return nil, fmt.Errorf("cannot read GPT header: %w", err)
	}
	if !bytes.Equal(hdr[:8], gptSig) {
		return nil, errors.New("cannot read GPT: protective MBR but no GPT header at sector 1")
	}
	hsize := binary.LittleEndian.Uint32(hdr[12:16])
	if hsize < 92 || hsize > SectorSize {
		return nil, fmt.Errorf("cannot read GPT: header size %d out of range", hsize)
	}
	want := binary.LittleEndian.Uint32(hdr[16:20])
	h := append([]byte(nil), hdr[:hsize]...)
	binary.LittleEndian.PutUint32(h[16:20], 0)
	if got := crc32.ChecksumIEEE(h); got != want {
		return nil, fmt.Errorf("cannot read GPT: header CRC %08x, expected %08x", got, want)
	}
	entriesLBA := int64(binary.LittleEndian.Uint64(hdr[72:80]))
	count := binary.LittleEndian.Uint32(hdr[80:84])
	esize := binary.LittleEndian.Uint32(hdr[84:88])
	if esize < 128 || esize > 4096 || esize%8 != 0 {
		return nil, fmt.Errorf("cannot read GPT: entry size %d out of range", esize)
	}
	if count == 0 || count > maxGPTEntries {
		return nil, fmt.Errorf("cannot read GPT: %d entries out of range", count)
	}
	total := int64(count) * int64(esize)
	if entriesLBA < 2 || entriesLBA > size/SectorSize || total > size-entriesLBA*SectorSize {
		return nil, fmt.Errorf("cannot read GPT: entry array at sector %d outside the disk", entriesLBA)
	}
	arr := make([]byte, total)
	if _, err := r.ReadAt(arr, entriesLBA*SectorSize); err != nil {
		return nil, fmt.Errorf("cannot read GPT entries: %w", err)
	}
	if got, want := crc32.ChecksumIEEE(arr), binary.LittleEndian.Uint32(hdr[88:92]); got != want {
		return nil, fmt.Errorf("cannot read GPT: entry array CRC %08x, expected %08x", got, want)
	}
	t := &Table{Kind: "gpt", DiskGUID: guid(hdr[56:72])}
	for i := 0; i < int(count); i++ {
		e := arr[i*int(esize) : (i+1)*int(esize)]
		if allZero(e[0:16]) {
			continue
		}
		first := int64(binary.LittleEndian.Uint64(e[32:40]))
		last := int64(binary.LittleEndian.Uint64(e[40:48]))
		if first <= 0 || last < first || last >= size/SectorSize {
			return nil, fmt.Errorf("cannot use GPT partition %d: sectors %d-%d outside the disk", i+1, first, last)
		}
		typ := guid(e[0:16])
		t.Partitions = append(t.Partitions, Partition{
			Number:    i + 1,
			Start:     first * SectorSize,
			Size:      (last - first + 1) * SectorSize,
			Type:      typ,
			TypeName:  gptTypeName(typ),
			PartUUID:  guid(e[16:32]),
			PartLabel: utf16le(e[56:128]),
			Bootable:  binary.LittleEndian.Uint64(e[48:56])&(1<<2) != 0,
		})
	}
	return t, nil
}

// guid formats a mixed-endian GUID as Linux prints it (lowercase).
func guid(b []byte) string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(b[0:4]), binary.LittleEndian.Uint16(b[4:6]),
		binary.LittleEndian.Uint16(b[6:8]), b[8:10], b[10:16])
}

func utf16le(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return strings.ToValidUTF8(string(utf16.Decode(u)), "?")
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func mbrTypeName(t byte) string {
	switch t {
	case 0x83:
		return "linux"
	case 0x82:
		return "linux-swap"
	case 0x8E:
		return "lvm"
	case 0xFD:
		return "raid"
	case 0xEF:
		return "efi"
	case 0x07:
		return "ntfs"
	case 0x0B, 0x0C, 0x0E, 0x06, 0x04, 0x01:
		return "fat"
	case 0x27:
		return "windows-recovery"
	case 0x42:
		// Windows dynamic disk (Logical Disk Manager).
		return "windows-ldm"
	case 0x05, 0x0F, 0x85:
		return "extended"
	}
	return "unknown"
}

func gptTypeName(g string) string {
	switch g {
	case "0fc63daf-8483-4772-8e79-3d69d8477de4", "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "44479540-f297-41b2-9af7-d131d5f0458a":
		return "linux"
	case "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f":
		return "linux-swap"
	case "e6d6d379-f507-44c2-a23c-238f2a3df928":
		return "lvm"
	case "a19d880f-05fc-4d3b-a006-743f0f84911e":
		return "raid"
	case "c12a7328-f81f-11d2-ba4b-00a0c93ec93b":
		return "efi"
	case "21686148-6449-6e6f-744e-656564454649":
		return "bios-boot"
	case "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7":
		return "ntfs"
	case "e3c9e316-0b5c-4db8-817d-f92df00215ae":
		return "windows-reserved"
	case "5808c8aa-7e8f-42e0-85d2-e1e90434cfb3", "af9b60a0-1431-4f62-bc68-3311714a69ad":
		// Windows dynamic disk: LDM metadata and LDM data.
		return "windows-ldm"
	case "de94bba4-06d1-4d40-a16a-bfd50179d6ac":
		return "windows-recovery"
	case "bc13c2ff-59e6-4262-a352-b275fd6f7172":
		return "linux-xbootldr"
	}
	return "unknown"
}

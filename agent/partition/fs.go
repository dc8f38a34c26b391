package partition

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// FS is what a filesystem's superblock says about it.
type FS struct {
	Type  string // ext2 ext3 ext4 xfs btrfs swap vfat ntfs crypto_LUKS linux_raid_member, or "" when unknown
	UUID  string
	Label string
	// Dirty is an ext3/ext4 journal that needs recovery (the guest was not
	// shut down cleanly): a read-write mount replays it, changing the disk.
	Dirty bool
	// Free is the free space the superblock records (ext2/3/4, xfs), when
	// HasFree: the count as of the last unmount, so approximate.
	Free    int64
	HasFree bool
}

// probeLen covers every superblock Probe looks at (btrfs is at 64 KiB).
const probeLen = 65536 + 4096

// Probe identifies the filesystem of the size bytes at off (a partition, or
// the whole disk) by its superblock. An unknown filesystem is FS{} and no error.
func Probe(r io.ReaderAt, off, size int64) (FS, error) {
	n := int64(probeLen)
	if size < n {
		n = size
	}
	if n < 0 {
		return FS{}, fmt.Errorf("cannot probe filesystem: negative size %d", size)
	}
	b := make([]byte, n)
	if _, err := r.ReadAt(b, off); err != nil && err != io.EOF {
		return FS{}, fmt.Errorf("cannot read superblock at %d: %w", off, err)
	}
	if md, ok := mdAt(b, 0); ok { // md 1.1
		return md, nil
	}
	if md, ok := mdAt(b, 4096); ok { // md 1.2
		return md, nil
	}
	// md 1.0 and 0.90 keep their superblock at the end, and a mirror leg
	// then starts with the filesystem itself: writing through it would
	// desynchronize the mirror, so it must not look like a plain
	// filesystem.
	for _, at := range []int64{((size >> 9) - 16) &^ 7 << 9, (size&^0xFFFF - 0x10000)} {
		if at <= 0 || at+mdSBLen > size {
			continue
		}
		sb := make([]byte, mdSBLen)
		if _, err := r.ReadAt(sb, off+at); err != nil && err != io.EOF {
			return FS{}, fmt.Errorf("cannot read the md superblock at %d: %w", off+at, err)
		}
		if md, ok := mdAt(sb, 0); ok {
			return md, nil
		}
	}
	return ProbeBytes(b), nil
}

// mdSBLen covers the fields of an md superblock Probe reads.
const mdSBLen = 512

// mdAt recognises an md RAID superblock (0.90 or 1.x) at off of b.
func mdAt(b []byte, off int) (FS, bool) {
	if off < 0 || off+64 > len(b) || binary.LittleEndian.Uint32(b[off:]) != 0xa92b4efc {
		return FS{}, false
	}
	switch binary.LittleEndian.Uint32(b[off+4:]) {
	case 1:
		return FS{Type: "linux_raid_member", UUID: uuid(b[off+16 : off+32]), Label: cstr(b[off+32 : off+64])}, true
	case 0:
		return FS{Type: "linux_raid_member"}, true
	}
	return FS{}, false
}

// ProbeBytes identifies a filesystem from the first bytes of a partition.
func ProbeBytes(b []byte) FS {
	at := func(off, n int) []byte {
		if off < 0 || off+n > len(b) {
			return nil
		}
		return b[off : off+n]
	}
	// LUKS first: its header sits where other superblocks would.
	if m := at(0, 6); bytes.Equal(m, []byte("LUKS\xba\xbe")) {
		return FS{Type: "crypto_LUKS", UUID: cstr(at(168, 40)), Label: cstr(at(24, 48))}
	}
	if m := at(1024+0x38, 2); m != nil && binary.LittleEndian.Uint16(m) == 0xEF53 {
		sb := at(1024, 1024)
		if sb == nil {
			return FS{}
		}
		compat := binary.LittleEndian.Uint32(sb[0x5C:])
		incompat := binary.LittleEndian.Uint32(sb[0x60:])
		roCompat := binary.LittleEndian.Uint32(sb[0x64:])
		t := "ext2"
		if compat&0x4 != 0 { // has_journal
			t = "ext3"
		}
		// extents, 64bit, flex_bg, or ro_compat beyond ext3's mean ext4.
		if incompat&(0x40|0x80|0x200) != 0 || roCompat&^0x7 != 0 {
			t = "ext4"
		}
		fs := FS{Type: t, UUID: uuid(sb[0x68:0x78]), Label: cstr(sb[0x78:0x88]), Dirty: compat&0x4 != 0 && incompat&0x4 != 0}
		free := uint64(binary.LittleEndian.Uint32(sb[0x0C:]))
		if incompat&0x80 != 0 { // 64bit: the high half
			free |= uint64(binary.LittleEndian.Uint32(sb[0x158:])) << 32
		}
		if logBS := binary.LittleEndian.Uint32(sb[0x18:]); logBS <= 6 && free < 1<<40 {
			fs.Free, fs.HasFree = int64(free<<(10+logBS)), true
		}
		return fs
	}
	if m := at(0, 4); bytes.Equal(m, []byte("XFSB")) {
		fs := FS{Type: "xfs", UUID: uuid(at(32, 16)), Label: cstr(at(108, 12))}
		if bs, fd := at(4, 4), at(144, 8); bs != nil && fd != nil {
			blk, free := uint64(binary.BigEndian.Uint32(bs)), binary.BigEndian.Uint64(fd)
			if blk >= 512 && blk <= 65536 && free < 1<<40 {
				fs.Free, fs.HasFree = int64(free*blk), true
			}
		}
		return fs
	}
	if m := at(65536+0x40, 8); bytes.Equal(m, []byte("_BHRfS_M")) {
		return FS{Type: "btrfs", UUID: uuid(at(65536+0x20, 16)), Label: cstr(at(65536+0x12B, 256))}
	}
	for _, ps := range []int{4096, 8192, 16384, 65536} {
		if m := at(ps-10, 10); bytes.Equal(m, []byte("SWAPSPACE2")) {
			return FS{Type: "swap", UUID: uuid(at(1024+12, 16)), Label: cstr(at(1024+28, 16))}
		}
	}
	if m := at(3, 8); bytes.Equal(m, []byte("NTFS    ")) {
		serial := at(0x48, 8)
		return FS{Type: "ntfs", UUID: fmt.Sprintf("%016X", binary.LittleEndian.Uint64(serial))}
	}
	// A BitLocker volume keeps an NTFS-like boot sector whose OEM id is
	// "-FVE-FS-" (blkid's "BitLocker"); its contents are encrypted.
	if m := at(3, 8); bytes.Equal(m, []byte("-FVE-FS-")) {
		return FS{Type: "BitLocker"}
	}
	if at(510, 2) != nil && b[510] == 0x55 && b[511] == 0xAA {
		if m := at(0x52, 8); bytes.HasPrefix(m, []byte("FAT32")) {
			return FS{Type: "vfat", UUID: fatSerial(at(0x43, 4)), Label: fatLabel(at(0x47, 11))}
		}
		if m := at(0x36, 8); bytes.HasPrefix(m, []byte("FAT1")) {
			return FS{Type: "vfat", UUID: fatSerial(at(0x27, 4)), Label: fatLabel(at(0x2B, 11))}
		}
	}
	return FS{}
}

func uuid(b []byte) string {
	if len(b) != 16 || allZero(b) {
		return ""
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func fatSerial(b []byte) string {
	v := binary.LittleEndian.Uint32(b)
	return fmt.Sprintf("%04X-%04X", v>>16, v&0xFFFF)
}

func fatLabel(b []byte) string {
	l := strings.TrimRight(string(b), " \x00")
	if l == "NO NAME" {
		return ""
	}
	return strings.ToValidUTF8(l, "?")
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.ToValidUTF8(strings.TrimSpace(string(b)), "?")
}

package partition

import (
	"encoding/binary"
	"testing"
)

// TestProbeDirtyJournal: an ext3/ext4 superblock with needs_recovery is
// Dirty (a read-write mount would replay its journal); a clean one or an
// ext2 without a journal is not.
func TestProbeDirtyJournal(t *testing.T) {
	sb := func(compat, incompat uint32) []byte {
		b := make([]byte, 4096)
		binary.LittleEndian.PutUint16(b[1024+0x38:], 0xEF53)
		binary.LittleEndian.PutUint32(b[1024+0x5C:], compat)
		binary.LittleEndian.PutUint32(b[1024+0x60:], incompat)
		return b
	}
	for _, tc := range []struct {
		name     string
		b        []byte
		typ      string
		wantDirt bool
	}{
		{"ext4 clean", sb(0x4, 0x40), "ext4", false},
		{"ext4 needs recovery", sb(0x4, 0x40|0x4), "ext4", true},
		{"ext3 needs recovery", sb(0x4, 0x4), "ext3", true},
		{"ext2: no journal to replay", sb(0, 0x4), "ext2", false},
	} {
		fs := ProbeBytes(tc.b)
		if fs.Type != tc.typ || fs.Dirty != tc.wantDirt {
			t.Errorf("%s: %+v, want %s dirty %v", tc.name, fs, tc.typ, tc.wantDirt)
		}
	}
}

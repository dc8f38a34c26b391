package imgfmt

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestQCOW2References(t *testing.T) {
	header := func(version uint32, backingOff, incompat uint64) []byte {
		h := make([]byte, 104)
		copy(h, "QFI\xfb")
		binary.BigEndian.PutUint32(h[4:], version)
		binary.BigEndian.PutUint64(h[8:], backingOff)
		binary.BigEndian.PutUint64(h[72:], incompat)
		return h
	}
	for _, tc := range []struct {
		name          string
		h             []byte
		backing, data bool
		err           bool
	}{
		{"plain v3", header(3, 0, 0), false, false, false},
		{"backing", header(3, 0x1000, 0), true, false, false},
		{"external data file", header(3, 0, 1<<2), false, true, false},
		{"v2 ignores the v3 field", header(2, 0, 1<<2), false, false, false},
		{"dirty bit only", header(3, 0, 1), false, false, false},
		{"not qcow2", make([]byte, 104), false, false, true},
		{"short", []byte("QFI\xfb"), false, false, true},
	} {
		b, d, err := QCOW2References(bytes.NewReader(tc.h))
		if b != tc.backing || d != tc.data || (err != nil) != tc.err {
			t.Errorf("%s: backing %v data %v err %v", tc.name, b, d, err)
		}
	}
}

func TestDefersToEmbeddedDescriptor(t *testing.T) {
	header := func(magic uint32, capacity, descOff uint64) []byte {
		var buf bytes.Buffer
		binary.Write(&buf, binary.LittleEndian, sparseHeader{Magic: magic, Version: 1, Capacity: capacity, DescriptorOffset: descOff, DescriptorSize: 1})
		return append(buf.Bytes(), make([]byte, 512)...)
	}
	for _, tc := range []struct {
		name string
		h    []byte
		want bool
	}{
		{"ordinary sparse", header(0x564d444b, 8192, 1), false},
		{"capacity 0 with a descriptor", header(0x564d444b, 0, 1), true},
		{"capacity 0 without one", header(0x564d444b, 0, 0), false},
		{"not sparse", header(0x12345678, 0, 1), false},
		{"short", []byte("KDMV"), false},
	} {
		if got := DefersToEmbeddedDescriptor(bytes.NewReader(tc.h)); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

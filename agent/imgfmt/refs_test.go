package imgfmt

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// qcow2Image builds a qcow2 header cluster (512-byte clusters are enough
// for the parser): version, backing name at 0x180, incompatible features
// and header extensions.
func qcow2Image(version uint32, backing string, incompat uint64, exts ...[]byte) []byte {
	h := make([]byte, 512)
	copy(h, "QFI\xfb")
	binary.BigEndian.PutUint32(h[4:], version)
	binary.BigEndian.PutUint32(h[20:], 9)
	binary.BigEndian.PutUint64(h[24:], 1<<30)
	if backing != "" {
		binary.BigEndian.PutUint64(h[8:], 0x180)
		binary.BigEndian.PutUint32(h[16:], uint32(len(backing)))
		copy(h[0x180:], backing)
	}
	off := 72
	if version == 3 {
		binary.BigEndian.PutUint64(h[72:], incompat)
		binary.BigEndian.PutUint32(h[100:], 104)
		off = 104
	}
	for _, e := range exts {
		copy(h[off:], e)
		off += len(e)
	}
	return h
}

func qcow2Ext(typ uint32, data string) []byte {
	b := make([]byte, 8+(len(data)+7)&^7)
	binary.BigEndian.PutUint32(b, typ)
	binary.BigEndian.PutUint32(b[4:], uint32(len(data)))
	copy(b[8:], data)
	return b
}

func TestReadQCOW2Header(t *testing.T) {
	tooLong := qcow2Image(3, "", 0)
	binary.BigEndian.PutUint32(tooLong[104:], qcow2ExtDataFile)
	binary.BigEndian.PutUint32(tooLong[108:], 1000)
	for _, tc := range []struct {
		name string
		img  []byte
		want QCOW2Header
		err  string
	}{
		{name: "plain v3", img: qcow2Image(3, "", 0), want: QCOW2Header{Version: 3, VirtualSize: 1 << 30}},
		{name: "plain v2", img: qcow2Image(2, "", 0), want: QCOW2Header{Version: 2, VirtualSize: 1 << 30}},
		{name: "backing with format", img: qcow2Image(3, "/etc/shadow", 0, qcow2Ext(qcow2ExtBackingFormat, "raw")),
			want: QCOW2Header{Version: 3, VirtualSize: 1 << 30, BackingFile: "/etc/shadow", BackingFormat: "raw"}},
		{name: "v2 backing", img: qcow2Image(2, "base.qcow2", 0), want: QCOW2Header{Version: 2, VirtualSize: 1 << 30, BackingFile: "base.qcow2"}},
		{name: "data file", img: qcow2Image(3, "", 1<<2, qcow2Ext(0x6803f857, "feature table"), qcow2Ext(qcow2ExtDataFile, "/root/secret.img")),
			want: QCOW2Header{Version: 3, VirtualSize: 1 << 30, HasDataFile: true, DataFile: "/root/secret.img"}},
		{name: "data file bit without a name", img: qcow2Image(3, "", 1<<2), want: QCOW2Header{Version: 3, VirtualSize: 1 << 30, HasDataFile: true}},
		{name: "v2 ignores the v3 field", img: qcow2Image(2, "", 1<<2), want: QCOW2Header{Version: 2, VirtualSize: 1 << 30}},
		{name: "extension overruns the cluster", img: tooLong, err: "overruns"},
		{name: "not qcow2", img: make([]byte, 512), err: "not a qcow2"},
		{name: "short", img: []byte("QFI\xfb\x00\x00\x00\x03"), err: "too short"},
		{name: "version 4", img: qcow2Image(4, "", 0), err: "version 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ReadQCOW2Header(bytes.NewReader(tc.img), int64(len(tc.img)))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *h != tc.want {
				t.Errorf("got %+v, want %+v", *h, tc.want)
			}
		})
	}
}

// TestReadQCOW2HeaderOfQemuImages reads what qemu-img itself writes.
func TestReadQCOW2HeaderOfQemuImages(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	run := func(args ...string) {
		if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	base, top, ext := filepath.Join(dir, "base.raw"), filepath.Join(dir, "top.qcow2"), filepath.Join(dir, "ext.qcow2")
	run("create", "-q", "-f", "raw", base, "1M")
	run("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", top)
	run("create", "-q", "-f", "qcow2", "-o", "data_file="+filepath.Join(dir, "data.raw"), ext, "1M")
	for p, want := range map[string]QCOW2Header{
		top: {Version: 3, VirtualSize: 1 << 20, BackingFile: base, BackingFormat: "raw"},
		ext: {Version: 3, VirtualSize: 1 << 20, HasDataFile: true, DataFile: filepath.Join(dir, "data.raw")},
	} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		h, err := ReadQCOW2Header(bytes.NewReader(data), int64(len(data)))
		if err != nil || *h != want {
			t.Errorf("%s: %+v %v, want %+v", filepath.Base(p), h, err, want)
		}
	}
}

func TestReadSparseVMDK(t *testing.T) {
	desc := "# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"/etc/shadow\" 0\n"
	deferring := fixture.DeferringVMDK(desc)
	ordinary := append([]byte(nil), deferring...)
	binary.LittleEndian.PutUint64(ordinary[12:], 8192)
	// qemu reads past the header's descriptor size, up to the first NUL.
	undersized := append([]byte(nil), deferring...)
	binary.LittleEndian.PutUint64(undersized[36:], 0)
	for _, tc := range []struct {
		name   string
		img    []byte
		defers bool
		desc   string
		err    bool
	}{
		{"deferring", deferring, true, desc, false},
		{"ordinary sparse", ordinary, false, desc, false},
		{"descriptor size 0 still read", undersized, true, desc, false},
		{"not sparse", []byte(desc), false, "", true},
		{"short", []byte("KDMV"), false, "", true},
	} {
		s, err := ReadSparseVMDK(bytes.NewReader(tc.img), int64(len(tc.img)))
		if (err != nil) != tc.err {
			t.Errorf("%s: err %v", tc.name, err)
			continue
		}
		if err == nil && (s.Defers != tc.defers || string(s.Descriptor) != tc.desc) {
			t.Errorf("%s: defers %v descriptor %q", tc.name, s.Defers, s.Descriptor)
		}
	}
}

func TestVMDKParentHint(t *testing.T) {
	for _, tc := range []struct {
		desc, name string
		ok         bool
	}{
		{"parentCID=ffffffff\n", "", false},
		{"parentCID=1234\nparentFileNameHint=\"base.vmdk\"\n", "base.vmdk", true},
		{"# parentFileNameHint=\"/etc/shadow\" in a comment counts for qemu\n", "/etc/shadow", true},
		{"parentFileNameHint=\"unterminated\n", "", false},
		{strings.Repeat(" ", qemuDescSize) + "parentFileNameHint=\"beyond\"", "", false},
	} {
		name, ok := VMDKParentHint([]byte(tc.desc))
		if name != tc.name || ok != tc.ok {
			t.Errorf("%q: %q %v, want %q %v", tc.desc, name, ok, tc.name, tc.ok)
		}
	}
}

func TestRewriteVMDKExtents(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		names          []string
	}{
		{"flat", "createType=\"monolithicFlat\"\nRW 8 FLAT \"a.raw\" 0\n", "createType=\"monolithicFlat\"\nRW 8 FLAT \"extent-0\" 0\n", []string{"a.raw"}},
		{"split with zero", "RW 8 SPARSE \"a-s001.vmdk\"\r\nRW 8 ZERO\nRDONLY 8 SPARSE \"/abs/b.vmdk\"\n",
			"RW 8 SPARSE \"extent-0\"\r\nRW 8 ZERO\nRDONLY 8 SPARSE \"extent-1\"\n", []string{"a-s001.vmdk", "/abs/b.vmdk"}},
		{"tabs and an = in the name", "RW\t8\tFLAT\t\"x=y\" 0\n", "RW\t8\tFLAT\t\"extent-0\" 0\n", []string{"x=y"}},
		{"comment untouched", "# RW 8 FLAT \"c\" 0\nRW 8 FLAT \"d\" 0\n", "# RW 8 FLAT \"c\" 0\nRW 8 FLAT \"extent-0\" 0\n", []string{"d"}},
	} {
		var names []string
		out, err := RewriteVMDKExtents([]byte(tc.in), func(i int, name string) string {
			names = append(names, name)
			return "extent-" + strconv.Itoa(i)
		})
		if err != nil || string(out) != tc.want || strings.Join(names, ",") != strings.Join(tc.names, ",") {
			t.Errorf("%s: %q %v names %q", tc.name, out, err, names)
		}
		// What qemu reads from the rewritten text names only the links.
		if d, err := ParseVMDKDescriptor(bytes.NewReader(out)); err == nil {
			for _, e := range d.Extents {
				if e.File != "" && !strings.HasPrefix(e.File, "extent-") {
					t.Errorf("%s: extent %q survived the rewrite", tc.name, e.File)
				}
			}
		}
	}
}

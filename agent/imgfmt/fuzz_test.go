package imgfmt_test

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// FuzzVMDKDescriptor: any input parses or fails with an error, never panics,
// and an accepted descriptor has a createType and extents that add up.
func FuzzVMDKDescriptor(f *testing.F) {
	f.Add([]byte(flatDescriptor))
	f.Add([]byte("# Disk DescriptorFile\ncreateType=\"twoGbMaxExtentSparse\"\nRW 4192256 SPARSE \"a-s001.vmdk\"\nRW 2048 ZERO\n"))
	f.Add([]byte("createType=\"monolithicFlat\"\nRW 8 FLAT \"x\" 99999999999999999999\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := imgfmt.ParseVMDKDescriptor(bytes.NewReader(data))
		if err != nil {
			return
		}
		if d.CreateType == "" || len(d.Extents) == 0 || d.Size() < 0 {
			t.Fatalf("accepted a descriptor without createType/extents: %+v", d)
		}
		if paths, err := d.ExtentPaths("/data"); err == nil {
			for _, p := range paths {
				if !strings.HasPrefix(p, "/data/") || strings.Contains(p[len("/data/"):], "/") {
					t.Fatalf("extent path %q leaves /data", p)
				}
			}
		}
		// Embedded in a sparse header or not, the reader must not panic either.
		_, _ = imgfmt.ReadVMDKDescriptor(bytes.NewReader(data), int64(len(data)))
	})
}

// FuzzOVF: any input parses or fails with an error, never panics, and every
// accepted disk reference stays relative and local.
func FuzzOVF(f *testing.F) {
	f.Add([]byte(fixture.OVFXML(fixture.VM{}, []fixture.OVFDisk{{File: "d.vmdk", Size: 10, Capacity: 1 << 30}})))
	f.Add([]byte(fixture.OVFXML(fixture.VM{Firmware: "efi", NICs: 2}, []fixture.OVFDisk{{File: "a.vmdk"}, {File: "b.vmdk"}})))
	f.Add([]byte(`<Envelope><VirtualSystemCollection><VirtualSystem><Name>x</Name></VirtualSystem></VirtualSystemCollection></Envelope>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := imgfmt.ParseOVF(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, d := range o.Disks {
			if d.File == "" || strings.HasPrefix(d.File, "/") || strings.HasPrefix(d.File, "../") || d.File == ".." || strings.Contains(d.File, "://") {
				t.Fatalf("accepted disk file %q", d.File)
			}
			if d.Capacity < 0 {
				t.Fatalf("negative capacity %d", d.Capacity)
			}
		}
		if o.CPUs < 0 || o.MemoryMB < 0 {
			t.Fatalf("negative hardware %+v", o)
		}
	})
}

// FuzzDetectOVA: detection of any bytes never fails or panics, and an
// archive read as an OVA never claims a member beyond the file's end.
func FuzzDetectOVA(f *testing.F) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	ovf := []byte(fixture.OVFXML(fixture.VM{}, []fixture.OVFDisk{{File: "d.vmdk", Size: 4, Capacity: 1 << 20}}))
	tw.WriteHeader(&tar.Header{Name: "vm.ovf", Mode: 0o644, Size: int64(len(ovf))})
	tw.Write(ovf)
	tw.WriteHeader(&tar.Header{Name: "d.vmdk", Mode: 0o644, Size: 4})
	tw.Write([]byte("KDMV"))
	tw.Close()
	f.Add(buf.Bytes())
	f.Add([]byte("QFI\xfb"))
	f.Add([]byte("conectix"))
	f.Fuzz(func(t *testing.T, data []byte) {
		format, err := imgfmt.DetectReader(bytes.NewReader(data), int64(len(data)))
		if err != nil && len(data) > 0 {
			t.Fatalf("DetectReader: %v", err)
		}
		if format != imgfmt.OVA {
			return
		}
		p := filepath.Join(t.TempDir(), "x.ova")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		a, err := imgfmt.ReadOVA(p)
		if err != nil {
			return
		}
		for _, m := range a.Members {
			if m.Offset < 0 || m.Size < 0 || m.Offset+m.Size > int64(len(data)) {
				t.Fatalf("member %+v outside the %d-byte archive", m, len(data))
			}
		}
	})
}

// FuzzQCOW2Header: any input parses or fails with an error, never panics,
// and every name it returns came from within the first cluster.
func FuzzQCOW2Header(f *testing.F) {
	f.Add([]byte("QFI\xfb\x00\x00\x00\x03"))
	f.Add(qcow2Seed(3, "/etc/shadow", 1<<2, "/root/secret.img"))
	f.Add(qcow2Seed(2, "base.qcow2", 0, ""))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := imgfmt.ReadQCOW2Header(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		if len(h.BackingFile) > 1023 || len(h.DataFile) > 4096 || len(h.BackingFormat) > 4096 {
			t.Fatalf("oversized names: %d %d %d", len(h.BackingFile), len(h.DataFile), len(h.BackingFormat))
		}
		if h.Version != 2 && h.Version != 3 {
			t.Fatalf("accepted version %d", h.Version)
		}
	})
}

// qcow2Seed is a v2/v3 qcow2 header with 512-byte clusters, a backing file
// name and, for v3, a data file name extension.
func qcow2Seed(version uint32, backing string, incompat uint64, dataFile string) []byte {
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
	if version == 3 {
		binary.BigEndian.PutUint64(h[72:], incompat)
		binary.BigEndian.PutUint32(h[100:], 104)
		if dataFile != "" {
			binary.BigEndian.PutUint32(h[104:], 0x44415441)
			binary.BigEndian.PutUint32(h[108:], uint32(len(dataFile)))
			copy(h[112:], dataFile)
		}
	}
	return h
}

// FuzzSparseVMDK: the sparse header and embedded descriptor reader, the
// parent hint and the extent rewrite never panic; a rewrite leaves no
// extent name but the ones it gave.
func FuzzSparseVMDK(f *testing.F) {
	f.Add(fixture.DeferringVMDK(fixture.FlatDescriptor("/etc/shadow", 2048)))
	f.Add(fixture.DeferringVMDK("createType=\"twoGbMaxExtentSparse\"\nRW\t8\tSPARSE\t\"a=b\"\nparentFileNameHint=\"p.vmdk\"\n"))
	f.Add([]byte("KDMV"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := imgfmt.ReadSparseVMDK(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		imgfmt.VMDKParentHint(s.Descriptor)
		out, err := imgfmt.RewriteVMDKExtents(s.Descriptor, func(i int, name string) string { return fmt.Sprintf("extent-%d", i) })
		if err != nil {
			return
		}
		if d, err := imgfmt.ParseVMDKDescriptor(bytes.NewReader(out)); err == nil {
			for _, e := range d.Extents {
				if e.File != "" && !strings.HasPrefix(e.File, "extent-") {
					t.Fatalf("extent %q survived the rewrite of %q", e.File, s.Descriptor)
				}
			}
		}
	})
}

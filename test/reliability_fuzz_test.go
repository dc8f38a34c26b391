package test

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// Fuzz targets for the two parsers of untrusted bytes that have none beside
// their code: the OVA (tar) reader and format detection. They need no root
// and no box: `go test -run='^$' -fuzz=FuzzOVA ./test/`.

// relTar builds a tar archive of (name, type, data) members.
func relTar(members ...struct {
	name string
	typ  byte
	data string
}) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		h := &tar.Header{Name: m.name, Typeflag: m.typ, Mode: 0o644, Size: int64(len(m.data)), Format: tar.FormatUSTAR}
		if m.typ == tar.TypeSymlink {
			h.Linkname, h.Size = m.data, 0
		}
		tw.WriteHeader(h)
		if m.typ == tar.TypeReg {
			tw.Write([]byte(m.data))
		}
	}
	tw.Close()
	return buf.Bytes()
}

type relMember = struct {
	name string
	typ  byte
	data string
}

// FuzzOVA: any archive is read or refused with an error, never a panic;
// an accepted one has its descriptor, every member inside the file and
// every disk reference relative to the archive.
func FuzzOVA(f *testing.F) {
	ovf := fixture.OVFXML(fixture.VM{}, []fixture.OVFDisk{{File: "disk1.vmdk", Size: 512, Capacity: 1 << 20}})
	disk := strings.Repeat("\x00", 512)
	good := relTar(relMember{"vm.ovf", tar.TypeReg, ovf}, relMember{"disk1.vmdk", tar.TypeReg, disk})
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(relTar(relMember{"vm.ovf", tar.TypeReg, ovf}, relMember{"disk1.vmdk", tar.TypeSymlink, "/etc/shadow"}))
	f.Add(relTar(relMember{"../../vm.ovf", tar.TypeReg, ovf}, relMember{"./disk1.vmdk", tar.TypeReg, disk}))
	f.Add(relTar(relMember{"disk1.vmdk", tar.TypeReg, disk}))
	f.Add(relTar(relMember{"vm.ovf", tar.TypeReg, strings.Replace(ovf, "disk1.vmdk", "../../etc/shadow", 1)}))
	f.Add([]byte("not a tar"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "fuzz.ova")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		arc, err := imgfmt.ReadOVA(p)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("error without a message")
			}
			return
		}
		if arc.OVF == nil || arc.OVFName == "" {
			t.Fatalf("accepted an OVA without a descriptor: %+v", arc)
		}
		for _, m := range arc.Members {
			if m.Offset < 0 || m.Size < 0 || m.Offset+m.Size > int64(len(data)) {
				t.Fatalf("member %q outside the archive: %+v (archive %d bytes)", m.Name, m, len(data))
			}
		}
		for _, d := range arc.OVF.Disks {
			if strings.HasPrefix(d.File, "/") || d.File == ".." || strings.HasPrefix(d.File, "../") {
				t.Fatalf("disk reference %q leaves the archive", d.File)
			}
			if m, ok := arc.Member(d.File); ok {
				_ = imgfmt.QemuSpec(arc.Path, m)
			}
		}
	})
}

// FuzzDetect: any bytes are classified as one of the known formats or
// refused, never a panic.
func FuzzDetect(f *testing.F) {
	for _, s := range []string{"QFI\xfb\x00\x00\x00\x03", "KDMV\x01\x00\x00\x00", "vhdxfile", "conectix", "# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\n",
		`<?xml version="1.0"?><Envelope/>`, strings.Repeat("\x00", 1024) + "conectix"} {
		f.Add([]byte(s))
	}
	f.Add(relTar(relMember{"vm.ovf", tar.TypeReg, "<Envelope/>"}))
	known := map[string]bool{imgfmt.QCOW2: true, imgfmt.VMDK: true, imgfmt.VHDX: true, imgfmt.VPC: true, imgfmt.Raw: true, imgfmt.OVA: true, imgfmt.OVF: true}
	f.Fuzz(func(t *testing.T, data []byte) {
		format, err := imgfmt.DetectReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if len(data) > 0 {
				t.Fatalf("refused %d bytes: %v", len(data), err)
			}
			return
		}
		if !known[format] {
			t.Fatalf("unknown format %q", format)
		}
	})
}

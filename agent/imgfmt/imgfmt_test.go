package imgfmt_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

func TestDetectEveryFormat(t *testing.T) {
	dir := t.TempDir()
	raw := fixture.LinuxDisk(t, dir, fixture.Options{SizeMB: 16})
	for _, c := range fixture.Formats {
		t.Run(c.Format+"-"+c.Subformat, func(t *testing.T) {
			p := raw
			if c.Format != "raw" {
				p = fixture.Convert(t, raw, c.Format, c.Subformat)
			}
			// Give every image the same misleading name: detection must not look at it.
			named := filepath.Join(t.TempDir(), "disk.img")
			mustLink(t, p, named)
			got, err := imgfmt.Detect(named)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.Format {
				t.Errorf("Detect(%s %s) = %q, want %q", c.Format, c.Subformat, got, c.Format)
			}
		})
	}
	t.Run("ova", func(t *testing.T) {
		ova := fixture.OVA(t, dir, raw)
		named := filepath.Join(t.TempDir(), "disk.vmdk")
		mustLink(t, ova, named)
		if got, err := imgfmt.Detect(named); err != nil || got != "ova" {
			t.Errorf("Detect(ova) = %q, %v", got, err)
		}
	})
	t.Run("ovf", func(t *testing.T) {
		d := t.TempDir()
		ovf := fixture.OVF(t, d, fixture.VM{}, raw)
		if got, err := imgfmt.Detect(ovf); err != nil || got != "ovf" {
			t.Errorf("Detect(ovf) = %q, %v", got, err)
		}
	})
}

func mustLink(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Symlink(from, to); err != nil {
		t.Fatal(err)
	}
}

func TestDetectBytes(t *testing.T) {
	fixedVHD := make([]byte, 4096)
	copy(fixedVHD[4096-512:], "conectix")
	oldVHD := make([]byte, 4096)
	copy(oldVHD[4096-511:], "conectix")
	tarHead := make([]byte, 1024)
	copy(tarHead[257:], "ustar\x0000")
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"qcow2", []byte("QFI\xfb\x00\x00\x00\x03"), "qcow2"},
		{"vmdk sparse", []byte("KDMV\x01\x00\x00\x00"), "vmdk"},
		{"vmdk descriptor", []byte("# Disk DescriptorFile\nversion=1\n"), "vmdk"},
		{"vmdk descriptor after blank lines", []byte("\n\n# Disk DescriptorFile\n"), "vmdk"},
		{"vhdx", []byte("vhdxfile\x00\x00"), "vhdx"},
		{"vhd dynamic", []byte("conectix\x00\x00"), "vpc"},
		{"vhd fixed", fixedVHD, "vpc"},
		{"vhd fixed 511-byte footer", oldVHD, "vpc"},
		{"tar", tarHead, "ova"},
		{"ovf", []byte("<?xml version=\"1.0\"?>\n<!-- c -->\n<ovf:Envelope xmlns:ovf=\"x\"></ovf:Envelope>"), "ovf"},
		{"ovf with BOM", []byte("\xef\xbb\xbf<Envelope/>"), "ovf"},
		{"other xml", []byte("<?xml version=\"1.0\"?><domain/>"), "raw"},
		{"zeros", make([]byte, 8192), "raw"},
		{"tiny", []byte("x"), "raw"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "f")
			if err := os.WriteFile(p, c.data, 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := imgfmt.Detect(p)
			if err != nil || got != c.want {
				t.Errorf("Detect = %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

func TestDetectRefuses(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{empty, "empty file"},
		{dir, "not a regular file"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		_, err := imgfmt.Detect(c.path)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Detect(%s) error = %v, want %q", c.path, err, c.want)
		}
	}
}

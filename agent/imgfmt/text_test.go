package imgfmt

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNotImage(t *testing.T) {
	dir := t.TempDir()
	mbr := make([]byte, 1024)
	copy(mbr, "\xeb\x63\x90")
	mbr[510], mbr[511] = 0x55, 0xaa
	for _, tc := range []struct {
		name, content string
		text          bool
	}{
		{"notes.vmdk", "hello, this is not a disk\nsecond line\n", true},
		{"utf8.vmdk", "héllo wörld — a text " + strings.Repeat("é", 3000), true},
		{"blank.img", string(make([]byte, 4096)), false},
		{"mbr.img", string(mbr), false},
		{"desc.vmdk", "# Disk DescriptorFile\nversion=1\n", false},
		{"ovf.ovf", `<?xml version="1.0"?><Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"></Envelope>`, false},
		{"binary.raw", "abc\x01\x02def", false},
	} {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		err := NotImage(p)
		var ne *NotImageError
		if got := errors.As(err, &ne); got != tc.text {
			t.Errorf("%s: NotImage = %v, want text %v", tc.name, err, tc.text)
		}
		if tc.text && (!strings.Contains(err.Error(), "is a text file") || !bytes.HasPrefix([]byte(tc.content), []byte(ne.Start))) {
			t.Errorf("%s: message %q", tc.name, err)
		}
		_, cerr := Complete(p, filepath.Ext(p))
		if got := errors.As(cerr, &ne); got != tc.text {
			t.Errorf("%s: Complete = %v, want a NotImageError %v", tc.name, cerr, tc.text)
		}
	}
}

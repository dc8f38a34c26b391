package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSniffImage: the bytes decide whether submit sends a manifest or an
// image; a text file named as an image is refused.
func TestSniffImage(t *testing.T) {
	dir := t.TempDir()
	qcow := append([]byte("QFI\xfb\x00\x00\x00\x03"), make([]byte, 504)...)
	for _, tc := range []struct {
		name, content, want, err string
	}{
		{"web01.json", `{"version":"1.0","name":"web01"}`, "", ""},
		{"web01.yaml", "version: \"1.0\"\nname: web01\n", "", ""},
		{"blank.vmdk", string(make([]byte, 4096)), "raw", ""},
		{"disk.img", string(qcow), "qcow2", ""},
		{"notes.vmdk", "just some notes\n", "", "is a text file"},
		{"empty.vhd", "", "", "is empty"},
		{"d.vmdk", "# Disk DescriptorFile\nversion=1\n", "vmdk", ""},
	} {
		p := filepath.Join(dir, tc.name)
		os.WriteFile(p, []byte(tc.content), 0o644)
		got, err := sniffImage(p)
		if got != tc.want || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %q, %v; want %q, error with %q", tc.name, got, err, tc.want, tc.err)
		}
	}
}

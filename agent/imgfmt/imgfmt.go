// Package imgfmt recognises disk image formats from their bytes (never from
// the file name) and reads the metadata qemu-img does not: VMDK descriptors,
// OVF descriptors and the layout of OVA archives.
package imgfmt

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Format names Detect returns. All but OVA and OVF are qemu-img format names.
const (
	QCOW2 = "qcow2"
	VMDK  = "vmdk"
	VPC   = "vpc" // VHD
	VHDX  = "vhdx"
	Raw   = "raw"
	OVA   = "ova"
	OVF   = "ovf"
)

// headLen is how much of the start of a file Detect looks at: enough for
// every magic number, the tar header and the opening of an XML document.
const headLen = 4096

// Detect returns the qemu-img format name of the image at path (vmdk, vpc,
// vhdx, qcow2, raw) or, for an OVA, "ova" and for an OVF descriptor "ovf".
func Detect(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("cannot detect format: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("cannot detect format of %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("cannot detect format of %s: not a regular file", path)
	}
	format, err := DetectReader(f, st.Size())
	if err != nil {
		return "", fmt.Errorf("cannot detect format of %s: %w", path, err)
	}
	return format, nil
}

// DetectReader is Detect over the size bytes of r, for images that are not
// files of their own (a disk inside an OVA).
func DetectReader(r io.ReaderAt, size int64) (string, error) {
	if size <= 0 {
		return "", errors.New("empty file")
	}
	head := make([]byte, min(size, headLen))
	if _, err := r.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	switch {
	case bytes.HasPrefix(head, []byte("QFI\xfb")):
		return QCOW2, nil
	case bytes.HasPrefix(head, []byte("KDMV")), bytes.HasPrefix(head, []byte("COWD")):
		return VMDK, nil
	case bytes.HasPrefix(head, []byte("vhdxfile")):
		return VHDX, nil
	case bytes.HasPrefix(head, []byte("conectix")):
		// A dynamic VHD starts with a copy of its footer.
		return VPC, nil
	case isVMDKDescriptor(head):
		return VMDK, nil
	case isTar(head):
		return OVA, nil
	case isOVF(head):
		return OVF, nil
	}
	// A fixed VHD is raw data followed by a 512-byte footer (511 bytes in
	// images made by very old tools).
	for _, n := range []int64{512, 511} {
		if size < n {
			continue
		}
		foot := make([]byte, 8)
		if _, err := r.ReadAt(foot, size-n); err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		if string(foot) == "conectix" {
			return VPC, nil
		}
	}
	return Raw, nil
}

func isVMDKDescriptor(head []byte) bool {
	s := strings.TrimLeft(string(head), " \t\r\n")
	return strings.HasPrefix(s, "# Disk DescriptorFile")
}

// isTar recognises a POSIX (ustar/pax) or GNU tar header block.
func isTar(head []byte) bool {
	if len(head) < 512 {
		return false
	}
	magic := string(head[257:263])
	return magic == "ustar\x00" || magic == "ustar "
}

// isOVF reports whether head opens an XML document whose root element is an
// OVF Envelope (in any namespace prefix).
func isOVF(head []byte) bool {
	s := bytes.TrimPrefix(head, []byte("\xef\xbb\xbf"))
	s = bytes.TrimLeft(s, " \t\r\n")
	if len(s) == 0 || s[0] != '<' {
		return false
	}
	d := xml.NewDecoder(bytes.NewReader(s))
	d.Strict = false
	for {
		tok, err := d.Token()
		if err != nil {
			return false
		}
		if se, ok := tok.(xml.StartElement); ok {
			return se.Name.Local == "Envelope"
		}
	}
}

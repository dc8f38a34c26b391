package imgfmt

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"
)

// NotImageError says a file is no disk image at all: its first bytes are
// text (and no manifest, descriptor or OVF), where a disk, even a blank
// one, has binary sectors. Waiting does not make it one, so a drop is
// refused at once.
type NotImageError struct {
	Path  string
	Start string // the first line, shortened
}

func (e *NotImageError) Error() string {
	return fmt.Sprintf("%s is a text file (it starts with %q), not a disk image; give the image itself, or a manifest a .json or .yaml name", e.Path, e.Start)
}

// TextStart reports whether the first bytes of r (of size bytes) are text
// and, if so, its first line shortened: no NUL, valid UTF-8 (a character
// cut at the end of the window is fine), no control characters other than
// tab, newline, carriage return and form feed. Only raw data can be text:
// every other format Detect knows starts with a binary magic number or is
// a descriptor, checked before.
func TextStart(r io.ReaderAt, size int64) (bool, string, error) {
	if size <= 0 {
		return false, "", nil
	}
	head := make([]byte, min(size, headLen))
	if _, err := r.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
		return false, "", err
	}
	if !isText(head) {
		return false, "", nil
	}
	line, _, _ := bytes.Cut(head, []byte("\n"))
	line = bytes.TrimSpace(line)
	if len(line) > 60 {
		line = line[:60]
		for len(line) > 0 && !utf8.Valid(line) {
			line = line[:len(line)-1]
		}
	}
	return true, string(line), nil
}

// NotImage returns a *NotImageError when the file at p is text, nil when
// it is not (or cannot be read: the caller's own open reports that).
func NotImage(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return nil
	}
	if format, err := DetectReader(f, st.Size()); err != nil || format != Raw {
		return nil
	}
	if text, start, err := TextStart(f, st.Size()); err == nil && text {
		return &NotImageError{Path: p, Start: start}
	}
	return nil
}

func isText(b []byte) bool {
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f' || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			// A character cut by the end of the window is still text.
			return len(b)-i < utf8.UTFMax && !utf8.FullRune(b[i:])
		}
		i += n
	}
	return true
}

// maybeHeaderPrefix reports whether the few bytes of a file being written
// could still become the start of an image: the whole file is a prefix of
// a magic number or of a VMDK descriptor's first line, or the name says
// OVA and a tar header's member name (text for up to 100 bytes) may not
// be followed by its NULs yet.
func maybeHeaderPrefix(r io.ReaderAt, size int64, ext string) bool {
	if strings.EqualFold(strings.TrimPrefix(ext, "."), OVA) && size < 512 {
		return true
	}
	for _, magic := range []string{"QFI\xfb", "KDMV", "COWD", "vhdxfile", "conectix", "# Disk DescriptorFile"} {
		if size > int64(len(magic)) {
			continue
		}
		head := make([]byte, size)
		if _, err := r.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
			return false
		}
		if strings.HasPrefix(magic, string(head)) {
			return true
		}
	}
	return false
}

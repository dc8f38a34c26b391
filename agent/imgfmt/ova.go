package imgfmt

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// maxMembers bounds how many archive members we list; real OVAs have a few.
const maxMembers = 10000

// OVAMember is one file stored in an OVA, located by byte range so that
// qemu can read it in place.
type OVAMember struct {
	Name   string
	Offset int64 // of the data, from the start of the archive
	Size   int64
}

// Archive is the layout of an OVA archive and its parsed descriptor.
type Archive struct {
	Path    string // absolute
	Members []OVAMember
	OVFName string
	OVF     *OVFDescriptor
}

// ReadOVA lists the members of the OVA at p with their data offsets and
// parses its OVF descriptor. Nothing is extracted.
func ReadOVA(p string) (*Archive, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return nil, fmt.Errorf("cannot read ova: %w", err)
	}
	f, err := os.Open(abs)
	if err != nil {
		return nil, fmt.Errorf("cannot read ova: %w", err)
	}
	defer f.Close()
	o := &Archive{Path: abs}
	// tar.Reader reads headers block by block and seeks over data when its
	// reader can seek, so the file position after Next is the data offset.
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("ova %s: archive is truncated (after %d members)", abs, len(o.Members))
		}
		if err != nil {
			return nil, fmt.Errorf("ova %s: cannot read archive (member %d): %w", abs, len(o.Members)+1, err)
		}
		if len(o.Members) >= maxMembers {
			return nil, fmt.Errorf("ova %s: more than %d members", abs, maxMembers)
		}
		if h.Typeflag == tar.TypeDir {
			continue
		}
		// tar.Reader already turns the legacy TypeRegA into TypeReg (or TypeDir).
		if h.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("ova %s: member %q is not a regular file (type %q)", abs, h.Name, h.Typeflag)
		}
		for k := range h.PAXRecords {
			if strings.HasPrefix(k, "GNU.sparse.") {
				return nil, fmt.Errorf("ova %s: member %q is a sparse tar entry, which cannot be read in place", abs, h.Name)
			}
		}
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, fmt.Errorf("ova %s: %w", abs, err)
		}
		o.Members = append(o.Members, OVAMember{Name: h.Name, Offset: off, Size: h.Size})
		if o.OVFName == "" && strings.HasSuffix(strings.ToLower(h.Name), ".ovf") {
			o.OVFName = h.Name
			d, err := ParseOVF(tr)
			if err != nil {
				return nil, fmt.Errorf("ova %s: %s: %w", abs, h.Name, err)
			}
			o.OVF = d
		}
	}
	if o.OVF == nil {
		return nil, fmt.Errorf("ova %s: no .ovf descriptor in the archive", abs)
	}
	if st, err := f.Stat(); err == nil {
		for _, m := range o.Members {
			if m.Offset+m.Size > st.Size() {
				return nil, fmt.Errorf("ova %s: member %q ends past the end of the file: truncated", abs, m.Name)
			}
		}
	}
	return o, nil
}

// Member returns the member named name (compared after cleaning "./").
func (o *Archive) Member(name string) (OVAMember, bool) {
	want := path.Clean(name)
	for _, m := range o.Members {
		if path.Clean(m.Name) == want {
			return m, true
		}
	}
	return OVAMember{}, false
}

// Section returns a reader over a member's bytes.
func (o *Archive) Section(f io.ReaderAt, m OVAMember) *io.SectionReader {
	return io.NewSectionReader(f, m.Offset, m.Size)
}

// QemuSpec returns a qemu "json:" filename that reads the member in place
// through the raw driver's offset and size over the archive. The format
// driver goes on top through qemu-img's -f, not in the spec.
func QemuSpec(archive string, m OVAMember) string {
	spec := map[string]any{
		"file": map[string]any{
			"driver": "raw",
			"offset": m.Offset,
			"size":   m.Size,
			"file":   map[string]any{"driver": "file", "filename": archive},
		},
	}
	b, _ := json.Marshal(spec) // cannot fail: maps of strings and numbers
	return "json:" + string(b)
}

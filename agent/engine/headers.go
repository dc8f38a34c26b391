package engine

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
)

// The header bytes LOAD checked, checked again before CONVERT.
//
// Every byte the image parsers read in LOAD (qcow2 headers and their
// extensions, VMDK headers and descriptors, the names of backing files and
// extents) is recorded by where it was read and its sha256, and read again
// from the same descriptors after INSPECT and FIX: an image whose header
// changed meanwhile (where no lease could hold it still, see lease.go) is
// refused before anything is converted, its references never re-resolved.

// span is one read of a header parser.
type span struct {
	r    io.ReaderAt
	name string // the file as the user named it
	off  int64
	n    int
	sum  [sha256.Size]byte
}

// recorder is an io.ReaderAt that records what is read through it.
type recorder struct {
	u    *userFiles
	r    io.ReaderAt
	name string
}

func (x recorder) ReadAt(p []byte, off int64) (int, error) {
	n, err := x.r.ReadAt(p, off)
	if n > 0 {
		x.u.mu.Lock()
		x.u.spans = append(x.u.spans, span{r: x.r, name: x.name, off: off, n: n, sum: sha256.Sum256(p[:n])})
		x.u.mu.Unlock()
	}
	return n, err
}

// record returns r, recording every read through it as a header read of
// the file name.
func (u *userFiles) record(r io.ReaderAt, name string) io.ReaderAt {
	if x, ok := r.(recorder); ok {
		return x
	}
	return recorder{u: u, r: r, name: name}
}

// hold keeps c open until close: a reader record was given must stay
// readable for headersSame.
func (u *userFiles) hold(c io.Closer) {
	u.mu.Lock()
	u.keep = append(u.keep, c)
	u.mu.Unlock()
}

// headersSame reads every recorded span again and says which file's header
// changed.
func (u *userFiles) headersSame() error {
	u.mu.Lock()
	spans := append([]span(nil), u.spans...)
	u.mu.Unlock()
	for _, s := range spans {
		buf := make([]byte, s.n)
		n, err := s.r.ReadAt(buf, s.off)
		if n == s.n {
			err = nil
		}
		if err != nil {
			return sourceChanged{fmt.Sprintf("%s changed while the job read it: its header (%d bytes at offset %d) cannot be read again: %v; nothing is converted (convert files nobody writes meanwhile)", s.name, s.n, s.off, err)}
		}
		if sum := sha256.Sum256(buf); !bytes.Equal(sum[:], s.sum[:]) {
			return sourceChanged{fmt.Sprintf("%s changed while the job read it: its header (%d bytes at offset %d) differs from what LOAD checked; nothing is converted (convert files nobody writes meanwhile)", s.name, s.n, s.off)}
		}
	}
	return nil
}

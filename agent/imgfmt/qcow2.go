package imgfmt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// QCOW2Header is what a qcow2 header says about the files qemu opens by
// name beside the image itself (qcow2 specification, docs/interop/qcow2.txt).
type QCOW2Header struct {
	Version     uint32
	VirtualSize uint64
	// BackingFile is the backing file's name as written in the image
	// (relative names are relative to the image's directory), "" for none.
	BackingFile string
	// BackingFormat is the backing format header extension, "" when absent
	// (qemu then probes the backing file's format).
	BackingFormat string
	// HasDataFile is incompatible feature bit 2: the guest data lives in an
	// external file, which qemu opens by DataFile's name (or by the
	// "data-file" option).
	HasDataFile bool
	// DataFile is the external data file name header extension, "" when
	// absent.
	DataFile string
}

// qcow2 header extension types.
const (
	qcow2ExtEnd           = 0x00000000
	qcow2ExtBackingFormat = 0xe2792aca
	qcow2ExtDataFile      = 0x44415441
)

// maxQCOW2Name bounds the names read from a header: qemu refuses backing
// file names over 1023 bytes, and a data file name longer than a path is
// not one.
const maxQCOW2Name = 4096

// ReadQCOW2Header reads the header of the qcow2 image in r (size bytes) and
// its extensions. It reads only the header cluster, checks every offset
// against it, and never panics on input: a header qemu would refuse is an
// error here too.
func ReadQCOW2Header(r io.ReaderAt, size int64) (*QCOW2Header, error) {
	var h [104]byte
	n, err := r.ReadAt(h[:], 0)
	if n < 72 {
		if err == nil || errors.Is(err, io.EOF) {
			err = errors.New("file too short")
		}
		return nil, fmt.Errorf("cannot read qcow2 header: %w", err)
	}
	if string(h[:4]) != "QFI\xfb" {
		return nil, errors.New("not a qcow2 image")
	}
	q := &QCOW2Header{Version: binary.BigEndian.Uint32(h[4:])}
	if q.Version != 2 && q.Version != 3 {
		return nil, fmt.Errorf("qcow2 version %d is not supported", q.Version)
	}
	clusterBits := binary.BigEndian.Uint32(h[20:])
	if clusterBits < 9 || clusterBits > 21 {
		return nil, fmt.Errorf("qcow2 cluster bits %d out of range", clusterBits)
	}
	cluster := int64(1) << clusterBits
	q.VirtualSize = binary.BigEndian.Uint64(h[24:])
	backingOff := binary.BigEndian.Uint64(h[8:])
	backingLen := binary.BigEndian.Uint32(h[16:])
	headerLen := int64(72)
	if q.Version == 3 {
		if n < 104 {
			return nil, errors.New("qcow2 v3 header is truncated")
		}
		q.HasDataFile = binary.BigEndian.Uint64(h[72:])&(1<<2) != 0
		headerLen = int64(binary.BigEndian.Uint32(h[100:]))
		if headerLen < 104 || headerLen%8 != 0 || headerLen > cluster {
			return nil, fmt.Errorf("qcow2 header length %d is invalid", headerLen)
		}
	}
	if backingOff != 0 {
		if backingLen == 0 || backingLen > 1023 || backingOff > uint64(cluster) || backingOff+uint64(backingLen) > uint64(cluster) {
			return nil, fmt.Errorf("qcow2 backing file name (offset %d, %d bytes) lies outside the header cluster", backingOff, backingLen)
		}
		name := make([]byte, backingLen)
		if _, err := r.ReadAt(name, int64(backingOff)); err != nil {
			return nil, fmt.Errorf("cannot read qcow2 backing file name: %w", err)
		}
		q.BackingFile = string(name)
	}
	// Extensions run from the end of the header to the backing file name
	// or the end of the first cluster, as qemu reads them.
	end := cluster
	if backingOff != 0 {
		end = int64(backingOff)
	}
	if size > 0 && end > size {
		end = size
	}
	for off := headerLen; off+8 <= end; {
		var eh [8]byte
		if _, err := r.ReadAt(eh[:], off); err != nil {
			return nil, fmt.Errorf("cannot read qcow2 header extension at %d: %w", off, err)
		}
		typ, l := binary.BigEndian.Uint32(eh[:]), int64(binary.BigEndian.Uint32(eh[4:]))
		off += 8
		if typ == qcow2ExtEnd {
			break
		}
		if l > end-off {
			return nil, fmt.Errorf("qcow2 header extension 0x%08x (%d bytes) overruns the header", typ, l)
		}
		switch typ {
		case qcow2ExtBackingFormat, qcow2ExtDataFile:
			if l > maxQCOW2Name {
				return nil, fmt.Errorf("qcow2 header extension 0x%08x is %d bytes long", typ, l)
			}
			data := make([]byte, l)
			if _, err := r.ReadAt(data, off); err != nil {
				return nil, fmt.Errorf("cannot read qcow2 header extension 0x%08x: %w", typ, err)
			}
			if typ == qcow2ExtBackingFormat {
				q.BackingFormat = string(data)
			} else {
				q.DataFile = string(data)
			}
		}
		off += (l + 7) &^ 7
	}
	return q, nil
}

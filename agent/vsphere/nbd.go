package vsphere

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
)

// growing is a file being downloaded, read while it grows: a read waits
// until the download has written past its end (or failed). The download
// writes strictly in order (resumed with Range from where it stopped), so
// one high-water mark says what is there.
type growing struct {
	f    *os.File // the .part, opened read-write; pread beside pwrite
	size int64    // fixed before the first byte: what the export declares

	mu    sync.Mutex
	cond  *sync.Cond
	avail int64
	err   error
}

func newGrowing(f *os.File, size int64) *growing {
	g := &growing{f: f, size: size}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// advance says bytes [0, n) are written.
func (g *growing) advance(n int64) {
	g.mu.Lock()
	if n > g.avail {
		g.avail = n
	}
	g.mu.Unlock()
	g.cond.Broadcast()
}

// fail wakes every reader with err (the first error stays).
func (g *growing) fail(err error) {
	g.mu.Lock()
	if g.err == nil {
		g.err = err
	}
	g.mu.Unlock()
	g.cond.Broadcast()
}

// ReadAt waits for [off, off+len(p)) and reads it.
func (g *growing) ReadAt(p []byte, off int64) error {
	end := off + int64(len(p))
	if off < 0 || end > g.size {
		return fmt.Errorf("read of %d bytes at %d past the end (%d)", len(p), off, g.size)
	}
	g.mu.Lock()
	for g.avail < end && g.err == nil {
		g.cond.Wait()
	}
	ready, err := g.avail >= end, g.err
	g.mu.Unlock()
	if !ready {
		return err
	}
	_, rerr := g.f.ReadAt(p, off)
	return rerr
}

// The NBD protocol (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md),
// as much of it as a read-only export to qemu needs: the fixed newstyle
// handshake, NBD_OPT_GO/INFO/EXPORT_NAME, simple replies, READ and DISC.
const (
	nbdMagic        = 0x4e42444d41474943 // "NBDMAGIC"
	nbdOptMagic     = 0x49484156454F5054 // "IHAVEOPT"
	nbdRepMagic     = 0x0003e889045565a9
	nbdRequestMagic = 0x25609513
	nbdReplyMagic   = 0x67446698

	nbdFlagFixedNewstyle = 1 << 0
	nbdFlagNoZeroes      = 1 << 1

	nbdOptExportName = 1
	nbdOptAbort      = 2
	nbdOptInfo       = 6
	nbdOptGo         = 7

	nbdRepAck      = 1
	nbdRepInfo     = 3
	nbdRepErrUnsup = 1<<31 + 1
	nbdRepErrInval = 1<<31 + 3

	nbdInfoExport = 0

	nbdTransHasFlags = 1 << 0
	nbdTransReadOnly = 1 << 1

	nbdCmdRead = 0
	nbdCmdDisc = 2

	nbdEPERM  = 1
	nbdEIO    = 5
	nbdEINVAL = 22

	// nbdMaxRead bounds one request: qemu's own limit without a
	// block-size answer is 32 MiB.
	nbdMaxRead = 32 << 20
	// nbdMaxOption bounds an option's data (an export name and info
	// requests: a few bytes).
	nbdMaxOption = 4096
	// nbdInFlight is how many reads are served at once per connection
	// (qemu-img convert keeps up to 16 in flight).
	nbdInFlight = 16
)

// serveNBD serves g read-only on ln to every client until ctx ends or ln
// is closed. The client is the qemu-img this package started; it is still
// held to the protocol: anything else ends its connection.
func serveNBD(ctx context.Context, ln net.Listener, g *growing) {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			cstop := context.AfterFunc(ctx, func() { conn.Close() })
			defer cstop()
			if nbdHandshake(conn, g.size) {
				nbdTransmit(conn, g)
			}
		}()
	}
}

// nbdHandshake runs the option haggling; true when transmission starts.
func nbdHandshake(c net.Conn, size int64) bool {
	be := binary.BigEndian
	hello := be.AppendUint64(nil, nbdMagic)
	hello = be.AppendUint64(hello, nbdOptMagic)
	hello = be.AppendUint16(hello, nbdFlagFixedNewstyle|nbdFlagNoZeroes)
	if _, err := c.Write(hello); err != nil {
		return false
	}
	var cflags [4]byte
	if _, err := io.ReadFull(c, cflags[:]); err != nil {
		return false
	}
	noZeroes := be.Uint32(cflags[:])&nbdFlagNoZeroes != 0
	trans := uint16(nbdTransHasFlags | nbdTransReadOnly)
	reply := func(opt, typ uint32, data []byte) bool {
		b := be.AppendUint64(nil, nbdRepMagic)
		b = be.AppendUint32(b, opt)
		b = be.AppendUint32(b, typ)
		b = be.AppendUint32(b, uint32(len(data)))
		_, err := c.Write(append(b, data...))
		return err == nil
	}
	for {
		var hdr [16]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return false
		}
		if be.Uint64(hdr[0:]) != nbdOptMagic {
			return false
		}
		opt, n := be.Uint32(hdr[8:]), be.Uint32(hdr[12:])
		if n > nbdMaxOption {
			return false
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(c, data); err != nil {
			return false
		}
		switch opt {
		case nbdOptExportName:
			b := be.AppendUint64(nil, uint64(size))
			b = be.AppendUint16(b, trans)
			if !noZeroes {
				b = append(b, make([]byte, 124)...)
			}
			_, err := c.Write(b)
			return err == nil
		case nbdOptInfo, nbdOptGo:
			// name length, name, number of info requests, requests: the
			// one export answers to any name; NBD_INFO_EXPORT is always sent.
			if len(data) < 6 || int(be.Uint32(data))+6 > len(data) {
				if !reply(opt, nbdRepErrInval, nil) {
					return false
				}
				continue
			}
			info := be.AppendUint16(nil, nbdInfoExport)
			info = be.AppendUint64(info, uint64(size))
			info = be.AppendUint16(info, trans)
			if !reply(opt, nbdRepInfo, info) || !reply(opt, nbdRepAck, nil) {
				return false
			}
			if opt == nbdOptGo {
				return true
			}
		case nbdOptAbort:
			reply(opt, nbdRepAck, nil)
			return false
		default:
			// STARTTLS, STRUCTURED_REPLY, meta contexts, LIST: not
			// offered; qemu goes on with simple replies.
			if !reply(opt, nbdRepErrUnsup, nil) {
				return false
			}
		}
	}
}

// nbdTransmit serves requests until DISC, a protocol error or a closed
// connection; reads are served concurrently (a read waiting for the
// download must not hold up one of bytes already there), replies written
// whole under a lock.
func nbdTransmit(c net.Conn, g *growing) {
	be := binary.BigEndian
	var wmu sync.Mutex
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, nbdInFlight)
	send := func(cookie uint64, errno uint32, data []byte) {
		b := make([]byte, 16, 16+len(data))
		be.PutUint32(b[0:], nbdReplyMagic)
		be.PutUint32(b[4:], errno)
		be.PutUint64(b[8:], cookie)
		b = append(b, data...)
		wmu.Lock()
		defer wmu.Unlock()
		c.Write(b)
	}
	for {
		var req [28]byte
		if _, err := io.ReadFull(c, req[:]); err != nil {
			return
		}
		if be.Uint32(req[0:]) != nbdRequestMagic {
			return
		}
		typ := be.Uint16(req[6:])
		cookie := be.Uint64(req[8:])
		off, n := be.Uint64(req[16:]), be.Uint32(req[24:])
		switch typ {
		case nbdCmdRead:
		case nbdCmdDisc:
			return
		default:
			// A read-only export: a WRITE's payload follows its header and
			// would be read as requests; nothing else may change the disk.
			send(cookie, nbdEPERM, nil)
			if typ == 1 {
				return
			}
			continue
		}
		if n > nbdMaxRead || off > uint64(g.size) || uint64(n) > uint64(g.size)-off {
			send(cookie, nbdEINVAL, nil)
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			buf := make([]byte, n)
			if err := g.ReadAt(buf, int64(off)); err != nil {
				send(cookie, nbdEIO, nil)
				return
			}
			send(cookie, 0, buf)
		}()
	}
}

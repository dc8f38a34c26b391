package vsphere

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
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
	if err := g.wait(off, off+int64(len(p))); err != nil {
		return err
	}
	_, err := g.f.ReadAt(p, off)
	return err
}

// wait waits until [off, end) is downloaded.
func (g *growing) wait(off, end int64) error {
	if off < 0 || end > g.size || end < off {
		return fmt.Errorf("read of [%d, %d) past the end (%d)", off, end, g.size)
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
	return nil
}

// The NBD protocol (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md),
// as much of it as a read-only export to qemu needs: the fixed newstyle
// handshake, NBD_OPT_GO/INFO/EXPORT_NAME, structured replies with the
// base:allocation context (qemu-img then skips the holes of the sparse
// download instead of reading and scanning their zeros), READ,
// BLOCK_STATUS and DISC.
const (
	nbdMagic        = 0x4e42444d41474943 // "NBDMAGIC"
	nbdOptMagic     = 0x49484156454F5054 // "IHAVEOPT"
	nbdRepMagic     = 0x0003e889045565a9
	nbdRequestMagic = 0x25609513
	nbdReplyMagic   = 0x67446698
	nbdChunkMagic   = 0x668e33ef

	nbdFlagFixedNewstyle = 1 << 0
	nbdFlagNoZeroes      = 1 << 1

	nbdOptExportName     = 1
	nbdOptAbort          = 2
	nbdOptInfo           = 6
	nbdOptGo             = 7
	nbdOptStructured     = 8
	nbdOptSetMetaContext = 10

	nbdRepAck         = 1
	nbdRepInfo        = 3
	nbdRepMetaContext = 4
	nbdRepErrUnsup    = 1<<31 + 1
	nbdRepErrInval    = 1<<31 + 3

	nbdInfoExport = 0

	nbdTransHasFlags = 1 << 0
	nbdTransReadOnly = 1 << 1

	nbdCmdRead        = 0
	nbdCmdWrite       = 1
	nbdCmdDisc        = 2
	nbdCmdBlockStatus = 7
	nbdCmdFlagReqOne  = 1 << 3

	nbdReplyFlagDone      = 1
	nbdReplyTypeNone      = 0
	nbdReplyTypeData      = 1
	nbdReplyTypeBlockStat = 5
	nbdReplyTypeError     = 1<<15 + 1

	nbdStateHole = 1
	nbdStateZero = 2

	// nbdAllocation is the id of the one meta context offered.
	nbdAllocation     = 1
	nbdAllocationName = "base:allocation"

	nbdEPERM  = 1
	nbdEIO    = 5
	nbdEINVAL = 22

	// nbdMaxRead bounds one request: qemu's own limit without a
	// block-size answer is 32 MiB.
	nbdMaxRead = 32 << 20
	// nbdMaxOption bounds an option's data (an export name, info
	// requests, a context query: a few bytes).
	nbdMaxOption = 4096
	// nbdInFlight is how many requests are served at once per
	// connection (qemu-img convert keeps up to 16 in flight).
	nbdInFlight = 16
	// nbdMaxExtents bounds one BLOCK_STATUS answer.
	nbdMaxExtents = 256
)

// nbdSession is what the handshake settled.
type nbdSession struct {
	structured bool // structured replies
	allocation bool // base:allocation selected
}

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
			if s, ok := nbdHandshake(conn, g.size); ok {
				nbdTransmit(conn, g, s)
			}
		}()
	}
}

// nbdHandshake runs the option haggling; ok when transmission starts.
func nbdHandshake(c net.Conn, size int64) (s nbdSession, ok bool) {
	be := binary.BigEndian
	hello := be.AppendUint64(nil, nbdMagic)
	hello = be.AppendUint64(hello, nbdOptMagic)
	hello = be.AppendUint16(hello, nbdFlagFixedNewstyle|nbdFlagNoZeroes)
	if _, err := c.Write(hello); err != nil {
		return s, false
	}
	var cflags [4]byte
	if _, err := io.ReadFull(c, cflags[:]); err != nil {
		return s, false
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
			return s, false
		}
		if be.Uint64(hdr[0:]) != nbdOptMagic {
			return s, false
		}
		opt, n := be.Uint32(hdr[8:]), be.Uint32(hdr[12:])
		if n > nbdMaxOption {
			return s, false
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(c, data); err != nil {
			return s, false
		}
		switch opt {
		case nbdOptExportName:
			b := be.AppendUint64(nil, uint64(size))
			b = be.AppendUint16(b, trans)
			if !noZeroes {
				b = append(b, make([]byte, 124)...)
			}
			_, err := c.Write(b)
			return s, err == nil
		case nbdOptInfo, nbdOptGo:
			// name length, name, number of info requests, requests: the
			// one export answers to any name; NBD_INFO_EXPORT is always sent.
			if len(data) < 6 || int(be.Uint32(data))+6 > len(data) {
				if !reply(opt, nbdRepErrInval, nil) {
					return s, false
				}
				continue
			}
			info := be.AppendUint16(nil, nbdInfoExport)
			info = be.AppendUint64(info, uint64(size))
			info = be.AppendUint16(info, trans)
			if !reply(opt, nbdRepInfo, info) || !reply(opt, nbdRepAck, nil) {
				return s, false
			}
			if opt == nbdOptGo {
				return s, true
			}
		case nbdOptStructured:
			if n != 0 {
				if !reply(opt, nbdRepErrInval, nil) {
					return s, false
				}
				continue
			}
			s.structured = true
			if !reply(opt, nbdRepAck, nil) {
				return s, false
			}
		case nbdOptSetMetaContext:
			if !s.structured {
				if !reply(opt, nbdRepErrInval, nil) {
					return s, false
				}
				continue
			}
			queries, okq := metaQueries(data)
			if !okq {
				if !reply(opt, nbdRepErrInval, nil) {
					return s, false
				}
				continue
			}
			s.allocation = false
			for _, q := range queries {
				if q == nbdAllocationName {
					s.allocation = true
					if !reply(opt, nbdRepMetaContext, append(be.AppendUint32(nil, nbdAllocation), nbdAllocationName...)) {
						return s, false
					}
				}
			}
			if !reply(opt, nbdRepAck, nil) {
				return s, false
			}
		case nbdOptAbort:
			reply(opt, nbdRepAck, nil)
			return s, false
		default:
			// STARTTLS, LIST, LIST_META_CONTEXT, extended headers: not
			// offered.
			if !reply(opt, nbdRepErrUnsup, nil) {
				return s, false
			}
		}
	}
}

// metaQueries reads NBD_OPT_SET_META_CONTEXT's data: the export name
// and the queries.
func metaQueries(d []byte) ([]string, bool) {
	be := binary.BigEndian
	if len(d) < 8 {
		return nil, false
	}
	nl := int(be.Uint32(d))
	if nl > len(d)-8 {
		return nil, false
	}
	d = d[4+nl:]
	nq := int(be.Uint32(d))
	d = d[4:]
	var qs []string
	for range nq {
		if len(d) < 4 {
			return nil, false
		}
		l := int(be.Uint32(d))
		if l > len(d)-4 {
			return nil, false
		}
		qs = append(qs, string(d[4:4+l]))
		d = d[4+l:]
	}
	return qs, len(d) == 0
}

// nbdTransmit serves requests until DISC, a protocol error or a closed
// connection; requests are served concurrently (one waiting for the
// download must not hold up one for bytes already there), each reply
// written whole under a lock.
func nbdTransmit(c net.Conn, g *growing, s nbdSession) {
	be := binary.BigEndian
	var wmu sync.Mutex
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, nbdInFlight)
	write := func(bufs net.Buffers) {
		wmu.Lock()
		defer wmu.Unlock()
		bufs.WriteTo(c)
	}
	// chunk writes one structured reply chunk (always the last one).
	chunk := func(cookie uint64, typ uint16, payload ...[]byte) {
		n := 0
		for _, p := range payload {
			n += len(p)
		}
		var hdr [20]byte
		be.PutUint32(hdr[0:], nbdChunkMagic)
		be.PutUint16(hdr[4:], nbdReplyFlagDone)
		be.PutUint16(hdr[6:], typ)
		be.PutUint64(hdr[8:], cookie)
		be.PutUint32(hdr[16:], uint32(n))
		write(append(net.Buffers{hdr[:]}, payload...))
	}
	fail := func(cookie uint64, errno uint32) {
		if s.structured {
			chunk(cookie, nbdReplyTypeError, be.AppendUint16(be.AppendUint32(nil, errno), 0))
			return
		}
		var hdr [16]byte
		be.PutUint32(hdr[0:], nbdReplyMagic)
		be.PutUint32(hdr[4:], errno)
		be.PutUint64(hdr[8:], cookie)
		write(net.Buffers{hdr[:]})
	}
	data := func(cookie, off uint64, b []byte) {
		if s.structured {
			chunk(cookie, nbdReplyTypeData, be.AppendUint64(nil, off), b)
			return
		}
		var hdr [16]byte
		be.PutUint32(hdr[0:], nbdReplyMagic)
		be.PutUint64(hdr[8:], cookie)
		write(net.Buffers{hdr[:], b})
	}
	for {
		var req [28]byte
		if _, err := io.ReadFull(c, req[:]); err != nil {
			return
		}
		if be.Uint32(req[0:]) != nbdRequestMagic {
			return
		}
		flags, typ := be.Uint16(req[4:]), be.Uint16(req[6:])
		cookie := be.Uint64(req[8:])
		off, n := be.Uint64(req[16:]), be.Uint32(req[24:])
		switch typ {
		case nbdCmdRead, nbdCmdBlockStatus:
		case nbdCmdDisc:
			return
		default:
			// A read-only export: nothing may change the disk, and a
			// WRITE's payload would be read as requests.
			fail(cookie, nbdEPERM)
			if typ == nbdCmdWrite {
				return
			}
			continue
		}
		if off > uint64(g.size) || uint64(n) > uint64(g.size)-off || n == 0 ||
			(typ == nbdCmdRead && n > nbdMaxRead) || (typ == nbdCmdBlockStatus && !s.allocation) {
			fail(cookie, nbdEINVAL)
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if typ == nbdCmdBlockStatus {
				max := nbdMaxExtents
				if flags&nbdCmdFlagReqOne != 0 {
					max = 1
				}
				ext, err := g.extents(int64(off), int64(n), max)
				if err != nil {
					fail(cookie, nbdEIO)
					return
				}
				p := be.AppendUint32(nil, nbdAllocation)
				for _, e := range ext {
					p = be.AppendUint32(p, uint32(e.length))
					p = be.AppendUint32(p, e.flags)
				}
				chunk(cookie, nbdReplyTypeBlockStat, p)
				return
			}
			if err := g.wait(int64(off), int64(off)+int64(n)); err != nil {
				fail(cookie, nbdEIO)
				return
			}
			if sc, ok := c.(syscall.Conn); ok {
				// The bytes go from the page cache to the socket
				// (sendfile), not through a buffer here.
				if !sendData(sc, s, cookie, off, n, g.f, &wmu) {
					c.Close()
				}
				return
			}
			bp := readBufs.Get().(*[]byte)
			defer readBufs.Put(bp)
			if cap(*bp) < int(n) {
				*bp = make([]byte, n)
			}
			buf := (*bp)[:n]
			if _, err := g.f.ReadAt(buf, int64(off)); err != nil {
				fail(cookie, nbdEIO)
				return
			}
			data(cookie, off, buf)
		}()
	}
}

// readBufs holds read buffers across requests: qemu-img asks for up to a
// few MiB at a time, thousands of times per disk.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2<<20); return &b }}

type extent struct {
	length int64
	flags  uint32
}

// extents describes [off, off+n) as data and holes, as far as it is
// downloaded: it waits for the block at off, and answers for what is
// there (the protocol lets the answer be shorter than asked). The
// download leaves all-zero blocks as holes, so a hole reads as zeros.
func (g *growing) extents(off, n int64, max int) ([]extent, error) {
	g.mu.Lock()
	for g.avail <= off && g.err == nil {
		g.cond.Wait()
	}
	avail, err := g.avail, g.err
	g.mu.Unlock()
	if avail <= off {
		return nil, err
	}
	end := min(off+n, avail)
	fd := int(g.f.Fd())
	var out []extent
	for pos := off; pos < end && len(out) < max; {
		data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if err == unix.ENXIO || err == nil && data >= end {
			out = append(out, extent{end - pos, nbdStateHole | nbdStateZero})
			break
		}
		if err != nil {
			return nil, err
		}
		if data > pos {
			out = append(out, extent{data - pos, nbdStateHole | nbdStateZero})
			pos = data
			continue
		}
		hole, err := unix.Seek(fd, pos, unix.SEEK_HOLE)
		if err != nil {
			return nil, err
		}
		hole = min(hole, end)
		out = append(out, extent{hole - pos, 0})
		pos = hole
	}
	// Lengths are 32-bit in the reply: qemu asks for less than 4 GiB.
	for i := range out {
		if out[i].length > 1<<31 {
			out[i].length = 1 << 31
			out = out[:i+1]
			break
		}
	}
	return out, nil
}

// sendData writes a read's reply: its header, then n bytes of f from off
// with sendfile, under the connection's write lock. false: the reply is
// cut (the connection must end; qemu sees the read fail).
func sendData(sc syscall.Conn, s nbdSession, cookie, off uint64, n uint32, f *os.File, wmu *sync.Mutex) bool {
	be := binary.BigEndian
	var hdr []byte
	if s.structured {
		hdr = be.AppendUint32(hdr, nbdChunkMagic)
		hdr = be.AppendUint16(hdr, nbdReplyFlagDone)
		hdr = be.AppendUint16(hdr, nbdReplyTypeData)
		hdr = be.AppendUint64(hdr, cookie)
		hdr = be.AppendUint32(hdr, 8+n)
		hdr = be.AppendUint64(hdr, off)
	} else {
		hdr = be.AppendUint32(hdr, nbdReplyMagic)
		hdr = be.AppendUint32(hdr, 0)
		hdr = be.AppendUint64(hdr, cookie)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	src := int(f.Fd())
	wmu.Lock()
	defer wmu.Unlock()
	if _, err := sc.(net.Conn).Write(hdr); err != nil {
		return false
	}
	pos, left := int64(off), int(n)
	var serr error
	werr := rc.Write(func(fd uintptr) bool {
		for left > 0 {
			m, err := unix.Sendfile(int(fd), src, &pos, left)
			if m > 0 {
				left -= m
			}
			switch {
			case err == unix.EAGAIN:
				return false // wait until the socket takes more
			case err == unix.EINTR:
			case err != nil:
				serr = err
				return true
			case m == 0:
				serr = io.ErrUnexpectedEOF
				return true
			}
		}
		return true
	})
	return werr == nil && serr == nil && left == 0
}

package vsphere

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// startNBD serves g on a socket in a temporary directory.
func startNBD(t *testing.T, g *growing) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { serveNBD(ctx, ln, g); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return sock
}

// growingFile is a sparse file of size (> 3 MiB) bytes holding data at 1 MiB and
// from 3 MiB (the rest holes), none of it announced yet.
func growingFile(t *testing.T, size int64) (*growing, []byte) {
	t.Helper()
	want := make([]byte, size)
	rand.Read(want[1<<20 : 2<<20])
	rand.Read(want[3<<20:])
	f, err := os.Create(filepath.Join(t.TempDir(), "disk.part"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < size; off += block {
		if b := want[off:min(off+block, size)]; !allZero(b) {
			f.WriteAt(b, off)
		}
	}
	return newGrowing(f, size), want
}

// qemu-img converts the file while it "downloads": every read waits for
// its bytes, holes are skipped through base:allocation, and the output is
// the file.
func TestNBDServesGrowingFile(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	t.Parallel()
	size := int64(5<<20 + 4096)
	g, want := growingFile(t, size)
	sock := startNBD(t, g)
	out := filepath.Join(t.TempDir(), "out.raw")
	conv := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "raw",
		`json:{"driver":"raw","file":{"driver":"nbd","server":{"type":"unix","path":"`+sock+`"}}}`, out)
	var stderr bytes.Buffer
	conv.Stderr = &stderr
	if err := conv.Start(); err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < size; off += 64 << 10 {
		g.advance(min(off+64<<10, size))
	}
	if err := conv.Wait(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, stderr.Bytes())
	}
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the conversion read %d bytes unlike the file's %d (%v)", len(got), len(want), err)
	}

	// A download that stops half way: qemu-img fails, it never reads the
	// bytes that did not come as the zeros of the sparse file.
	g, _ = growingFile(t, size)
	sock = startNBD(t, g)
	g.advance(2 << 20)
	conv = exec.Command("qemu-img", "convert", "-f", "raw", "-O", "raw",
		`json:{"driver":"raw","file":{"driver":"nbd","server":{"type":"unix","path":"`+sock+`"}}}`, filepath.Join(t.TempDir(), "half.raw"))
	if err := conv.Start(); err != nil {
		t.Fatal(err)
	}
	g.fail(errors.New("dropped"))
	if err := conv.Wait(); err == nil {
		t.Error("qemu-img converted a disk whose download stopped half way")
	}
}

// A download that fails wakes the readers waiting for it with its error.
func TestGrowingFailWakesReaders(t *testing.T) {
	g, _ := growingFile(t, 4<<20)
	g.advance(1 << 20)
	if err := g.ReadAt(make([]byte, 4096), 0); err != nil {
		t.Fatalf("a read of downloaded bytes: %v", err)
	}
	errDropped := errors.New("dropped")
	res := make(chan error, 1)
	go func() { res <- g.ReadAt(make([]byte, 4096), 2<<20) }()
	g.fail(errDropped)
	if err := <-res; !errors.Is(err, errDropped) {
		t.Fatalf("a waiting read returned %v, want the download's error", err)
	}
	if err := g.ReadAt(make([]byte, 10), 4<<20-5); err == nil {
		t.Error("a read past the end succeeded")
	}
}

// The export is read-only and bounded: reads past the end and writes are
// refused, a write ends the connection.
func TestNBDRefuses(t *testing.T) {
	g, _ := growingFile(t, 4<<20)
	g.advance(4 << 20)
	c, err := net.Dial("unix", startNBD(t, g))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	be := binary.BigEndian
	var hello [18]byte
	if _, err := io.ReadFull(c, hello[:]); err != nil || be.Uint64(hello[:]) != nbdMagic {
		t.Fatalf("hello: %x %v", hello, err)
	}
	c.Write(be.AppendUint32(nil, nbdFlagFixedNewstyle|nbdFlagNoZeroes))
	// NBD_OPT_EXPORT_NAME "": size and flags.
	opt := be.AppendUint64(nil, nbdOptMagic)
	opt = be.AppendUint32(opt, nbdOptExportName)
	c.Write(be.AppendUint32(opt, 0))
	var exp [10]byte
	if _, err := io.ReadFull(c, exp[:]); err != nil || be.Uint64(exp[:]) != 4<<20 || be.Uint16(exp[8:])&nbdTransReadOnly == 0 {
		t.Fatalf("export: %x %v", exp, err)
	}
	request := func(typ uint16, off uint64, n uint32) uint32 {
		r := be.AppendUint32(nil, nbdRequestMagic)
		r = be.AppendUint16(r, 0)
		r = be.AppendUint16(r, typ)
		r = be.AppendUint64(r, 7)
		r = be.AppendUint64(r, off)
		c.Write(be.AppendUint32(r, n))
		var rep [16]byte
		if _, err := io.ReadFull(c, rep[:]); err != nil || be.Uint32(rep[:]) != nbdReplyMagic {
			t.Fatalf("reply: %x %v", rep, err)
		}
		return be.Uint32(rep[4:])
	}
	for _, tc := range []struct {
		name string
		typ  uint16
		off  uint64
		n    uint32
		want uint32
	}{
		{"past the end", nbdCmdRead, 4<<20 - 10, 20, nbdEINVAL},
		{"offset overflow", nbdCmdRead, 1<<64 - 1, 4096, nbdEINVAL},
		{"too large", nbdCmdRead, 0, nbdMaxRead + 1, nbdEINVAL},
		{"block status without the context", nbdCmdBlockStatus, 0, 4096, nbdEINVAL},
		{"trim", 4, 0, 4096, nbdEPERM},
		{"write", nbdCmdWrite, 0, 4096, nbdEPERM},
	} {
		if got := request(tc.typ, tc.off, tc.n); got != tc.want {
			t.Errorf("%s: error %d, want %d", tc.name, got, tc.want)
		}
	}
	// The write's payload is never read as requests: the connection ends.
	if _, err := io.ReadFull(c, make([]byte, 1)); err == nil {
		t.Error("the connection is still open after a write")
	}
}

package qemuimg

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dirty is how many of f's pages wait to be written (dirty, not yet
// under writeback), from cachestat(2) (Linux 6.5).
func dirty(t *testing.T, f *os.File) uint64 {
	t.Helper()
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Skip("cachestat's number is known here for amd64 and arm64 only")
	}
	var rng struct{ off, len uint64 }
	var st struct{ cache, dirty, writeback, evicted, recentlyEvicted uint64 }
	const sysCachestat = 451
	_, _, e := unix.Syscall6(sysCachestat, f.Fd(), uintptr(unsafe.Pointer(&rng)), uintptr(unsafe.Pointer(&st)), 0, 0, 0)
	if e != 0 {
		if errors.Is(e, syscall.ENOSYS) {
			t.Skip("no cachestat(2) in this kernel")
		}
		t.Fatalf("cachestat: %v", e)
	}
	return st.dirty
}

// While qemu-img writes, the output's pages go to disk without waiting
// for the fsync at the end: a file under startWriteback loses its dirty
// pages while one written beside it without keeps them (the kernel
// holds GiBs before writing on its own).
func TestStartWritebackWritesBeforeTheFsync(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("hyper2kvm"), 4<<20/9)
	open := func(name string) *os.File {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		return f
	}
	control, f := open("control"), open("out")
	if dirty(t, control) == 0 || dirty(t, f) == 0 {
		t.Skip("this file system writes at once (no dirty pages to see)")
	}
	stop := startWriteback(f)
	for dirty(t, f) > 0 { // the test's own timeout ends a wait that never ends
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if dirty(t, control) == 0 {
		t.Skip("the kernel wrote the control file back on its own meanwhile; nothing to compare")
	}
	stop2 := startWriteback(control)
	stop2() // stopping at once returns and leaves the file alone
}

package qemuimg

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// writebackEvery is how often the output's dirty pages are sent to disk
// while qemu-img writes it.
const writebackEvery = 250 * time.Millisecond

// startWriteback starts the disk writing f's dirty pages every
// writebackEvery until the returned stop is called. Left to itself the
// kernel holds up to vm.dirty_background_ratio of memory (GiBs) before
// writing any, so a conversion smaller than that computes first and then
// waits for the whole file in the final fsync, with every core idle;
// started early, the disk writes while qemu-img still reads and
// compresses. SYNC_FILE_RANGE_WRITE only queues the pages: it neither
// waits for them nor makes them durable (the fsync before the rename
// still does).
func startWriteback(f *os.File) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(writebackEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				// An error (a file system without it) only means the
				// fsync does all the writing, as before.
				_ = unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

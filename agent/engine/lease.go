package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Files held still while the job reads them.
//
// Whoever may write a source (or a file it refers to) could rewrite it
// while qemu reads it: set a qcow2's external data file bit, give a sparse
// VMDK another descriptor, and make qemu open a host file nobody checked.
// So every file the job reads gets a read lease (fcntl F_SETLEASE F_RDLCK)
// on the descriptor opened in LOAD, before any byte of it is read:
//
//   - taking it fails (EAGAIN) while any process has the file open for
//     writing: the job is refused, the file named;
//   - any later open for writing or truncate by anyone breaks it: the
//     kernel holds the writer back (up to fs.lease-break-time) and tells
//     this process (SIGIO, and F_GETLEASE stops answering F_RDLCK). The
//     job is then cancelled with sourceWritten, the lease released, its
//     outputs removed and its report cleared of what was read.
//
// A lease needs CAP_LEASE or the file's ownership, and a file system that
// supports them (local ones do; NFS, CIFS and some FUSE file systems do
// not). Where none can be taken the file is read as before and only the
// end-of-CONVERT check (unchanged) and the header re-read (headers.go)
// catch a change; the report warns.

// leaseCheckInterval is how often the watcher asks the kernel about every
// lease when no SIGIO came (a signal may be shared with other jobs of the
// process, and is only a hint).
const leaseCheckInterval = time.Second

// sourceWritten is the error that stops a job whose file was opened for
// writing while the job read it.
type sourceWritten struct{ path string }

func (e sourceWritten) Error() string {
	return fmt.Sprintf("%s was opened for writing while the job read it; the job was stopped and its outputs removed (convert files nobody writes meanwhile)", e.path)
}

// sourceChanged is a change found after the fact: the file's times or
// size moved, or the bytes its header parse read differ.
type sourceChanged struct{ msg string }

func (e sourceChanged) Error() string { return e.msg }

// isSourceChange says whether err stopped a job because what it read changed.
func isSourceChange(err error) bool {
	var w sourceWritten
	var c sourceChanged
	return errors.As(err, &w) || errors.As(err, &c)
}

// lease takes a read lease on f, opened as p. It returns false, with no
// error, where the file system or the caller's privileges allow none.
func (u *userFiles) lease(f *os.File, p string) (bool, error) {
	_, err := unix.FcntlInt(f.Fd(), unix.F_SETLEASE, unix.F_RDLCK)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EBUSY):
		return false, fmt.Errorf("%s is open for writing by another process; a job does not read a file while it is being written (close it, then submit again)", p)
	}
	u.mu.Lock()
	u.noLease = append(u.noLease, p)
	u.mu.Unlock()
	return false, nil
}

// unleased names the files read without a lease.
func (u *userFiles) unleased() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.noLease...)
}

// broken returns the path of a file whose lease is being broken, after
// releasing that lease so the writer may go on (the job stops reading it:
// the caller cancels it), or "".
func (u *userFiles) broken() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i, f := range u.files {
		if !u.leases[i] {
			continue
		}
		t, err := unix.FcntlInt(f.Fd(), unix.F_GETLEASE, 0)
		if err == nil && t == unix.F_RDLCK {
			continue
		}
		// A read lease being broken answers F_UNLCK, the type the
		// writer needs; one the kernel already removed (the break timed
		// out) answers F_UNLCK too.
		unix.FcntlInt(f.Fd(), unix.F_SETLEASE, unix.F_UNLCK)
		u.leases[i] = false
		return u.pathOf(f)
	}
	return ""
}

// watchLeases cancels ctx with sourceWritten when a lease breaks, until
// the returned stop is called.
func (u *userFiles) watchLeases(ctx context.Context, cancel context.CancelCauseFunc) (stop func()) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGIO)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(leaseCheckInterval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-sig:
			case <-tick.C:
			}
			if p := u.broken(); p != "" {
				cancel(sourceWritten{p})
				return
			}
		}
	}()
	return func() {
		signal.Stop(sig)
		close(done)
		<-finished
	}
}

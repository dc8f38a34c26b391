package guest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hyper2kvm/hyper2kvm/agent/sandbox"
)

// native is the native backend. It uses two private mount namespaces, each
// owned by its own process:
//
//   - the export's: `unshare --mount --propagation private` execs
//     qemu-storage-daemon, whose FUSE export of the image (the file "disk" in
//     the scratch dir) exists only there;
//   - the guest's: `unshare --mount --propagation private` execs cat, whose
//     only job is to hold the namespace (it exits when its stdin, a pipe from
//     this process, closes). The guest's filesystems are mounted there (with
//     nsenter) from loop devices this process attaches to the FUSE file, and
//     the sandbox runs guest programs there.
//
// Neither is ever visible on the host. The host process reaches the guest
// files through /proc/<holder pid>/root, which resolves in the guest's
// namespace, and opens them with openat2(RESOLVE_IN_ROOT) below the guest's
// mount point so symlinks cannot leave the guest.
//
// Why the daemon must not be in the guest's namespace: the task that drops
// the last reference to a mount namespace unmounts its filesystems, and
// unmounting a filesystem syncs it. If that task is the FUSE server, as when
// every process of a job is SIGKILLed at once (a unit killed, a stop that
// outlasts its timeout) and the daemon happens to die last, its exit syncs
// the guest's filesystem through the loop device into its own FUSE export,
// which it no longer serves: it hangs in D state for good, and with it the
// job's unit. The kernel releases the daemon's /dev/fuse (which aborts the
// connection) only after that unmount. With the namespaces apart, the
// daemon's exit unmounts only its export (which the loop devices keep
// alive) and aborts the connection; whoever tears the guest's namespace down
// then gets I/O errors from an aborted export, or a live daemon's answers,
// never a wait on itself.
//
// Why not a Go child re-exec'd in a new namespace: unshare(CLONE_NEWNS) in a
// Go process affects only one OS thread, and every file operation and child
// process would have to be pinned to it. Processes that own the namespaces,
// plus nsenter for the few mount and run steps, keep the state in a few
// processes whose death (even SIGKILL of ours, via Pdeathsig and the
// holder's stdin) tears it all down.
type native struct {
	dir      string // private scratch dir: disk (FUSE file), root (mount point), overlay
	qsd      *exec.Cmd
	qsdDone  chan error
	holder   *exec.Cmd // owns the guest's mount namespace
	holdIn   io.WriteCloser
	holdDone chan error
	mounts   []string // paths of mount points (in the guest's namespace), in mount order
	rootFD   int      // O_PATH fd of the guest root, -1 before Mount("/")
	closed   bool
	diskLen  int64
}

// openFlags resolve inside the guest root and never through magic links.
const resolveFlags = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

func openNative(ctx context.Context, img Image, o Options) (_ *native, err error) {
	for _, tool := range []string{"qemu-storage-daemon", "unshare", "nsenter", "mount", "qemu-img", "cat"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("cannot use native backend: %s not found (install qemu-system-common, util-linux, qemu-utils, coreutils)", tool)
		}
	}
	dir, err := os.MkdirTemp(o.WorkDir, "guest-native-")
	if err != nil {
		return nil, fmt.Errorf("cannot create scratch dir: %w", err)
	}
	n := &native{dir: dir, rootFD: -1}
	// Paths below are read through /proc/<pid>/root, which needs them absolute.
	if n.dir, err = filepath.Abs(dir); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("cannot resolve scratch dir: %w", err)
	}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if err := os.WriteFile(filepath.Join(dir, "disk"), nil, 0o600); err != nil {
		return nil, err
	}
	if err := os.Mkdir(filepath.Join(dir, "root"), 0o700); err != nil {
		return nil, err
	}
	if !o.Writable {
		ov := filepath.Join(dir, "overlay.qcow2")
		if err := overlay(ctx, img, ov); err != nil {
			return nil, err
		}
		img = Image{Path: ov, Format: "qcow2"}
	}
	bd, err := blockdev(img, false)
	if err != nil {
		return nil, err
	}
	if err := n.startHolder(ctx); err != nil {
		return nil, err
	}
	n.qsd = exec.Command("unshare", "--mount", "--propagation", "private", "--",
		"qemu-storage-daemon", "--blockdev", bd,
		"--export", "type=fuse,id=exp0,node-name=disk,writable=on,mountpoint="+filepath.Join(dir, "disk"))
	var stderr bytes.Buffer
	n.qsd.Stderr = &stderr
	n.qsd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := n.qsd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start qemu-storage-daemon: %w", err)
	}
	n.qsdDone = make(chan error, 1)
	go func() { n.qsdDone <- n.qsd.Wait() }()
	// The export is ready when the FUSE file, seen from inside the
	// daemon's namespace, has the image's size.
	for {
		if st, err := os.Stat(n.exportPath()); err == nil && st.Size() > 0 {
			n.diskLen = st.Size()
			return n, nil
		}
		select {
		case err := <-n.qsdDone:
			n.qsdDone <- err
			return nil, fmt.Errorf("cannot export %s with qemu-storage-daemon: %v: %s", img.Path, err, strings.TrimSpace(stderr.String()))
		case <-ctx.Done():
			return nil, fmt.Errorf("cannot export %s: %w", img.Path, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// startHolder starts the process that owns the guest's mount namespace and
// waits until the namespace is private: cat echoes a line only once
// unshare has made it so and exec'd it, and nothing may be mounted there
// before (a mount made while propagation is still shared would show on the
// host).
func (n *native) startHolder(ctx context.Context) error {
	n.holder = exec.Command("unshare", "--mount", "--propagation", "private", "--", "cat")
	n.holder.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	// Its stdin is a pipe only this process writes: when this process dies,
	// however, cat reads EOF and exits; Pdeathsig is the second line.
	in, err := n.holder.StdinPipe()
	if err != nil {
		return fmt.Errorf("cannot start the guest's namespace: %w", err)
	}
	n.holdIn = in
	out, err := n.holder.StdoutPipe()
	if err != nil {
		return fmt.Errorf("cannot start the guest's namespace: %w", err)
	}
	var stderr bytes.Buffer
	n.holder.Stderr = &stderr
	n.holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := n.holder.Start(); err != nil {
		return fmt.Errorf("cannot start the guest's namespace (unshare): %w", err)
	}
	n.holdDone = make(chan error, 1)
	ready := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(out, make([]byte, 6))
		ready <- err
		// Wait closes the stdout pipe once cat exits; nothing more is read.
		n.holdDone <- n.holder.Wait()
	}()
	if _, err := io.WriteString(in, "ready\n"); err != nil {
		return fmt.Errorf("cannot start the guest's namespace: %w", err)
	}
	select {
	case err := <-ready:
		if err != nil {
			return fmt.Errorf("cannot start the guest's namespace (unshare --mount): %v: %s", err, strings.TrimSpace(stderr.String()))
		}
	case <-ctx.Done():
		return fmt.Errorf("cannot start the guest's namespace: %w", ctx.Err())
	}
	// Belt and braces: never mount into the namespace this process is in.
	var own, its unix.Stat_t
	if err := unix.Stat("/proc/self/ns/mnt", &own); err != nil {
		return fmt.Errorf("cannot check the guest's namespace: %w", err)
	}
	if err := unix.Stat(n.holderNS(), &its); err != nil {
		return fmt.Errorf("cannot check the guest's namespace: %w", err)
	}
	if own.Ino == its.Ino && own.Dev == its.Dev {
		return errors.New("cannot start the guest's namespace: unshare --mount left it in this process's namespace")
	}
	return nil
}

func (n *native) Backend() string { return Native }

// holderNS is the guest's mount namespace.
func (n *native) holderNS() string {
	return "/proc/" + strconv.Itoa(n.holder.Process.Pid) + "/ns/mnt"
}

// guestPath is a scratch path as seen from inside the guest's namespace.
func (n *native) guestPath(name string) string {
	return fmt.Sprintf("/proc/%d/root%s", n.holder.Process.Pid, filepath.Join(n.dir, name))
}

// exportPath is the FUSE export as seen from inside the daemon's namespace.
func (n *native) exportPath() string {
	return fmt.Sprintf("/proc/%d/root%s", n.qsd.Process.Pid, filepath.Join(n.dir, "disk"))
}

// nsenter runs a host tool inside the guest's mount namespace.
func (n *native) nsenter(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--mount=" + n.holderNS(), "--"}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// attachLoop attaches a loop device to the bytes [off, off+size) of the
// FUSE export, which lives in the daemon's namespace and so has no path in
// the guest's (mount -o loop and losetup canonicalize /proc/PID/root/...
// into a path of the namespace they run in, which is the wrong file). The
// device clears itself when its last user closes it: the caller, once the
// filesystem on it is mounted, or the filesystem's unmount.
func (n *native) attachLoop(off, size int64, ro bool) (*os.File, error) {
	mode := os.O_RDWR
	flags := uint32(unix.LO_FLAGS_AUTOCLEAR)
	if ro {
		mode = os.O_RDONLY
		flags |= unix.LO_FLAGS_READ_ONLY
	}
	backing, err := os.OpenFile(n.exportPath(), mode, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot open the export: %w", err)
	}
	defer backing.Close()
	if st, err := backing.Stat(); err != nil || st.Size() != n.diskLen {
		return nil, fmt.Errorf("cannot use the export %s: not the %d-byte FUSE file (%v)", n.exportPath(), n.diskLen, err)
	}
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot attach a loop device: %w", err)
	}
	defer ctl.Close()
	cfg := unix.LoopConfig{Fd: uint32(backing.Fd()), Info: unix.LoopInfo64{Offset: uint64(off), Sizelimit: uint64(size), Flags: flags}}
	copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], filepath.Join(n.dir, "disk"))
	// Another process may take the free device between the two calls.
	for attempt := 0; ; attempt++ {
		num, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("cannot find a free loop device: %w", err)
		}
		name := "/dev/loop" + strconv.Itoa(num)
		dev, err := os.OpenFile(name, mode, 0)
		if err != nil {
			return nil, fmt.Errorf("cannot attach loop device %s: %w", name, err)
		}
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if err == nil {
			return dev, nil
		}
		dev.Close()
		if !errors.Is(err, unix.EBUSY) || attempt >= 20 {
			return nil, fmt.Errorf("cannot attach loop device %s: %w", name, err)
		}
	}
}

func (n *native) Mount(ctx context.Context, m Mount) error {
	if n.closed {
		return errors.New("cannot mount: session closed")
	}
	target, err := clean(m.Target)
	if err != nil {
		return err
	}
	if (target == "/") != (n.rootFD < 0) {
		return fmt.Errorf("cannot mount %s: the root must be mounted first, and once", target)
	}
	if m.Offset < 0 || m.Size <= 0 || m.Offset+m.Size > n.diskLen {
		return fmt.Errorf("cannot mount partition %d: offset %d size %d outside the %d-byte disk", m.Number, m.Offset, m.Size, n.diskLen)
	}
	point := filepath.Join(n.dir, "root")
	if target != "/" {
		// A guest's /boot could be a symlink to anywhere; mount only on a
		// real directory reached without symlinks.
		fd, err := unix.Openat2(n.rootFD, target, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: resolveFlags | unix.RESOLVE_NO_SYMLINKS})
		if err != nil {
			return fmt.Errorf("cannot mount on %s: not a directory without symlinks in the guest: %w", target, err)
		}
		unix.Close(fd)
		point = filepath.Join(point, target)
	}
	if err := CheckOptions(m.Options); err != nil {
		return fmt.Errorf("cannot mount partition %d on %s: %w", m.Number, target, err)
	}
	loop, err := n.attachLoop(m.Offset, m.Size, m.RO)
	if err != nil {
		return fmt.Errorf("cannot mount partition %d on %s: %w", m.Number, target, err)
	}
	// Held open until the mount holds the device, then left to it.
	defer loop.Close()
	opts := "nodev,nosuid" + hostUnique(m.FSType)
	if m.RO {
		opts += ",ro" + noReplay(m.FSType)
	}
	if m.Options != "" {
		opts += "," + m.Options
	}
	args := []string{"mount", "-o", opts}
	if m.FSType != "" {
		args = append(args, "-t", m.FSType)
	}
	args = append(args, loop.Name(), point)
	if _, err := n.nsenter(ctx, args...); err != nil {
		if m.FSType != "" && !HostKernelMounts(m.FSType) {
			return fmt.Errorf("cannot mount partition %d on %s: %w; this host's kernel has no %s: use fix.backend guestfs or auto (the appliance brings its own kernel), or install the module", m.Number, target, err, m.FSType)
		}
		return fmt.Errorf("cannot mount partition %d on %s: %w", m.Number, target, err)
	}
	n.mounts = append(n.mounts, point)
	if target == "/" {
		fd, err := unix.Open(n.guestPath("root"), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("cannot open the guest root: %w", err)
		}
		n.rootFD = fd
	}
	return nil
}

func (n *native) Unmount(ctx context.Context) error {
	if n.rootFD >= 0 {
		unix.Close(n.rootFD)
		n.rootFD = -1
	}
	var errs []error
	for i := len(n.mounts) - 1; i >= 0; i-- {
		if err := n.writeBack(n.mounts[i]); err != nil {
			errs = append(errs, err)
		}
		if _, err := n.nsenter(ctx, "umount", n.mounts[i]); err != nil {
			errs = append(errs, err)
		}
	}
	n.mounts = nil
	return errors.Join(errs...)
}

// FIFREEZE and FITHAW are linux/fs.h's _IOWR('X', 119, int) and
// _IOWR('X', 120, int) (golang.org/x/sys has no names for them).
const (
	fiFreeze = 0xC0045877
	fiThaw   = 0xC0045878
)

// writeBack puts everything written to the filesystem mounted at mp (a
// path in the guest's namespace) on the image, or says why it could not.
// umount cannot: a write that fails there (the export's daemon gone, its
// FUSE connection aborted, the work directory's disk full) is only logged
// by the kernel ("lost page write", "Aborting journal"), the unmount
// succeeds and the image keeps its old blocks. That is how a converted
// dracut guest kept its old grub.cfg (GRUB reads the filesystem without
// replaying the journal) and waited for /dev/sda1 for good. syncfs reports
// a failed writeback; freezing the filesystem also empties its journal
// into place (ext4 and XFS checkpoint and mark themselves clean), which
// umount would otherwise do only after the last error could be reported.
func (n *native) writeBack(mp string) error {
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/root%s", n.holder.Process.Pid, mp), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("cannot write back the guest's filesystem at %s: %w", n.rel(mp), err)
	}
	defer unix.Close(fd)
	fail := func(what string, err error) error {
		return fmt.Errorf("cannot write back the guest's filesystem at %s (%s: %w): the image would lack what FIX wrote; the kernel log names the failed writes", n.rel(mp), what, err)
	}
	if err := unix.Syncfs(fd); err != nil {
		return fail("syncfs", err)
	}
	if err := unix.IoctlSetInt(fd, fiFreeze, 0); err != nil {
		// A read-only mount freezes without writing; a filesystem that
		// cannot be frozen is left to umount's own write-back.
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EBUSY) {
			return nil
		}
		return fail("freeze", err)
	}
	if err := unix.IoctlSetInt(fd, fiThaw, 0); err != nil {
		return fail("thaw", err)
	}
	return nil
}

// rel is a mount point as the guest names it.
func (n *native) rel(mp string) string {
	r, err := filepath.Rel(filepath.Join(n.dir, "root"), mp)
	if err != nil || r == "." {
		return "/"
	}
	return "/" + r
}

func (n *native) open(p string, flags int, mode uint32) (int, error) {
	if n.rootFD < 0 {
		return -1, errors.New("no filesystem mounted")
	}
	c, err := clean(p)
	if err != nil {
		return -1, err
	}
	// Opening a FIFO must not block, and a guest's device node is never opened
	// (the filesystem is mounted nodev as well).
	flags |= unix.O_CLOEXEC
	if flags&unix.O_PATH == 0 {
		// openat2 refuses these with O_PATH, which never opens the file.
		flags |= unix.O_NOCTTY | unix.O_NONBLOCK
	}
	fd, err := unix.Openat2(n.rootFD, c, &unix.OpenHow{Flags: uint64(flags), Mode: uint64(mode), Resolve: resolveFlags})
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: c, Err: err}
	}
	return fd, nil
}

// openParent opens the directory holding p (resolved in the guest root) and
// returns it with p's final name.
func (n *native) openParent(p string) (int, string, error) {
	dir, base, err := split(p)
	if err != nil {
		return -1, "", err
	}
	fd, err := n.open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	return fd, base, err
}

func regular(fd int, p string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return st, &fs.PathError{Op: "stat", Path: p, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return st, fmt.Errorf("cannot use %s: %w", p, ErrNotRegular)
	}
	return st, nil
}

func (n *native) ReadFile(ctx context.Context, p string) ([]byte, error) {
	return n.readFileLimit(ctx, p, MaxFileSize)
}

func (n *native) readHead(ctx context.Context, p string, size int) ([]byte, error) {
	fd, err := n.open(p, unix.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	if _, err := regular(fd, p); err != nil {
		return nil, err
	}
	b := make([]byte, size)
	k, err := io.ReadFull(f, b)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, fmt.Errorf("cannot read %s: %w", p, err)
	}
	return b[:k], nil
}

func (n *native) readFileLimit(ctx context.Context, p string, limit int64) ([]byte, error) {
	fd, err := n.open(p, unix.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	if _, err := regular(fd, p); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", p, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("cannot read %s: larger than %d bytes", p, limit)
	}
	return b, nil
}

func (n *native) WriteFile(ctx context.Context, p string, data []byte, perm fs.FileMode) error {
	fd, err := n.open(p, unix.O_WRONLY|unix.O_CREAT, uint32(perm.Perm()))
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	if _, err := regular(fd, p); err != nil {
		return err
	}
	if err := unix.Ftruncate(fd, 0); err != nil {
		return fmt.Errorf("cannot truncate %s: %w", p, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("cannot write %s: %w", p, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("cannot sync %s: %w", p, err)
	}
	return nil
}

func (n *native) ReadDir(ctx context.Context, p string) ([]Entry, error) {
	fd, err := n.open(p, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("cannot list %s: %w", p, err)
	}
	out := make([]Entry, 0, len(names))
	for _, name := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue
		}
		out = append(out, entry(name, &st))
	}
	return out, nil
}

func entry(name string, st *unix.Stat_t) Entry {
	return Entry{Name: name, Mode: fileMode(st.Mode), Size: st.Size}
}

// fileMode turns a stat(2) st_mode, from either backend, into an fs.FileMode.
func fileMode(mode uint32) fs.FileMode {
	m := fs.FileMode(mode & 0o777)
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		m |= fs.ModeDir
	case unix.S_IFLNK:
		m |= fs.ModeSymlink
	case unix.S_IFIFO:
		m |= fs.ModeNamedPipe
	case unix.S_IFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		m |= fs.ModeDevice
	case unix.S_IFSOCK:
		m |= fs.ModeSocket
	}
	return m
}

func (n *native) Lstat(ctx context.Context, p string) (Entry, error) {
	if c, err := clean(p); err == nil && c == "/" {
		var st unix.Stat_t
		if n.rootFD < 0 {
			return Entry{}, errors.New("no filesystem mounted")
		}
		if err := unix.Fstat(n.rootFD, &st); err != nil {
			return Entry{}, err
		}
		return entry("/", &st), nil
	}
	pfd, base, err := n.openParent(p)
	if err != nil {
		return Entry{}, err
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return Entry{}, &fs.PathError{Op: "lstat", Path: p, Err: err}
	}
	return entry(base, &st), nil
}

func (n *native) Readlink(ctx context.Context, p string) (string, error) {
	pfd, base, err := n.openParent(p)
	if err != nil {
		return "", err
	}
	defer unix.Close(pfd)
	buf := make([]byte, 4096)
	k, err := unix.Readlinkat(pfd, base, buf)
	if err != nil {
		return "", &fs.PathError{Op: "readlink", Path: p, Err: err}
	}
	return string(buf[:k]), nil
}

func (n *native) Remove(ctx context.Context, p string) error {
	pfd, base, err := n.openParent(p)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if err := unix.Unlinkat(pfd, base, 0); err != nil {
		return &fs.PathError{Op: "remove", Path: p, Err: err}
	}
	return nil
}

func (n *native) Symlink(ctx context.Context, target, newname string) error {
	pfd, base, err := n.openParent(newname)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if err := unix.Symlinkat(target, pfd, base); err != nil {
		return &fs.PathError{Op: "symlink", Path: newname, Err: err}
	}
	return nil
}

func (n *native) Mkdir(ctx context.Context, p string) error {
	pfd, base, err := n.openParent(p)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if err := unix.Mkdirat(pfd, base, 0o755); err != nil {
		if err == unix.EEXIST {
			if e, lerr := n.Lstat(ctx, p); lerr == nil && e.Mode.IsDir() {
				return nil
			}
		}
		return &fs.PathError{Op: "mkdir", Path: p, Err: err}
	}
	return nil
}

// Run runs a guest program in the sandbox (agent/sandbox): a user
// namespace that maps the guest's root to an unprivileged host uid, an
// idmapped view of the guest tree that bwrap pivot_roots into, no network,
// its own PID namespace, a seccomp filter and no capabilities outside the
// guest's files. The sandbox process is this binary again, started inside
// the guest's mount namespace (the holder's), where the guest tree is
// mounted.
func (n *native) Run(ctx context.Context, argv ...string) ([]byte, error) {
	if n.rootFD < 0 {
		return nil, errors.New("cannot run in guest: no filesystem mounted")
	}
	if len(argv) == 0 {
		return nil, errors.New("cannot run in guest: empty command")
	}
	if err := sandbox.Check(); err != nil {
		return nil, fmt.Errorf("cannot run %s in guest: %w", argv[0], err)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("cannot run in guest: cannot find this program to start the sandbox: %w", err)
	}
	spec := sandbox.Spec{Root: filepath.Join(n.dir, "root"), Scratch: "/tmp", Argv: argv}
	args := append([]string{"--mount=" + n.holderNS(), "--", self}, spec.Args()...)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", sandbox.Env + "=1"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("cannot run %s in guest: %w: %s", strings.Join(argv, " "), err, tail(out, 2000))
	}
	return out, nil
}

func tail(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}

// Close unmounts, ends the guest's namespace, stops the daemon (which
// flushes the image) and removes the scratch dir. It runs with its own
// deadline, so a cancelled job still tears everything down. If unmounting
// fails, the holder's exit ends the guest's namespace while the daemon still
// serves the export, so the kernel drops (and syncs) what is left and the
// loop devices clear themselves; only then is the daemon stopped.
func (n *native) Close() error {
	if n.closed {
		return nil
	}
	n.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var errs []error
	if n.qsdDone != nil {
		select {
		case err := <-n.qsdDone:
			// Gone while the guest was mounted: what was written since is
			// lost, whatever umount says.
			n.qsdDone <- err
			how := "exit status 0"
			if err != nil {
				how = err.Error()
			}
			errs = append(errs, fmt.Errorf("qemu-storage-daemon, which serves the guest's disk, exited while the guest was open (%s): what was written since is not on the image", how))
		default:
		}
	}
	if n.holder != nil && n.holder.Process != nil {
		if err := n.Unmount(ctx); err != nil {
			errs = append(errs, err)
		}
		n.holdIn.Close()
		if err := stop(n.holder, n.holdDone, syscall.SIGKILL); err != nil {
			errs = append(errs, fmt.Errorf("the guest's namespace: %w", err))
		}
	}
	if n.qsd != nil && n.qsd.Process != nil {
		if err := stop(n.qsd, n.qsdDone, syscall.SIGTERM); err != nil {
			errs = append(errs, fmt.Errorf("qemu-storage-daemon: %w", err))
		}
	}
	if err := os.RemoveAll(n.dir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cannot tear down guest session: %w", err)
	}
	return nil
}

// stop sends sig to a started process and waits for it (done receives its
// Wait), killing its process group if it is still there after 30 s.
func stop(cmd *exec.Cmd, done chan error, sig syscall.Signal) error {
	cmd.Process.Signal(sig)
	select {
	case <-done:
		return nil
	case <-time.After(30 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return fmt.Errorf("did not stop in 30s; killed")
	}
}

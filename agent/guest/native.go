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

// native is the native backend. Its mount namespace is owned by the
// qemu-storage-daemon process: `unshare --mount --propagation private` execs
// the daemon, so every mount made later (with nsenter into that namespace)
// lives and dies with it and is never visible on the host. The host process
// reaches the guest files through /proc/<daemon pid>/root, which resolves in
// the daemon's namespace, and opens them with openat2(RESOLVE_IN_ROOT) below
// the guest's mount point so symlinks cannot leave the guest.
//
// Why not a Go child re-exec'd in a new namespace: unshare(CLONE_NEWNS) in a
// Go process affects only one OS thread, and every file operation and child
// process would have to be pinned to it. A daemon that owns the namespace
// plus nsenter for the few mount and run steps keeps all state in one
// process whose death (even SIGKILL of ours, via Pdeathsig) tears it all down.
type native struct {
	dir     string // private scratch dir: disk (FUSE file), root (mount point), overlay
	qsd     *exec.Cmd
	done    chan error
	mounts  []string // host-namespace paths of mount points, in mount order
	rootFD  int      // O_PATH fd of the guest root, -1 before Mount("/")
	closed  bool
	diskLen int64
}

// openFlags resolve inside the guest root and never through magic links.
const resolveFlags = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

func openNative(ctx context.Context, img Image, o Options) (_ *native, err error) {
	for _, tool := range []string{"qemu-storage-daemon", "unshare", "nsenter", "mount", "qemu-img"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("cannot use native backend: %s not found (install qemu-system-common, util-linux, qemu-utils)", tool)
		}
	}
	dir, err := os.MkdirTemp(o.WorkDir, "guest-native-")
	if err != nil {
		return nil, fmt.Errorf("cannot create scratch dir: %w", err)
	}
	n := &native{dir: dir, rootFD: -1}
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
	n.qsd = exec.Command("unshare", "--mount", "--propagation", "private", "--",
		"qemu-storage-daemon", "--blockdev", bd,
		"--export", "type=fuse,id=exp0,node-name=disk,writable=on,mountpoint="+filepath.Join(dir, "disk"))
	var stderr bytes.Buffer
	n.qsd.Stderr = &stderr
	n.qsd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := n.qsd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start qemu-storage-daemon: %w", err)
	}
	n.done = make(chan error, 1)
	go func() { n.done <- n.qsd.Wait() }()
	// The export is ready when the FUSE file, seen from inside the
	// namespace, has the image's size.
	for {
		if st, err := os.Stat(n.nsPath("disk")); err == nil && st.Size() > 0 {
			n.diskLen = st.Size()
			return n, nil
		}
		select {
		case err := <-n.done:
			n.done <- err
			return nil, fmt.Errorf("cannot export %s with qemu-storage-daemon: %v: %s", img.Path, err, strings.TrimSpace(stderr.String()))
		case <-ctx.Done():
			return nil, fmt.Errorf("cannot export %s: %w", img.Path, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (n *native) Backend() string { return Native }

// nsPath is a scratch path as seen from inside the daemon's namespace.
func (n *native) nsPath(name string) string {
	return fmt.Sprintf("/proc/%d/root%s", n.qsd.Process.Pid, filepath.Join(n.dir, name))
}

// nsenter runs a host tool inside the daemon's mount namespace.
func (n *native) nsenter(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--mount=/proc/" + strconv.Itoa(n.qsd.Process.Pid) + "/ns/mnt", "--"}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
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
	hostTarget := filepath.Join(n.dir, "root")
	if target != "/" {
		// A guest's /boot could be a symlink to anywhere; mount only on a
		// real directory reached without symlinks.
		fd, err := unix.Openat2(n.rootFD, target, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: resolveFlags | unix.RESOLVE_NO_SYMLINKS})
		if err != nil {
			return fmt.Errorf("cannot mount on %s: not a directory without symlinks in the guest: %w", target, err)
		}
		unix.Close(fd)
		hostTarget = filepath.Join(hostTarget, target)
	}
	if err := CheckOptions(m.Options); err != nil {
		return fmt.Errorf("cannot mount partition %d on %s: %w", m.Number, target, err)
	}
	opts := fmt.Sprintf("loop,offset=%d,sizelimit=%d,nodev,nosuid", m.Offset, m.Size)
	if m.RO {
		opts += ",ro"
	}
	if m.Options != "" {
		opts += "," + m.Options
	}
	args := []string{"mount", "-o", opts}
	if m.FSType != "" {
		args = append(args, "-t", m.FSType)
	}
	args = append(args, filepath.Join(n.dir, "disk"), hostTarget)
	if _, err := n.nsenter(ctx, args...); err != nil {
		return fmt.Errorf("cannot mount partition %d on %s: %w", m.Number, target, err)
	}
	n.mounts = append(n.mounts, hostTarget)
	if target == "/" {
		fd, err := unix.Open(n.nsPath("root"), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
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
		if _, err := n.nsenter(ctx, "umount", n.mounts[i]); err != nil {
			errs = append(errs, err)
		}
	}
	n.mounts = nil
	return errors.Join(errs...)
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
	fd, err := n.open(p, unix.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	if _, err := regular(fd, p); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", p, err)
	}
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("cannot read %s: larger than %d bytes", p, MaxFileSize)
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
// the session's mount namespace, where the guest tree is mounted.
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
	args := append([]string{"--mount=/proc/" + strconv.Itoa(n.qsd.Process.Pid) + "/ns/mnt", "--", self}, spec.Args()...)
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

// Close unmounts, stops the daemon (which flushes the image) and removes the
// scratch dir. It runs with its own deadline, so a cancelled job still tears
// everything down; if unmounting fails, killing the daemon ends the namespace
// and the kernel drops its mounts and auto-clears the loop devices.
func (n *native) Close() error {
	if n.closed {
		return nil
	}
	n.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var errs []error
	if n.qsd != nil && n.qsd.Process != nil {
		if err := n.Unmount(ctx); err != nil {
			errs = append(errs, err)
		}
		n.qsd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.done:
		case <-time.After(30 * time.Second):
			syscall.Kill(-n.qsd.Process.Pid, syscall.SIGKILL)
			<-n.done
			errs = append(errs, errors.New("qemu-storage-daemon did not stop in 30s; killed"))
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

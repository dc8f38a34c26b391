// Package sandbox runs a guest's own programs (FIX's update-initramfs,
// dracut, dpkg, rpm) with no way back to the host.
//
// The boundary, from the outside in:
//
//   - the guest's tree is seen through an idmapped mount: a file the guest's
//     root owns on disk belongs to host uid UIDBase (systemd's "foreign" range,
//     0x7FFF0000), uid N to UIDBase+N;
//   - the program runs in its own user namespace that maps uid and gid 0-65535
//     to that range, so "root" in the guest is an unprivileged host uid and has
//     no capability in any of the host's namespaces;
//   - bubblewrap (Debian's bubblewrap, the tool Flatpak uses) makes new mount,
//     PID, network, IPC, UTS and cgroup namespaces, pivot_roots into the guest
//     tree and detaches the old root (a chroot() escape finds nothing above
//     "/"), mounts a fresh /proc, a /dev with only null, zero, full, random,
//     urandom and tty, and a tmpfs /run;
//   - capabilities are dropped to what editing the guest's own files needs
//     (chown, dac_override, fowner, fsetid), effective only on inodes mapped
//     in the namespace, i.e. the guest's;
//   - no_new_privs (bwrap sets it) and a seccomp filter (Filter) deny
//     mount, pivot_root, chroot, namespaces, keyrings, BPF, ptrace, modules,
//     io_uring and the like;
//   - rlimits bound processes, file size and core dumps, and the job unit's
//     cgroup (MemoryMax=, TasksMax=, CPUQuota=) holds the whole tree.
//
// Why bubblewrap and not a transient unit with RootDirectory= and
// PrivateUsers=: the guest tree lives in the native backend's private mount
// namespace (systemd cannot see it), systemd 252's PrivateUsers= maps only
// root and the caller, not a 65536-uid range, and it cannot idmap the tree.
// Why not systemd-nspawn --private-users-ownership=map: it wants a machine
// (cgroup delegation, /etc/machine-id, a registered scope) inside the job's
// unit. The idmapped mount is made here with the kernel's mount API because
// Debian 12's util-linux (2.38) ignores X-mount.idmap.
//
// The package's entry point runs as a separate process (Exec re-executes the
// current binary with Env set), inside the mount namespace that holds the
// guest tree, as root: a Go program cannot move its own threads into another
// mount namespace, so the native backend nsenters this process there.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// UIDBase is the first host uid and gid the guest's ids map to: systemd's
// range for files of "foreign" OS images (0x7FFF0000-0x7FFFFFFF), which no
// host user is allocated from.
const (
	UIDBase  = 0x7FFF0000
	UIDCount = 65536
)

// Env marks a process started to run the sandbox (see Main).
const Env = "HYPER2KVM_SANDBOX"

// Spec is what one sandboxed run needs.
type Spec struct {
	Root    string   // the guest's root directory, in the mount namespace Main runs in
	Scratch string   // a world-searchable directory (/tmp) where the idmapped tree and a clean /proc are mounted
	Argv    []string // the guest's program and its arguments, resolved inside the guest
}

// Cap is the set of capabilities the guest's program keeps.
var keep = []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID"}

// Environment is all the guest's program gets of an environment.
var environment = []string{
	"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "HOME=/root", "TERM=dumb",
	"DEBIAN_FRONTEND=noninteractive",
}

// Check says whether this machine can run the sandbox, and if not why, in
// words for a report.
func Check() error {
	if _, err := exec.LookPath("bwrap"); err != nil {
		return errors.New("bwrap not found: install bubblewrap")
	}
	if _, err := auditArch(); err != nil {
		return err
	}
	return nil
}

// IsChild says whether this process was started to run the sandbox; the
// binary's main (and a test binary's TestMain) then calls Main and exits.
func IsChild() bool { return os.Getenv(Env) == "1" }

// Args turns s into the arguments Main takes.
func (s Spec) Args() []string {
	return append([]string{s.Root, s.Scratch, "--"}, s.Argv...)
}

// Main is the sandbox process: it idmaps the guest tree, runs the program
// under bwrap in a new user namespace, forwards its output and exit status,
// and removes the idmapped mount. It returns the exit code.
func Main(args []string) int {
	if len(args) < 4 || args[2] != "--" {
		fmt.Fprintln(os.Stderr, "sandbox: usage: ROOT SCRATCH -- PROGRAM [ARG...]")
		return 125
	}
	s := Spec{Root: args[0], Scratch: args[1], Argv: args[3:]}
	code, err := run(context.Background(), s)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		return 125
	}
	return code
}

func run(ctx context.Context, s Spec) (int, error) {
	if err := Check(); err != nil {
		return 0, err
	}
	// bwrap mounts /proc, /dev and /run on these paths of the guest; a
	// symlink there would aim a mount elsewhere in bwrap's namespace.
	for _, d := range []string{"proc", "dev", "run"} {
		if st, err := os.Lstat(filepath.Join(s.Root, d)); err == nil && st.Mode()&os.ModeSymlink != 0 {
			return 0, fmt.Errorf("cannot run in guest: /%s is a symlink", d)
		}
	}
	// bwrap resolves the tree's path as the mapped uid, so every directory
	// above it must be searchable by anyone: /tmp, then a fresh directory
	// only root may list. The mounts in it exist only in this process's
	// mount namespace; elsewhere it is an empty directory, gone afterwards.
	dir, err := os.MkdirTemp(s.Scratch, "hyper2kvm-sandbox-")
	if err != nil {
		return 0, fmt.Errorf("cannot make the sandbox's scratch directory: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o711); err != nil {
		return 0, err
	}
	root := filepath.Join(dir, "root")
	proc := filepath.Join(dir, "proc")
	for _, d := range []string{root, proc} {
		if err := os.Mkdir(d, 0o711); err != nil {
			return 0, fmt.Errorf("cannot make %s: %w", d, err)
		}
	}
	userns, stop, err := mappedNamespace()
	if err != nil {
		return 0, err
	}
	err = idmap(s.Root, root, userns)
	unix.Close(userns)
	stop()
	if err != nil {
		return 0, err
	}
	defer unix.Unmount(root, unix.MNT_DETACH)
	// A user namespace may mount a new /proc only where one is already
	// fully visible; the job unit's ProtectKernelLogs= covers /proc/kmsg,
	// so give it one with nothing over it. Nothing in the sandbox sees it:
	// bwrap detaches the whole old root.
	if err := unix.Mount("proc", proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return 0, fmt.Errorf("cannot mount a clean /proc: %w", err)
	}
	defer unix.Unmount(proc, unix.MNT_DETACH)
	return bwrap(ctx, root, s.Argv)
}

// mappedNamespace makes a user namespace whose ids 0-65535 are the host's
// UIDBase range and returns a descriptor of it. A namespace lives as long
// as a process or descriptor holds it: a child is made in it, its
// namespace opened, and the child ended by stop.
func mappedNamespace() (fd int, stop func(), err error) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		return -1, nil, fmt.Errorf("cannot make the sandbox's user namespace: %w", err)
	}
	cmd := exec.Command(sleep, "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: UIDBase, Size: UIDCount}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: UIDBase, Size: UIDCount}},
		Pdeathsig:   syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return -1, nil, fmt.Errorf("cannot make the sandbox's user namespace: %w", err)
	}
	stop = func() { cmd.Process.Kill(); cmd.Wait() }
	fd, err = unix.Open("/proc/"+strconv.Itoa(cmd.Process.Pid)+"/ns/user", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		stop()
		return -1, nil, fmt.Errorf("cannot open the sandbox's user namespace: %w", err)
	}
	return fd, stop, nil
}

// idmap mounts src (with the mounts below it) on dst so that on-disk ids
// appear shifted into the UIDBase range, nosuid and nodev. When one of the
// guest's filesystems cannot be idmapped (a type without support, say an
// ESP's vfat on an older kernel), the others still are: the root alone,
// then each mount below it that can be, so the program runs without that
// filesystem rather than not at all. Skipped mounts are named on stderr,
// which FIX's output carries into the report.
func idmap(src, dst string, userns int) error {
	err := idmapOne(src, dst, userns, true)
	if err == nil {
		return nil
	}
	if err := idmapOne(src, dst, userns, false); err != nil {
		return err
	}
	subs, merr := mountsBelow(src)
	if merr != nil {
		return merr
	}
	for _, m := range subs {
		rel, _ := filepath.Rel(src, m)
		if e := idmapOne(m, filepath.Join(dst, rel), userns, true); e != nil {
			fmt.Fprintf(os.Stderr, "sandbox: /%s left out of the sandbox: %v\n", rel, e)
		}
	}
	return nil
}

func idmapOne(src, dst string, userns int, recursive bool) error {
	flags := unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC
	setFlags := unix.AT_EMPTY_PATH
	if recursive {
		flags |= unix.AT_RECURSIVE
		setFlags |= unix.AT_RECURSIVE
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, uint(flags))
	if err != nil {
		return fmt.Errorf("cannot clone the guest's mounts: %w", err)
	}
	defer unix.Close(fd)
	attr := &unix.MountAttr{
		Attr_set:  unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV,
		Userns_fd: uint64(userns),
	}
	if err := unix.MountSetattr(fd, "", uint(setFlags), attr); err != nil {
		return fmt.Errorf("cannot idmap the guest's filesystem (the kernel or this filesystem type does not support idmapped mounts; use fix.backend guestfs): %w", err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("cannot attach the idmapped guest tree: %w", err)
	}
	return nil
}

// mountsBelow lists the mount points strictly below dir in this mount
// namespace, parents before children (mountinfo's order).
func mountsBelow(dir string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("cannot list the guest's mounts: %w", err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out, nil
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// bwrap runs argv under bubblewrap in a new user namespace mapped like the
// idmapped tree and returns its exit code.
func bwrap(ctx context.Context, root string, argv []string) (int, error) {
	prog, err := Filter()
	if err != nil {
		return 0, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	go func() {
		w.Write(encode(prog))
		w.Close()
	}()
	args := []string{
		"--bind", root, "/",
		"--proc", "/proc",
		"--dev", "/dev",
		"--tmpfs", "/run",
		"--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
		"--hostname", "guest",
		"--die-with-parent", "--new-session",
		"--cap-drop", "ALL",
	}
	for _, c := range keep {
		args = append(args, "--cap-add", c)
	}
	args = append(args, "--seccomp", "3", "--chdir", "/", "--clearenv")
	for _, e := range environment {
		k, v, _ := strings.Cut(e, "=")
		args = append(args, "--setenv", k, v)
	}
	args = append(append(args, "--"), argv...)
	cmd := exec.CommandContext(ctx, "bwrap", args...)
	cmd.Stdin = nil
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	cmd.ExtraFiles = []*os.File{r}
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: UIDBase, Size: UIDCount}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: UIDBase, Size: UIDCount}},
		GidMappingsEnableSetgroups: true,
		Credential:                 &syscall.Credential{Uid: 0, Gid: 0},
		Pdeathsig:                  syscall.SIGKILL,
	}
	cmd.WaitDelay = 5 * time.Second
	if err := limit(); err != nil {
		return 0, err
	}
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return exit.ExitCode(), nil
	}
	if err != nil {
		return 0, fmt.Errorf("cannot run bwrap: %w", err)
	}
	return 0, nil
}

// limits bound what the program may take that the job's cgroup does not:
// its own processes (counted per host uid, so the whole sandbox), the size
// of one file it writes, and core dumps.
var limits = []struct {
	res int
	max uint64
}{
	{unix.RLIMIT_NPROC, 4096},
	{unix.RLIMIT_FSIZE, 8 << 30},
	{unix.RLIMIT_CORE, 0},
	{unix.RLIMIT_NOFILE, 4096},
}

// limit sets the limits on this process; bwrap and the program inherit
// them. This process exists only to run the sandbox.
func limit() error {
	for _, l := range limits {
		if err := unix.Setrlimit(l.res, &unix.Rlimit{Cur: l.max, Max: l.max}); err != nil {
			return fmt.Errorf("cannot set rlimit %d: %w", l.res, err)
		}
	}
	return nil
}

// Package box boots a throwaway real systemd for end-to-end tests.
//
// A box is systemd-nspawn booting an overlay of the host's / whose writes land
// in a tmpfs, all inside a private mount namespace, so the box sees every
// binary of the host (qemu-img, the Go toolchain, the checkout) and nothing it
// does reaches the host's disk, /run or /tmp. It runs real systemd as PID 1,
// real dbus-daemon, polkitd and journald, and boots to box.target (basic.target
// plus D-Bus and polkit) instead of multi-user.target, so the host's enabled
// services stay down. docs/TESTING.md explains the layout and how to debug it.
//
// Boxes need root and systemd-nspawn; Start skips the test otherwise.
package box

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

//go:embed box.sh
var holderScript string

// boxTarget is what the box boots to: enough for D-Bus, polkit and transient
// units, none of the services the host image has enabled.
const boxTarget = `[Unit]
Description=hyper2kvm test box
Requires=basic.target dbus.socket
Wants=polkit.service systemd-journald.service
After=basic.target dbus.socket
AllowIsolate=yes
`

// Options say what the box holds before and right after it boots.
type Options struct {
	// Install runs the project's packaging/install.sh into the box root (as
	// `make install DESTDIR=<root> PREFIX=/usr` would, from binaries built once
	// per test binary) before boot; after boot the box runs systemd-sysusers,
	// systemd-tmpfiles --create and daemon-reload as a package's postinst would.
	Install bool
	// Users are unprivileged users created inside the box (useradd -m).
	Users []string
	// Groups maps a group to its members, created inside the box.
	Groups map[string][]string
	// Binds are host directories bound read-write into the box at the same path.
	Binds []string
	// Devices binds /dev/fuse, /dev/loop-control, every /dev/loopN and /dev/kvm
	// when present on the host.
	Devices bool
	// WritableCgroups remounts the cgroup v1 controllers read-write in the box
	// and re-executes systemd, so MemoryMax= and friends are enforced.
	WritableCgroups bool
	// UnifiedCgroups boots the box's systemd on the unified cgroup
	// hierarchy (cgroup v2 only), whatever the host uses, by giving nspawn
	// SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1. HYPER2KVM_BOX_CGROUP=unified in
	// the test's environment does so for every box. Without either, nspawn
	// follows the host (on a hybrid host: the v1 controllers plus a
	// controller-less v2 hierarchy). Limits are enforced on the unified
	// hierarchy only when the host's v2 hierarchy has the controllers
	// (CgroupMode says whether it has memory).
	UnifiedCgroups bool
	// Units are started (systemctl start) once the box is up.
	Units []string
	// Files are written into the box root before boot: path -> content.
	Files map[string]string
}

// Box is one running (or stopped, between Reboot's halves) test box.
type Box struct {
	name string
	dir  string // host directory; inside the holder namespace a tmpfs
	opts Options

	holder      *exec.Cmd
	holderIn    io.WriteCloser
	holderErr   bytes.Buffer
	cgroups     []string // cgroup directories made for this box, parents first
	cgroupProcs []string

	mu       sync.Mutex
	nspawn   *exec.Cmd
	nspawnCh chan struct{} // closed when nspawn has been waited for
	pid1     int
	stopped  bool
}

var nameSeq struct {
	sync.Mutex
	n int
}

func uniqueName() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	nameSeq.Lock()
	nameSeq.n++
	n := nameSeq.n
	nameSeq.Unlock()
	return fmt.Sprintf("%d-%d-%s", os.Getpid(), n, hex.EncodeToString(b[:]))
}

// Start boots a box and registers its Stop with t.Cleanup. It skips the test
// when not root or when systemd-nspawn is missing, and fails it (with the
// box's journal in the log) when the box does not come up.
func Start(t testing.TB, o Options) *Box {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("box: needs root to boot a systemd-nspawn box (run `make test-e2e` as root)")
	}
	for _, tool := range []string{"systemd-nspawn", "unshare", "nsenter", "runuser"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("box: %s not found (install systemd-container and util-linux: ./packaging/install-deps.sh)", tool)
		}
	}
	var bin string
	if o.Install {
		var err error
		if bin, err = buildOnce(); err != nil {
			t.Fatalf("box: %v", err)
		}
	}
	b := &Box{name: uniqueName(), opts: o}
	t.Cleanup(func() {
		if t.Failed() {
			b.dumpLogs(t)
		}
		b.Stop()
	})
	if err := b.setup(t, bin); err != nil {
		b.dumpLogs(t)
		t.Fatalf("box %s: %v", b.name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := b.boot(ctx, t); err != nil {
		b.dumpLogs(t)
		t.Fatalf("box %s: %v", b.name, err)
	}
	if err := b.afterFirstBoot(ctx, t); err != nil {
		b.dumpLogs(t)
		t.Fatalf("box %s: %v", b.name, err)
	}
	return b
}

// setup starts the namespace holder and fills the box root before boot.
func (b *Box) setup(t testing.TB, bin string) error {
	sweepOnce.Do(sweepStale)
	dir := filepath.Join(boxParent, boxPrefix+b.name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("cannot create box directory: %w", err)
	}
	b.dir = dir

	h := exec.Command("unshare", "-m", "--propagation", "private", "--", "bash", "-c", holderScript, "box.sh", dir, "4G")
	// Own process group: a ^C to `go test` must not kill the holder before it
	// has stopped the box (it does so when its stdin closes).
	h.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	h.Stderr = &b.holderErr
	in, err := h.StdinPipe()
	if err != nil {
		return err
	}
	out, err := h.StdoutPipe()
	if err != nil {
		return err
	}
	if err := h.Start(); err != nil {
		return fmt.Errorf("cannot start namespace holder: %w", err)
	}
	b.holder, b.holderIn = h, in
	line, err := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		return fmt.Errorf("namespace holder failed: %v: %s", err, b.holderErr.String())
	}
	if err := b.makeCgroups(); err != nil {
		return err
	}
	for _, cg := range b.cgroups {
		fmt.Fprintf(b.holderIn, "cgroup %s\n", cg)
	}

	files := map[string]string{
		"/etc/systemd/system/box.target": boxTarget,
		"/etc/machine-id":                randomMachineID() + "\n",
		"/etc/hostname":                  "box\n",
	}
	// Container images (like many CI hosts) carry a policy-rc.d that forbids
	// package scripts to start services. A real machine has none, and the
	// box stands for a real machine.
	if err := os.Remove(filepath.Join(b.holderRootPath(), b.rootInHolder(), "/usr/sbin/policy-rc.d")); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove policy-rc.d from the box: %w", err)
	}
	for p, c := range b.opts.Files {
		files[p] = c
	}
	for p, c := range files {
		if err := b.writeRoot(p, []byte(c), 0o644); err != nil {
			return err
		}
	}
	if b.opts.Install {
		root := b.rootInHolder()
		cmd := exec.Command("nsenter", "-t", strconv.Itoa(b.holder.Process.Pid), "-m", "--",
			filepath.Join(repoRoot(), "packaging", "install.sh"), root, "/usr", "/etc", bin)
		cmd.Dir = repoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("install into box: %v\n%s", err, out)
		}
		t.Logf("box %s: installed the project into the box root", b.name)
	}
	return nil
}

func randomMachineID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (b *Box) holderRootPath() string {
	return fmt.Sprintf("/proc/%d/root", b.holder.Process.Pid)
}

// rootInHolder is the box root as seen inside the holder's namespace.
func (b *Box) rootInHolder() string { return filepath.Join(b.dir, "root") }

// writeRoot writes a file into the box root through the holder's namespace
// (works whether or not the box is running).
func (b *Box) writeRoot(p string, data []byte, mode os.FileMode) error {
	hp := filepath.Join(b.holderRootPath(), b.rootInHolder(), p)
	if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
		return fmt.Errorf("write %s into box: %w", p, err)
	}
	if err := os.WriteFile(hp, data, mode); err != nil {
		return fmt.Errorf("write %s into box: %w", p, err)
	}
	return os.Chmod(hp, mode)
}

// makeCgroups gives the box its own cgroup in every hierarchy, below the one
// the test runs in: two boxes' systemds must never manage the same cgroup.
func (b *Box) makeCgroups() error {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return fmt.Errorf("read own cgroups: %w", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		var mnt string
		switch {
		case parts[1] == "cpuset":
			// needs cpus and mems copied before a task can join, and
			// systemd does not use the v1 cpuset controller anyway.
			continue
		case parts[0] == "0" && parts[1] == "":
			mnt = "/sys/fs/cgroup/unified"
			if _, err := os.Stat(mnt); err != nil {
				mnt = "/sys/fs/cgroup" // pure cgroup v2
			}
		case strings.HasPrefix(parts[1], "name="):
			mnt = "/sys/fs/cgroup/" + strings.TrimPrefix(parts[1], "name=")
		default:
			mnt = "/sys/fs/cgroup/" + parts[1]
		}
		dir := filepath.Join(mnt, parts[2], boxPrefix+b.name)
		if _, err := os.Stat(filepath.Join(mnt, parts[2], "cgroup.procs")); err != nil {
			continue
		}
		if err := os.Mkdir(dir, 0o755); err != nil {
			continue // a read-only or delegated hierarchy: nspawn copes
		}
		b.cgroups = append(b.cgroups, dir)
		b.cgroupProcs = append(b.cgroupProcs, filepath.Join(dir, "cgroup.procs"))
	}
	return nil
}

func (b *Box) nspawnArgs() []string {
	args := []string{"-q", "-D", b.rootInHolder(), "--register=no", "--keep-unit",
		"--private-network", "--link-journal=no", "--machine=box-" + b.name[:min(len(b.name), 40)]}
	for _, d := range b.opts.Binds {
		args = append(args, "--bind="+d)
	}
	if b.opts.Devices {
		devs := []string{"/dev/fuse", "/dev/loop-control", "/dev/kvm"}
		loops, _ := filepath.Glob("/dev/loop[0-9]*")
		sort.Strings(loops)
		devs = append(devs, loops...)
		for _, d := range devs {
			if _, err := os.Stat(d); err == nil {
				args = append(args, "--bind="+d)
			}
		}
	}
	return append(args, "-b", "--", "systemd.unit=box.target")
}

// boot starts systemd-nspawn in the holder's namespace and waits until the
// system inside is up.
func (b *Box) boot(ctx context.Context, t testing.TB) error {
	var q []string
	for _, p := range b.cgroupProcs {
		q = append(q, strconv.Quote(p))
	}
	script := `for f in ` + strings.Join(q, " ") + `; do echo $$ >"$f" || exit 1; done; exec "$@"`
	args := append([]string{"-t", strconv.Itoa(b.holder.Process.Pid), "-m", "--",
		"sh", "-c", script, "sh", "systemd-nspawn"}, b.nspawnArgs()...)
	cmd := exec.Command("nsenter", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if b.Unified() {
		cmd.Env = append(os.Environ(), "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1")
	}
	logf, err := os.OpenFile(filepath.Join(b.holderRootPath(), b.dir, "nspawn.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open nspawn log: %w", err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start systemd-nspawn: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	b.mu.Lock()
	b.nspawn, b.nspawnCh, b.pid1, b.stopped = cmd, done, 0, false
	b.mu.Unlock()
	fmt.Fprintf(b.holderIn, "nspawn %d\n", cmd.Process.Pid)

	pid1, err := b.findPID1(ctx, cmd.Process.Pid, done)
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.pid1 = pid1
	b.mu.Unlock()
	fmt.Fprintf(b.holderIn, "pid1 %d\n", pid1)

	state, err := b.waitRunning(ctx)
	switch {
	case state == "running":
	case state == "degraded":
		failed, _, _ := b.Exec(ctx, "systemctl", "--failed", "--no-legend", "--plain")
		t.Logf("box %s: system is degraded; failed units:\n%s", b.name, failed)
	default:
		return fmt.Errorf("system did not come up: is-system-running says %q (%v)", state, err)
	}
	if b.opts.WritableCgroups {
		if err := b.writableCgroups(ctx); err != nil {
			return err
		}
	}
	t.Logf("box %s: up, PID 1 is %d (host), root %s", b.name, pid1, b.Path("/"))
	return nil
}

// Unified reports whether the box is booted on the unified cgroup
// hierarchy by request (Options.UnifiedCgroups or HYPER2KVM_BOX_CGROUP).
func (b *Box) Unified() bool {
	return b.opts.UnifiedCgroups || os.Getenv("HYPER2KVM_BOX_CGROUP") == "unified"
}

// CgroupMode says how cgroups look inside the running box: "unified"
// (cgroup2 on /sys/fs/cgroup), "hybrid" (v1 controllers plus cgroup2 on
// /sys/fs/cgroup/unified) or "legacy" (v1 only); and whether the memory
// controller is there to enforce MemoryMax= (on v1 it still needs
// WritableCgroups, since nspawn mounts the controllers read-only).
func (b *Box) CgroupMode(ctx context.Context) (mode string, memory bool) {
	fs, _, _ := b.Exec(ctx, "stat", "-f", "-c", "%T", "/sys/fs/cgroup")
	switch {
	case strings.TrimSpace(fs) == "cgroup2fs":
		ctl, _, _ := b.Exec(ctx, "cat", "/sys/fs/cgroup/cgroup.controllers")
		return "unified", slices.Contains(strings.Fields(ctl), "memory")
	default:
		mode = "legacy"
		if _, _, err := b.Exec(ctx, "test", "-d", "/sys/fs/cgroup/unified"); err == nil {
			mode = "hybrid"
		}
		_, _, err := b.Exec(ctx, "test", "-d", "/sys/fs/cgroup/memory")
		return mode, err == nil
	}
}

// waitRunning waits until the box's systemd has finished booting. Right
// after PID 1 appears its private socket may not exist yet, which
// is-system-running reports as "offline": retry until it answers.
func (b *Box) waitRunning(ctx context.Context) (string, error) {
	var lastErr error
	state := ""
	err := b.WaitFor(ctx, "the box's systemd to finish booting", func() (bool, error) {
		select {
		case <-b.nspawnDone():
			return false, errors.New("systemd-nspawn exited")
		default:
		}
		out, _, err := b.Exec(ctx, "systemctl", "is-system-running", "--wait")
		state, lastErr = strings.TrimSpace(out), err
		switch state {
		case "running", "degraded", "maintenance", "stopping":
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return state, fmt.Errorf("%w (last: %q, %v)", err, state, lastErr)
	}
	return state, nil
}

func (b *Box) nspawnDone() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.nspawnCh == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return b.nspawnCh
}

// findPID1 waits for the box's systemd: the child of nspawn that runs
// systemd (nspawn forks the payload, which execs /sbin/init).
func (b *Box) findPID1(ctx context.Context, nspawn int, done <-chan struct{}) (int, error) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, c := range children(nspawn) {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c))
			if strings.TrimSpace(string(comm)) == "systemd" {
				return c, nil
			}
		}
		select {
		case <-done:
			return 0, errors.New("systemd-nspawn exited before the box booted")
		case <-ctx.Done():
			return 0, fmt.Errorf("wait for the box's PID 1: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

func children(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		data, _ := os.ReadFile(f)
		for _, f := range strings.Fields(string(data)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// writableCgroups makes the v1 controllers writable in the box (nspawn
// mounts them read-only, so limits would be set but not enforced) and
// re-executes systemd so it notices.
func (b *Box) writableCgroups(ctx context.Context) error {
	pid := strconv.Itoa(b.PID())
	for _, c := range []string{"memory", "cpu", "cpuacct", "pids", "blkio", "cpu,cpuacct"} {
		if _, _, err := b.Exec(ctx, "test", "-d", "/sys/fs/cgroup/"+c); err != nil {
			continue
		}
		cmd := exec.CommandContext(ctx, "nsenter", "-t", pid, "-m", "mount", "-o", "remount,bind,rw", "/sys/fs/cgroup/"+c)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("make cgroup controller %s writable: %v: %s", c, err, out)
		}
	}
	if _, stderr, err := b.Exec(ctx, "systemctl", "daemon-reexec"); err != nil {
		return fmt.Errorf("daemon-reexec after making cgroups writable: %v: %s", err, stderr)
	}
	if out, _, err := b.Exec(ctx, "systemctl", "is-system-running", "--wait"); err != nil && strings.TrimSpace(out) != "degraded" {
		return fmt.Errorf("system not up after daemon-reexec: %q: %v", out, err)
	}
	return nil
}

// afterFirstBoot does what a package's postinst and an admin would do once.
func (b *Box) afterFirstBoot(ctx context.Context, t testing.TB) error {
	if b.opts.Install {
		for _, c := range [][]string{{"systemd-sysusers"}, {"systemd-tmpfiles", "--create"}} {
			if _, stderr, err := b.Exec(ctx, c...); err != nil {
				return fmt.Errorf("%s in box: %v: %s", strings.Join(c, " "), err, stderr)
			}
		}
	}
	for _, u := range b.opts.Users {
		if _, stderr, err := b.Exec(ctx, "useradd", "-m", "-s", "/bin/bash", u); err != nil {
			return fmt.Errorf("useradd %s in box: %v: %s", u, err, stderr)
		}
	}
	groups := make([]string, 0, len(b.opts.Groups))
	for g := range b.opts.Groups {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	for _, g := range groups {
		if _, stderr, err := b.Exec(ctx, "groupadd", "-f", g); err != nil {
			return fmt.Errorf("groupadd %s in box: %v: %s", g, err, stderr)
		}
		for _, m := range b.opts.Groups[g] {
			if _, _, err := b.Exec(ctx, "id", "-u", m); err != nil {
				if _, stderr, err := b.Exec(ctx, "useradd", "-m", "-s", "/bin/bash", m); err != nil {
					return fmt.Errorf("useradd %s in box: %v: %s", m, err, stderr)
				}
			}
			if _, stderr, err := b.Exec(ctx, "usermod", "-aG", g, m); err != nil {
				return fmt.Errorf("add %s to group %s in box: %v: %s", m, g, err, stderr)
			}
		}
	}
	if b.opts.Install || len(b.opts.Units) > 0 {
		if _, stderr, err := b.Exec(ctx, "systemctl", "daemon-reload"); err != nil {
			return fmt.Errorf("daemon-reload in box: %v: %s", err, stderr)
		}
	}
	if len(b.opts.Units) > 0 {
		args := append([]string{"systemctl", "start"}, b.opts.Units...)
		if _, stderr, err := b.Exec(ctx, args...); err != nil {
			return fmt.Errorf("start %s in box: %v: %s", strings.Join(b.opts.Units, " "), err, stderr)
		}
	}
	return nil
}

// boxEnv is the environment of commands run in the box: not the test's.
var boxEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/go/bin",
	"HOME=/root",
	"LANG=C.UTF-8",
	"TERM=dumb",
	"SYSTEMD_PAGER=",
	"SYSTEMD_COLORS=0",
}

// Exec runs a command inside the box (all of its namespaces) as root.
func (b *Box) Exec(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	pid := b.PID()
	if pid == 0 {
		return "", "", errors.New("box is not running")
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(pid), "-a", "--"}, args...)...)
	cmd.Env = boxEnv
	cmd.Dir = "/"
	// A process left in the box holding the output pipe must not make Exec
	// hang once ctx is done.
	cmd.WaitDelay = 5 * time.Second
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s in box: %w", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), err
}

// ExecAs runs a command inside the box as user (runuser -u user --).
func (b *Box) ExecAs(ctx context.Context, user string, args ...string) (stdout, stderr string, err error) {
	return b.Exec(ctx, append([]string{"runuser", "-u", user, "--"}, args...)...)
}

// MustExec runs a command as root in the box and fails the test, with its
// stderr, when it fails. It returns stdout.
func (b *Box) MustExec(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, stderr, err := b.Exec(ctx, args...)
	if err != nil {
		t.Fatalf("%v\nstdout: %s\nstderr: %s", err, out, stderr)
	}
	return out
}

// Path is the host path of p inside the box: through the box's PID 1 while
// it runs (so the box's own mounts are seen), through the overlay otherwise.
// Call it again after Reboot.
func (b *Box) Path(p string) string {
	if pid := b.PID(); pid != 0 {
		return filepath.Join(fmt.Sprintf("/proc/%d/root", pid), p)
	}
	return filepath.Join(b.holderRootPath(), b.rootInHolder(), p)
}

// WriteFile writes a file inside the box, creating parent directories.
func (b *Box) WriteFile(t testing.TB, p string, data []byte, mode os.FileMode) {
	t.Helper()
	hp := b.Path(p)
	if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
		t.Fatalf("box: write %s: %v", p, err)
	}
	if err := os.WriteFile(hp, data, mode); err != nil {
		t.Fatalf("box: write %s: %v", p, err)
	}
	if err := os.Chmod(hp, mode); err != nil {
		t.Fatalf("box: write %s: %v", p, err)
	}
}

// Journal returns `journalctl --no-pager ARGS...` from inside the box
// (stdout and stderr together, so an error shows in the test log).
func (b *Box) Journal(ctx context.Context, args ...string) string {
	out, stderr, err := b.Exec(ctx, append([]string{"journalctl", "--no-pager"}, args...)...)
	if err != nil {
		return out + stderr + err.Error()
	}
	return out
}

// WaitFor polls cond until it is true, returns an error, or ctx ends.
// Tests wait with generous deadlines; they never assert on timing.
func (b *Box) WaitFor(ctx context.Context, what string, cond func() (bool, error)) error {
	delay := 50 * time.Millisecond
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, ctx.Err())
		case <-time.After(delay):
		}
		if delay < time.Second {
			delay *= 2
		}
	}
}

// PID is the host PID of the box's systemd, 0 when the box is not running.
func (b *Box) PID() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pid1
}

// halt shuts the running box down: SIGTERM to nspawn (a clean shutdown), and
// SIGKILL to its PID 1 if that has not worked in time.
func (b *Box) halt() {
	b.mu.Lock()
	cmd, done, pid1 := b.nspawn, b.nspawnCh, b.pid1
	b.nspawn, b.pid1 = nil, 0
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	// SIGTERM asks nspawn for an orderly shutdown (about a second). One
	// that arrives while the box's systemd is still starting can be lost:
	// repeat it, and in the end kill the box's PID 1.
	term := time.NewTicker(3 * time.Second)
	defer term.Stop()
	deadline := time.After(20 * time.Second)
	_ = cmd.Process.Signal(syscall.SIGTERM)
wait:
	for {
		select {
		case <-done:
			break wait
		case <-term.C:
			_ = cmd.Process.Signal(syscall.SIGTERM)
		case <-deadline:
			// SIGKILL to nspawn would leave the box running: kill its PID 1.
			if pid1 == 0 {
				for _, c := range children(cmd.Process.Pid) {
					if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c)); strings.TrimSpace(string(comm)) == "systemd" {
						pid1 = c
					}
				}
			}
			if pid1 != 0 {
				_ = syscall.Kill(pid1, syscall.SIGKILL)
			}
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			break wait
		}
	}
	// PID 1 must be gone too before the state is reused or removed.
	if pid1 != 0 {
		for i := 0; i < 300 && processAlive(pid1); i++ {
			if i == 100 {
				_ = syscall.Kill(pid1, syscall.SIGKILL)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func processAlive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(data, ')')
	return i < 0 || i+2 >= len(data) || data[i+2] != 'Z'
}

// Stop shuts the box down and removes everything it made. It is idempotent
// and registered as a cleanup by Start.
func (b *Box) Stop() {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return
	}
	b.stopped = true
	b.mu.Unlock()
	b.halt()
	if b.holder != nil {
		_ = b.holderIn.Close()
		done := make(chan struct{})
		go func() { _ = b.holder.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = b.holder.Process.Kill()
			<-done
		}
	}
	for i := len(b.cgroups) - 1; i >= 0; i-- {
		removeCgroup(b.cgroups[i])
	}
	if b.dir != "" {
		// Empty on the host (the tmpfs was only in the namespace); the
		// holder normally removed it already.
		_ = os.Remove(b.dir)
	}
}

// removeCgroup removes a cgroup directory and the ones the box's systemd left
// below it, deepest first (cgroup directories are removed with rmdir).
func removeCgroup(dir string) {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = syscall.Rmdir(dirs[i])
	}
}

// Reboot shuts the box down and boots it again on the same state: every file
// the box wrote survives, as on a real machine's disk.
func (b *Box) Reboot(t testing.TB) {
	t.Helper()
	b.halt()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := b.boot(ctx, t); err != nil {
		b.dumpLogs(t)
		t.Fatalf("box %s: reboot: %v", b.name, err)
	}
}

// dumpLogs puts the box's journal (or nspawn's output, when it is not up)
// into the test log.
func (b *Box) dumpLogs(t testing.TB) {
	t.Helper()
	if b.holderErr.Len() > 0 {
		t.Logf("box %s: namespace holder said:\n%s", b.name, b.holderErr.String())
	}
	if b.holder != nil && b.holder.Process != nil && b.PID() == 0 {
		if data, err := os.ReadFile(filepath.Join(b.holderRootPath(), b.dir, "nspawn.log")); err == nil && len(data) > 0 {
			t.Logf("box %s: systemd-nspawn output:\n%s", b.name, tail(data, 200))
		}
	}
	if b.PID() != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		t.Logf("box %s: journal:\n%s", b.name, tail([]byte(b.Journal(ctx, "-b", "-o", "short-monotonic")), 300))
	}
}

func tail(data []byte, lines int) string {
	s := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(s) > lines {
		s = append([]string{fmt.Sprintf("[... %d lines cut]", len(s)-lines)}, s[len(s)-lines:]...)
	}
	return strings.Join(s, "\n")
}

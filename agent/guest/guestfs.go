package guest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// gfs is the guestfs backend: a `guestfish --listen` server holding one
// libguestfs appliance, driven with `guestfish --remote=PID` calls. Every
// file operation runs in the appliance's guestfsd, chrooted in the guest's
// filesystem, so paths and symlinks resolve inside the guest and the host
// kernel never parses the guest's filesystem.
type gfs struct {
	dir    string
	errLog string // the server's stderr: where failing commands report
	errOff int64
	pid    int
	mounts int
	closed bool
	seq    int
}

// guestfsEnv is the environment for libguestfs: the direct backend (no
// libvirtd needed) and, unless the caller says otherwise, TCG, because
// /dev/kvm can exist and still hang guests.
func guestfsEnv(dir string) []string {
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "HOME=/root", "TMPDIR=" + dir,
		"LIBGUESTFS_CACHEDIR=/var/tmp"}
	get := func(k, def string) string {
		if v := os.Getenv(k); v != "" {
			return v
		}
		return def
	}
	env = append(env, "LIBGUESTFS_BACKEND="+get("LIBGUESTFS_BACKEND", "direct"),
		"LIBGUESTFS_BACKEND_SETTINGS="+get("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg"))
	return env
}

var gfPID = regexp.MustCompile(`GUESTFISH_PID=(\d+)`)

func openGuestfs(ctx context.Context, img Image, o Options) (_ *gfs, err error) {
	if _, err := exec.LookPath("guestfish"); err != nil {
		return nil, errors.New("cannot use guestfs backend: guestfish not found (install libguestfs-tools)")
	}
	dir, err := os.MkdirTemp(o.WorkDir, "guest-guestfs-")
	if err != nil {
		return nil, fmt.Errorf("cannot create scratch dir: %w", err)
	}
	g := &gfs{dir: dir}
	defer func() {
		if err != nil {
			g.Close()
		}
	}()
	if !o.Writable || strings.HasPrefix(img.Path, "json:") {
		// libguestfs takes a file name, not a qemu json: spec, and a
		// read-only session must not write even a journal replay to img.
		ov := filepath.Join(dir, "overlay.qcow2")
		if err := overlay(ctx, img, ov); err != nil {
			return nil, err
		}
		if o.Writable {
			return nil, fmt.Errorf("cannot open %s writable with guestfs: a json: spec needs an overlay", img.Path)
		}
		img = Image{Path: ov, Format: "qcow2"}
	}
	// The server guestfish forks keeps the stdout and stderr it inherited;
	// pipes would never reach EOF, so both go to files.
	outF, err := os.Create(filepath.Join(dir, "listen.out"))
	if err != nil {
		return nil, err
	}
	defer outF.Close()
	errF, err := os.Create(filepath.Join(dir, "listen.err"))
	if err != nil {
		return nil, err
	}
	defer errF.Close()
	cmd := exec.CommandContext(ctx, "guestfish", "--listen")
	cmd.Env = guestfsEnv(dir)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = outF, errF
	if err := cmd.Run(); err != nil {
		msg, _ := os.ReadFile(errF.Name())
		return nil, fmt.Errorf("cannot start guestfish: %v: %s", err, bytes.TrimSpace(msg))
	}
	out, err := os.ReadFile(outF.Name())
	if err != nil {
		return nil, err
	}
	m := gfPID.FindSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("cannot start guestfish: no GUESTFISH_PID in %q", out)
	}
	g.pid, _ = strconv.Atoi(string(m[1]))
	g.errLog = errF.Name()
	if _, err := g.call(ctx, "add-drive", img.Path, "format:"+img.Format); err != nil {
		return nil, err
	}
	// The VM's other disks, after img so that img stays /dev/sda (Mount's
	// partition numbers are img's), each behind its own overlay: a write
	// through an md array or a VG reaches only the overlay, never a source.
	// A Writable one is FIX's overlay already (the caller's, in its work
	// directory), written through the array or VG.
	for i, o := range o.Others {
		if o.Writable {
			if strings.HasPrefix(o.Path, "json:") {
				return nil, fmt.Errorf("cannot open %s writable with guestfs: a json: spec needs an overlay", o.Path)
			}
			if _, err := g.call(ctx, "add-drive", o.Path, "format:"+o.Format); err != nil {
				return nil, err
			}
			continue
		}
		ov := filepath.Join(dir, fmt.Sprintf("other-%d.qcow2", i))
		if err := overlay(ctx, o, ov); err != nil {
			return nil, err
		}
		if _, err := g.call(ctx, "add-drive", ov, "format:qcow2"); err != nil {
			return nil, err
		}
	}
	if _, err := g.call(ctx, "run"); err != nil {
		return nil, fmt.Errorf("cannot start the libguestfs appliance: %w", err)
	}
	return g, nil
}

func (g *gfs) Backend() string { return Guestfs }

// call runs one guestfish command in the server and returns its stdout.
func (g *gfs) call(ctx context.Context, args ...string) ([]byte, error) {
	if g.pid == 0 {
		return nil, errors.New("guestfish not running")
	}
	// The "-" prefix keeps the server alive when the command fails. The
	// server, not the client, prints the failure, to its stderr (a file we
	// gave it); new text there after a call is that call's error.
	cmd := exec.CommandContext(ctx, "guestfish", append([]string{"--remote=" + strconv.Itoa(g.pid), "--", "-" + args[0]}, args[1:]...)...)
	cmd.Env = guestfsEnv(g.dir)
	cmd.Dir = g.dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	msg := strings.TrimSpace(stderr.String())
	if srv := g.serverErrors(); srv != "" {
		msg = strings.TrimSpace(msg + "\n" + srv)
	}
	if err == nil && strings.Contains(msg, "error") {
		err = errors.New("command failed")
	}
	if err != nil {
		msg = strings.ReplaceAll(msg, "libguestfs: error: ", "")
		return out, fmt.Errorf("guestfish %s: %s (%v)", args[0], msg, err)
	}
	return out, nil
}

// serverErrors returns what the server wrote to its stderr since last time.
func (g *gfs) serverErrors() string {
	if g.errLog == "" {
		return ""
	}
	f, err := os.Open(g.errLog)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.NewSectionReader(f, g.errOff, 1<<20))
	g.errOff += int64(len(b))
	return string(b)
}

// lvDevice is an LV's device name with LVM's allowed characters only: the
// names come from the guest's metadata.
var lvDevice = regexp.MustCompile(`^/dev/[A-Za-z0-9+_.][A-Za-z0-9+_.-]*/[A-Za-z0-9+_.][A-Za-z0-9+_.-]*$`)

// mdDevice is an md array's kernel name in the appliance (list-md-devices).
var mdDevice = regexp.MustCompile(`^/dev/md[0-9]{1,4}$`)

// volumes lists the md arrays the appliance assembled (libguestfs runs
// mdadm --assemble at launch) and its LVs, with each one's filesystem
// type and UUID; a volume without a filesystem it knows is left out.
func (g *gfs) volumes(ctx context.Context) ([]Volume, error) {
	var devs []string
	for _, c := range []string{"list-md-devices", "lvs"} {
		out, err := g.call(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("cannot list the appliance's volumes: %w", err)
		}
		for _, d := range strings.Split(string(out), "\n") {
			d = strings.TrimSpace(d)
			if mdDevice.MatchString(d) || (lvDevice.MatchString(d) && !strings.Contains(d, "/.")) {
				devs = append(devs, d)
			}
		}
	}
	var res []Volume
	for _, d := range devs {
		t, err := g.call(ctx, "vfs-type", d)
		if err != nil {
			continue
		}
		v := Volume{Device: d, FSType: strings.TrimSpace(string(t))}
		if v.FSType == "" {
			continue
		}
		if u, err := g.call(ctx, "vfs-uuid", d); err == nil {
			v.UUID = strings.TrimSpace(string(u))
		}
		if mdDevice.MatchString(d) {
			if out, err := g.call(ctx, "md-detail", d); err == nil {
				v.ArrayUUID = mdUUID(out)
			}
		}
		res = append(res, v)
	}
	return res, nil
}

// mdUUID is the array UUID in md-detail's output ("uuid: 424de242:50262d4e:..."),
// as 32 lower-case hex digits, "" when there is none.
func mdUUID(detail []byte) string {
	for _, l := range strings.Split(string(detail), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok || strings.TrimSpace(k) != "uuid" {
			continue
		}
		u := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(v), ":", ""))
		if hex32.MatchString(u) {
			return u
		}
	}
	return ""
}

var hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)

func (g *gfs) Mount(ctx context.Context, m Mount) error {
	target, err := clean(m.Target)
	if err != nil {
		return err
	}
	if (target == "/") != (g.mounts == 0) {
		return fmt.Errorf("cannot mount %s: the root must be mounted first, and once", target)
	}
	if target != "/" {
		// Guestfsd resolves the mount point in its chroot; still refuse a
		// symlink there, as the native backend does.
		e, err := g.Lstat(ctx, target)
		if err != nil || !e.Mode.IsDir() {
			return fmt.Errorf("cannot mount on %s: not a directory in the guest", target)
		}
	}
	dev := "/dev/sda"
	if m.Number > 0 {
		dev += strconv.Itoa(m.Number)
	}
	if m.Device != "" {
		if !mdDevice.MatchString(m.Device) && (!lvDevice.MatchString(m.Device) || strings.Contains(m.Device, "/.")) {
			return fmt.Errorf("cannot mount %s: not a /dev/VG/LV or /dev/mdN name", m.Device)
		}
		dev = m.Device
	}
	if err := CheckOptions(m.Options); err != nil {
		return fmt.Errorf("cannot mount partition %d on %s: %w", m.Number, target, err)
	}
	opts := "nodev,nosuid"
	if m.RO {
		opts += ",ro" + noReplay(m.FSType)
	}
	if m.Options != "" {
		opts += "," + m.Options
	}
	if _, err := g.call(ctx, "mount-options", opts, dev, target); err != nil {
		return fmt.Errorf("cannot mount partition %d on %s: %w", m.Number, target, err)
	}
	g.mounts++
	return nil
}

func (g *gfs) Unmount(ctx context.Context) error {
	if g.mounts == 0 {
		return nil
	}
	g.mounts = 0
	_, err := g.call(ctx, "umount-all")
	return err
}

// statns is guestfish's printout of a statns struct: "st_mode: 33188" lines.
func parseStatns(out []byte) []map[string]int64 {
	var res []map[string]int64
	var cur map[string]int64
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		if k == "st_dev" || cur == nil {
			cur = map[string]int64{}
			res = append(res, cur)
		}
		cur[k] = n
	}
	return res
}

func statEntry(name string, st map[string]int64) Entry {
	return Entry{Name: name, Mode: fileMode(uint32(st["st_mode"])), Size: st["st_size"]}
}

func (g *gfs) ReadFile(ctx context.Context, p string) ([]byte, error) {
	return g.readFileLimit(ctx, p, MaxFileSize)
}

func (g *gfs) readHead(ctx context.Context, p string, size int) ([]byte, error) {
	c, err := clean(p)
	if err != nil {
		return nil, err
	}
	out, err := g.call(ctx, "statns", c)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: c, Err: notExist(err)}
	}
	sts := parseStatns(out)
	if len(sts) != 1 {
		return nil, &fs.PathError{Op: "open", Path: c, Err: fs.ErrNotExist}
	}
	e := statEntry(c, sts[0])
	if !e.Mode.IsRegular() {
		return nil, fmt.Errorf("cannot use %s: %w", c, ErrNotRegular)
	}
	n := min(int64(size), e.Size)
	g.seq++
	local := filepath.Join(g.dir, fmt.Sprintf("dl-%d", g.seq))
	defer os.Remove(local)
	if _, err := g.call(ctx, "download-offset", c, local, "0", strconv.FormatInt(n, 10)); err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", c, err)
	}
	b, err := os.ReadFile(local)
	if int64(len(b)) > n {
		b = b[:n]
	}
	return b, err
}

func (g *gfs) readFileLimit(ctx context.Context, p string, limit int64) ([]byte, error) {
	c, err := clean(p)
	if err != nil {
		return nil, err
	}
	// stat (following symlinks in the guest) first: never download a FIFO
	// or a device.
	out, err := g.call(ctx, "statns", c)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: c, Err: notExist(err)}
	}
	sts := parseStatns(out)
	if len(sts) == 0 {
		// Some failures reach guestfish's stderr without "error" in them.
		return nil, &fs.PathError{Op: "open", Path: c, Err: fs.ErrNotExist}
	}
	if len(sts) != 1 {
		return nil, fmt.Errorf("cannot stat %s: unexpected guestfish output", c)
	}
	e := statEntry(c, sts[0])
	if !e.Mode.IsRegular() {
		return nil, fmt.Errorf("cannot use %s: %w", c, ErrNotRegular)
	}
	if e.Size > limit {
		return nil, fmt.Errorf("cannot read %s: larger than %d bytes", c, limit)
	}
	g.seq++
	local := filepath.Join(g.dir, fmt.Sprintf("dl-%d", g.seq))
	defer os.Remove(local)
	if _, err := g.call(ctx, "download", c, local); err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", c, err)
	}
	return os.ReadFile(local)
}

// notExist maps guestfish's "No such file or directory" to fs.ErrNotExist so
// callers can treat both backends alike.
func notExist(err error) error {
	if strings.Contains(err.Error(), "No such file or directory") {
		return fs.ErrNotExist
	}
	return err
}

func (g *gfs) WriteFile(ctx context.Context, p string, data []byte, perm fs.FileMode) error {
	c, err := clean(p)
	if err != nil {
		return err
	}
	exists := false
	if out, err := g.call(ctx, "statns", c); err == nil && len(parseStatns(out)) > 0 {
		sts := parseStatns(out)
		if len(sts) != 1 || !statEntry(c, sts[0]).Mode.IsRegular() {
			return fmt.Errorf("cannot use %s: %w", c, ErrNotRegular)
		}
		exists = true
	}
	g.seq++
	local := filepath.Join(g.dir, fmt.Sprintf("ul-%d", g.seq))
	defer os.Remove(local)
	if err := os.WriteFile(local, data, 0o600); err != nil {
		return err
	}
	if _, err := g.call(ctx, "upload", local, c); err != nil {
		return fmt.Errorf("cannot write %s: %w", c, err)
	}
	if !exists {
		if _, err := g.call(ctx, "chmod", fmt.Sprintf("0%o", perm.Perm()), c); err != nil {
			return fmt.Errorf("cannot chmod %s: %w", c, err)
		}
	}
	return nil
}

func (g *gfs) ReadDir(ctx context.Context, p string) ([]Entry, error) {
	c, err := clean(p)
	if err != nil {
		return nil, err
	}
	out, err := g.call(ctx, "ls", c)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: c, Err: notExist(err)}
	}
	// guestfish passes a string list as one space-separated argument, so
	// names with blanks cannot be listed this way; FIX never looks for
	// such names, so they are left out.
	var names []string
	for _, n := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		if n != "" && !strings.ContainsAny(n, " \t") {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	out, err = g.call(ctx, "lstatnslist", c, strings.Join(names, " "))
	if err != nil {
		return nil, fmt.Errorf("cannot list %s: %w", c, err)
	}
	sts := parseStatns(out)
	if len(sts) != len(names) {
		return nil, fmt.Errorf("cannot list %s: %d names but %d stats", c, len(names), len(sts))
	}
	res := make([]Entry, len(names))
	for i, n := range names {
		res[i] = statEntry(n, sts[i])
	}
	return res, nil
}

func (g *gfs) Lstat(ctx context.Context, p string) (Entry, error) {
	c, err := clean(p)
	if err != nil {
		return Entry{}, err
	}
	out, err := g.call(ctx, "lstatns", c)
	if err != nil {
		return Entry{}, &fs.PathError{Op: "lstat", Path: c, Err: notExist(err)}
	}
	sts := parseStatns(out)
	if len(sts) == 0 {
		return Entry{}, &fs.PathError{Op: "lstat", Path: c, Err: fs.ErrNotExist}
	}
	if len(sts) != 1 {
		return Entry{}, fmt.Errorf("cannot stat %s: unexpected guestfish output", c)
	}
	return statEntry(filepath.Base(c), sts[0]), nil
}

func (g *gfs) Readlink(ctx context.Context, p string) (string, error) {
	c, err := clean(p)
	if err != nil {
		return "", err
	}
	out, err := g.call(ctx, "readlink", c)
	if err != nil {
		return "", &fs.PathError{Op: "readlink", Path: c, Err: notExist(err)}
	}
	return strings.TrimSuffix(string(out), "\n"), nil
}

func (g *gfs) Remove(ctx context.Context, p string) error {
	if _, _, err := split(p); err != nil {
		return err
	}
	c, _ := clean(p)
	if _, err := g.call(ctx, "rm", c); err != nil {
		return &fs.PathError{Op: "remove", Path: c, Err: notExist(err)}
	}
	return nil
}

func (g *gfs) Symlink(ctx context.Context, target, newname string) error {
	if _, _, err := split(newname); err != nil {
		return err
	}
	c, _ := clean(newname)
	if _, err := g.call(ctx, "ln-s", target, c); err != nil {
		return &fs.PathError{Op: "symlink", Path: c, Err: err}
	}
	return nil
}

func (g *gfs) Mkdir(ctx context.Context, p string) error {
	if _, _, err := split(p); err != nil {
		return err
	}
	c, _ := clean(p)
	if e, err := g.Lstat(ctx, c); err == nil && e.Mode.IsDir() {
		return nil
	}
	if _, err := g.call(ctx, "mkdir", c); err != nil {
		return &fs.PathError{Op: "mkdir", Path: c, Err: err}
	}
	return nil
}

// Run runs argv with the appliance's "debug sh"-free command call: guestfsd
// chroots into the guest with /proc, /sys and /dev bound from the appliance,
// never from the host.
func (g *gfs) Run(ctx context.Context, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("cannot run in guest: empty command")
	}
	for _, a := range argv {
		if strings.ContainsAny(a, " \t\n'\"\\") {
			return nil, fmt.Errorf("cannot run in guest with guestfs: argument %q needs quoting", a)
		}
	}
	out, err := g.call(ctx, "command", strings.Join(argv, " "))
	if err != nil {
		return out, fmt.Errorf("cannot run %s in guest: %w", strings.Join(argv, " "), err)
	}
	return out, nil
}

// Close unmounts (syncing the guest filesystems), shuts the appliance down
// and stops the server, with its own deadline so a cancelled job still
// cleans up.
func (g *gfs) Close() error {
	if g.closed {
		return nil
	}
	g.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var errs []error
	if g.pid != 0 {
		if err := g.Unmount(ctx); err != nil {
			errs = append(errs, err)
		}
		if _, err := g.call(ctx, "shutdown"); err != nil {
			errs = append(errs, err)
		}
		if _, err := g.call(ctx, "exit"); err != nil {
			// The server is ours; do not leave it (and its qemu) behind.
			syscall.Kill(g.pid, syscall.SIGTERM)
		}
		// guestfish --listen forked a server that is not our child: wait
		// for it to go so the image is closed when Close returns.
		for i := 0; i < 300 && syscall.Kill(g.pid, 0) == nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
		g.pid = 0
	}
	if err := os.RemoveAll(g.dir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cannot tear down guestfs session: %w", err)
	}
	return nil
}

// LibguestfsEnv is the environment every libguestfs tool the agent runs
// gets (guestfish here, virt-v2v-in-place in agent/v2v), with TMPDIR dir.
func LibguestfsEnv(dir string) []string { return guestfsEnv(dir) }

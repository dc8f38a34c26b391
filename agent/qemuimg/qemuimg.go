// Package qemuimg runs qemu-img: info, convert with progress, check, compare
// and overlay creation. Every call passes -f (qemu-img never guesses a
// format), takes a context and kills qemu-img when it is cancelled, and
// convert writes NAME.part, then renames it into place without ever
// replacing an existing file.
package qemuimg

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hyper2kvm/hyper2kvm/agent/noreplace"
)

// Exit statuses of qemu-img check (qemu-img(1)).
const (
	checkCorrupt     = 2
	checkLeaks       = 3
	checkUnsupported = 63
)

// ImageInfo is the part of `qemu-img info --output=json` the engine uses.
type ImageInfo struct {
	Filename       string          `json:"filename"`
	Format         string          `json:"format"`
	VirtualSize    int64           `json:"virtual-size"`
	ActualSize     int64           `json:"actual-size,omitempty"`
	ClusterSize    int64           `json:"cluster-size,omitempty"`
	DirtyFlag      bool            `json:"dirty-flag,omitempty"`
	BackingFile    string          `json:"backing-filename,omitempty"`
	FormatSpecific json.RawMessage `json:"format-specific,omitempty"`
}

// DataFile is the external data file of a qcow2 image ("" when its data
// is inside it): qemu reads it by name, like a backing file.
func (i *ImageInfo) DataFile() string {
	var fs struct {
		Data struct {
			DataFile string `json:"data-file"`
		} `json:"data"`
	}
	if len(i.FormatSpecific) == 0 || json.Unmarshal(i.FormatSpecific, &fs) != nil {
		return ""
	}
	return fs.Data.DataFile
}

// Info runs qemu-img info on path (a file or a "json:" spec) opened as format.
func Info(ctx context.Context, path, format string) (*ImageInfo, error) {
	out, err := run(ctx, "info", "--output=json", "-f", format, withoutBacking(path))
	if err != nil {
		return nil, fmt.Errorf("cannot read image info of %s as %s: %w", Describe(path), format, err)
	}
	var info ImageInfo
	if err := json.Unmarshal(out, &info); err != nil {
		return nil, fmt.Errorf("cannot read image info of %s: qemu-img printed %q: %w", Describe(path), truncate(string(out)), err)
	}
	return &info, nil
}

// Measure returns the bytes a qcow2 conversion of path (a file or a
// "json:" spec) opened as format needs: qemu-img measure's required size,
// which counts only what the source allocates (zeros and holes take
// nothing), plus metadata.
func Measure(ctx context.Context, path, format string) (int64, error) {
	out, err := run(ctx, "measure", "--output=json", "-f", format, "-O", "qcow2", path)
	if err != nil {
		return 0, fmt.Errorf("cannot measure %s: %w", Describe(path), err)
	}
	var m struct {
		Required int64 `json:"required"`
	}
	if err := json.Unmarshal(out, &m); err != nil {
		return 0, fmt.Errorf("cannot measure %s: qemu-img printed %q: %w", Describe(path), truncate(string(out)), err)
	}
	return m.Required, nil
}

// jsonSpec decodes a "json:" image spec (numbers kept exact); false for a
// plain path or a spec that does not decode.
func jsonSpec(path string) (map[string]any, bool) {
	spec, ok := strings.CutPrefix(path, "json:")
	if !ok {
		return nil, false
	}
	dec := json.NewDecoder(strings.NewReader(spec))
	dec.UseNumber()
	var n map[string]any
	if dec.Decode(&n) != nil {
		return nil, false
	}
	return n, true
}

// withoutBacking is a "json:" spec with its backing node replaced by null:
// qemu-img info never opens a backing file, and refuses the options of one
// given to it. Anything else is returned unchanged.
func withoutBacking(path string) string {
	n, ok := jsonSpec(path)
	if !ok {
		return path
	}
	if b, ok := n["backing"]; !ok || b == nil {
		return path
	}
	n["backing"] = nil
	out, err := json.Marshal(n)
	if err != nil {
		return path
	}
	return "json:" + string(out)
}

// CheckResult is the outcome of qemu-img check.
type CheckResult struct {
	Status      string `json:"status"` // ok | skipped | failed
	Corruptions int    `json:"corruptions,omitempty"`
	Leaks       int    `json:"leaks,omitempty"`
	Message     string `json:"message,omitempty"`
}

// Check runs qemu-img check. A format without checks (raw) is "skipped",
// never "ok"; leaked clusters alone are "ok" with a message because they
// waste space but lose no data.
func Check(ctx context.Context, path, format string) (*CheckResult, error) {
	out, stderr, code, err := runCode(ctx, "check", "--output=json", "-f", format, path)
	if err != nil {
		return nil, fmt.Errorf("cannot check %s: %w", Describe(path), err)
	}
	var js struct {
		Corruptions int `json:"corruptions"`
		Leaks       int `json:"leaks"`
		CheckErrors int `json:"check-errors"`
	}
	_ = json.Unmarshal(out, &js) // absent for unsupported formats
	r := &CheckResult{Corruptions: js.Corruptions, Leaks: js.Leaks}
	switch code {
	case 0:
		r.Status = "ok"
	case checkLeaks:
		r.Status, r.Message = "ok", fmt.Sprintf("%d leaked clusters (space only, no data lost)", js.Leaks)
	case checkUnsupported:
		r.Status, r.Message = "skipped", "format "+format+" does not support checks"
	case checkCorrupt:
		r.Status, r.Message = "failed", fmt.Sprintf("%d corruptions: %s", js.Corruptions, checkErrors(ctx, path, format, stderr))
	default:
		// Exit 1: the check could not complete, which for an image means
		// metadata qemu cannot follow (truncated, pointers past the end).
		r.Status, r.Message = "failed", "check could not complete: "+checkErrors(ctx, path, format, stderr)
	}
	return r, nil
}

// checkErrors returns the first ERROR lines of a human-readable check (the
// JSON output leaves them out), or qemu-img's own message.
func checkErrors(ctx context.Context, path, format string, stderr []byte) string {
	out, errOut, _, err := runCode(ctx, "check", "-f", format, path)
	var lines []string
	if err == nil {
		for _, l := range strings.Split(string(out)+"\n"+string(errOut), "\n") {
			if strings.HasPrefix(l, "ERROR") && len(lines) < 3 {
				lines = append(lines, strings.TrimSpace(l))
			}
		}
	}
	if len(lines) == 0 {
		return firstLine(stderr)
	}
	return strings.Join(lines, "; ")
}

// Compare runs qemu-img compare and reports whether the two images have the
// same content (unallocated areas compare as zeros). detail says where they
// first differ.
func Compare(ctx context.Context, a, aFormat, b, bFormat string) (identical bool, detail string, err error) {
	out, stderr, code, err := runCode(ctx, "compare", "-f", aFormat, "-F", bFormat, a, b)
	if err != nil {
		return false, "", fmt.Errorf("cannot compare %s with %s: %w", Describe(a), Describe(b), err)
	}
	switch code {
	case 0:
		return true, strings.TrimSpace(string(out)), nil
	case 1:
		return false, strings.TrimSpace(string(out)), nil
	}
	return false, "", fmt.Errorf("cannot compare %s with %s: %s", Describe(a), Describe(b), firstLine(stderr))
}

// CreateOverlay creates a qcow2 overlay whose backing file is backing (read
// only through the overlay: writes land in the overlay). The overlay must
// not exist.
func CreateOverlay(ctx context.Context, backing, backingFormat, overlay string) error {
	if !strings.HasPrefix(backing, "json:") {
		abs, err := filepath.Abs(backing)
		if err != nil {
			return fmt.Errorf("cannot create overlay: %w", err)
		}
		backing = abs
	}
	if _, err := os.Lstat(overlay); err == nil {
		return fmt.Errorf("cannot create overlay %s: it exists; not overwriting", overlay)
	}
	if _, err := run(ctx, "create", "-q", "-f", "qcow2", "-b", backing, "-F", backingFormat, overlay); err != nil {
		os.Remove(overlay)
		return fmt.Errorf("cannot create overlay of %s: %w", Describe(backing), err)
	}
	return nil
}

// ConvertOptions describe one qemu-img convert.
type ConvertOptions struct {
	Source       string // file or "json:" spec
	SourceFormat string
	Target       string // final path; must not exist
	TargetFormat string // qcow2 | raw | vdi | ...
	Compress     bool   // qcow2 only
	Compression  string // zstd (default) | zlib
	Coroutines   int    // -m, 0 for qemu-img's default (8)
	// Preallocation is qemu-img's preallocation option of the output:
	// "" or "off" (sparse, the default), "metadata" (qcow2: its tables
	// written before the data) or "falloc" (every byte reserved with
	// fallocate, so the file is as large as the disk). Not with Compress.
	Preallocation string
	// Hash computes the output's sha256 while it is being synced to disk
	// (CPU and I/O overlap), into ConvertResult.SHA256.
	Hash bool
	// Progress gets 0-100 as qemu-img reports it (monotonic, at most one call
	// per whole percent).
	Progress func(percent int)
	// Prepare, when set, gets the partial output before qemu-img writes to
	// it. The partial output is always a new file of mode 0600 owned by
	// the caller; give it another owner or mode in Finish, once its bytes
	// are known to be fit for whoever that lets read them.
	Prepare func(*os.File) error
	// Finish, when set, gets the complete, synced output before it is
	// renamed into place; an error discards it.
	Finish func(*os.File) error
}

// ConvertResult says what Convert did beyond the file it wrote.
type ConvertResult struct {
	Compression string   `json:"compression,omitempty"` // what was used
	Warnings    []string `json:"warnings,omitempty"`
	Args        []string `json:"args"`
	Size        int64    `json:"-"` // bytes of the output file
	SHA256      string   `json:"-"` // when ConvertOptions.Hash
}

// Convert runs qemu-img convert into Target+".part", syncs it and renames
// it to Target without replacing a file that appeared there meanwhile. On
// any error or cancellation the partial output is removed.
func Convert(ctx context.Context, o ConvertOptions) (*ConvertResult, error) {
	res := &ConvertResult{}
	if _, err := os.Lstat(o.Target); err == nil {
		return nil, fmt.Errorf("cannot convert to %s: it exists; not overwriting", o.Target)
	}
	part := o.Target + ".part"
	f, warn, err := createPart(part)
	if err != nil {
		return nil, fmt.Errorf("cannot convert to %s: %w", o.Target, err)
	}
	defer f.Close()
	if warn != "" {
		res.Warnings = append(res.Warnings, warn)
	}
	if o.Prepare != nil {
		if err := o.Prepare(f); err != nil {
			os.Remove(part)
			return nil, fmt.Errorf("cannot convert to %s: %w", o.Target, err)
		}
	}
	ok := false
	defer func() {
		if !ok {
			os.Remove(part)
		}
	}()

	args := []string{"convert", "-p", "-f", o.SourceFormat, "-O", o.TargetFormat}
	if o.Compress {
		if o.TargetFormat != "qcow2" {
			return nil, fmt.Errorf("cannot convert to %s: compression is supported for qcow2 output only, not %s", o.Target, o.TargetFormat)
		}
		comp := o.Compression
		if comp == "" {
			comp = "zstd"
		}
		if comp != "zstd" && comp != "zlib" {
			return nil, fmt.Errorf("cannot convert to %s: unknown compression %q (zstd or zlib)", o.Target, comp)
		}
		if comp == "zstd" && !supportsZstd(ctx) {
			comp = "zlib"
			res.Warnings = append(res.Warnings, "this qemu-img cannot write zstd-compressed qcow2; compressed with zlib instead")
		}
		res.Compression = comp
		args = append(args, "-c", "-o", "compression_type="+comp)
	}
	switch o.Preallocation {
	case "", "off":
	case "metadata", "falloc":
		if o.Compress {
			return nil, fmt.Errorf("cannot convert to %s: preallocation %q cannot be combined with compression (qemu-img writes compressed clusters as they come)", o.Target, o.Preallocation)
		}
		args = append(args, "-o", "preallocation="+o.Preallocation)
	default:
		return nil, fmt.Errorf("cannot convert to %s: unknown preallocation %q (off, metadata or falloc)", o.Target, o.Preallocation)
	}
	if o.Coroutines > 0 {
		args = append(args, "-m", strconv.Itoa(o.Coroutines))
	}
	if OutOfOrder(o.TargetFormat, o.Compress) {
		args = append(args, "-W")
	}
	src := o.Source
	if o.Compress && strings.HasPrefix(src, "json:") && supportsIOUring(ctx) {
		src = withIOUring(src)
	}
	// qemu-img writes the file opened above, by its descriptor's name:
	// whatever is renamed or planted under the .part name meanwhile.
	res.Args = append(slices.Clone(args), src, part)
	args = append(args, src, fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd()))

	// Compressed outputs only: measured there from disk and from the
	// page cache. Plain ones gained from the page cache (0.76x) but the
	// disk-bound runs were noise on a loaded machine (docs/PERFORMANCE.md).
	stopWriteback := func() {}
	if o.Compress {
		stopWriteback = startWriteback(f)
	}
	err = runProgress(ctx, args, o.Progress)
	stopWriteback()
	if err != nil {
		return nil, fmt.Errorf("cannot convert %s to %s: %w", Describe(o.Source), o.TargetFormat, err)
	}
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot convert to %s: %w", o.Target, err)
	}
	res.Size = st.Size()
	var sum chan string
	if o.Hash {
		sum = make(chan string, 1)
		go func() { sum <- hashFile(ctx, f, res.Size) }()
	}
	// Make the data durable before it gets its final name, so a crash never
	// leaves a half-written image there.
	serr := f.Sync()
	if sum != nil {
		res.SHA256 = <-sum
	}
	if serr != nil {
		return nil, fmt.Errorf("cannot sync %s: %w", part, serr)
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("cannot convert to %s: cancelled: %w", o.Target, context.Cause(ctx))
	}
	if o.Finish != nil {
		if err := o.Finish(f); err != nil {
			return nil, fmt.Errorf("cannot convert to %s: %w", o.Target, err)
		}
	}
	if err := noreplace.Rename(part, o.Target); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("cannot convert to %s: it exists; not overwriting", o.Target)
		}
		return nil, fmt.Errorf("cannot convert to %s: %w", o.Target, err)
	}
	ok = true
	syncDir(filepath.Dir(o.Target))
	return res, nil
}

// OutOfOrder says whether a conversion to format runs with qemu-img's
// out-of-order writes (-W), which let its coroutines (-m, 8) write as
// each finishes instead of in the guest's order. Compressed qcow2: each
// coroutine compresses its own cluster, so the compression runs on
// every core (1.75x faster on 2 cores, docs/PERFORMANCE.md); the
// clusters land in the file in the order they were compressed, which
// costs nothing a reader of compressed clusters could notice. Raw: every
// block has its fixed place, so the order of writes changes nothing in
// the file. Uncompressed qcow2 is written in order: -W would allocate
// its clusters in completion order, scattering the guest's sequential
// data through the file, for no measurable gain (docs/PERFORMANCE.md).
func OutOfOrder(format string, compress bool) bool {
	return format == "raw" || (format == "qcow2" && compress)
}

// createPart creates the partial output part as a new file, mode 0600
// owned by the caller from its first instant (O_CREAT|O_EXCL|O_NOFOLLOW), and
// holds an exclusive flock on it for the whole run: a second conversion to
// the same target sees it and stops. Nothing already under that name is
// ever written to or reused, since whoever made it may hold it open (a file
// the output directory's owner planted would let them read the bytes root
// writes there): an unlocked regular file is the leftover of a killed run,
// and only its name is removed before the new file is made.
func createPart(part string) (*os.File, string, error) {
	const flags = os.O_RDWR | os.O_CREATE | os.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	f, err := os.OpenFile(part, flags, 0o600)
	warn := ""
	if errors.Is(err, fs.ErrExist) {
		old, oerr := os.OpenFile(part, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
		if oerr != nil {
			return nil, "", fmt.Errorf("%s exists and cannot be examined: %w", part, oerr)
		}
		st, serr := old.Stat()
		if serr != nil || !st.Mode().IsRegular() {
			old.Close()
			return nil, "", fmt.Errorf("%s is not a regular file; remove it", part)
		}
		if unix.Flock(int(old.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			old.Close()
			return nil, "", fmt.Errorf("%s is in use by another conversion", part)
		}
		rerr := os.Remove(part)
		old.Close()
		if rerr != nil {
			return nil, "", fmt.Errorf("cannot remove the leftover partial output %s: %w", part, rerr)
		}
		warn = "removed the leftover partial output " + part + " of an interrupted run"
		f, err = os.OpenFile(part, flags, 0o600)
	}
	if errors.Is(err, fs.ErrExist) {
		return nil, "", fmt.Errorf("%s is in use by another conversion", part)
	}
	if err != nil {
		return nil, "", err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, "", fmt.Errorf("%s is in use by another conversion", part)
	}
	// The umask may have taken bits away, never added any; make it exact.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		os.Remove(part)
		return nil, "", fmt.Errorf("cannot set the mode of %s: %w", part, err)
	}
	return f, warn, nil
}

// hashFile returns the hex sha256 of the first size bytes of f, or "" when
// reading fails or ctx ends.
func hashFile(ctx context.Context, f *os.File, size int64) string {
	h := sha256.New()
	r := io.NewSectionReader(f, 0, size)
	buf := make([]byte, 4<<20)
	for {
		if ctx.Err() != nil {
			return ""
		}
		n, err := r.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			return hex.EncodeToString(h.Sum(nil))
		}
		if err != nil {
			return ""
		}
	}
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// supportsZstd asks qemu-img to create a tiny zstd qcow2: qemu built
// without libzstd refuses compression_type=zstd.
func supportsZstd(ctx context.Context) bool {
	// The probe goes to the private temporary directory, never the output
	// directory, which may belong to another user.
	tmp, err := os.MkdirTemp("", "hyper2kvm-zstd-probe-")
	if err != nil {
		return false
	}
	defer os.RemoveAll(tmp)
	_, err = run(ctx, "create", "-q", "-f", "qcow2", "-o", "compression_type=zstd", filepath.Join(tmp, "p.qcow2"), "64K")
	return err == nil
}

var progressRE = regexp.MustCompile(`\((\d+(?:\.\d+)?)/100%\)`)

// runProgress runs qemu-img with -p and feeds the "(12.34/100%)" lines it
// prints (separated by \r) to progress.
func runProgress(ctx context.Context, args []string, progress func(int)) error {
	cmd, err := command(ctx, args)
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	last := -1
	sc := bufio.NewScanner(stdout)
	sc.Split(splitCR)
	for sc.Scan() {
		m := progressRE.FindStringSubmatch(sc.Text())
		if m == nil || progress == nil {
			continue
		}
		p, _ := strconv.ParseFloat(m[1], 64)
		if pct := int(p); pct > last {
			last = pct
			progress(pct)
		}
	}
	io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		return exitError(ctx, err, stderr.Bytes())
	}
	return nil
}

func splitCR(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// command builds a qemu-img command that gets SIGTERM on cancellation and
// SIGKILL if it has not exited 5 s later.
func command(ctx context.Context, args []string) (*exec.Cmd, error) {
	bin, err := exec.LookPath("qemu-img")
	if err != nil {
		return nil, fmt.Errorf("qemu-img is not installed (Debian package qemu-utils): %w", err)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd, nil
}

// ErrTerminated is the cause of a qemu-img that a signal from outside
// ended: systemd stopping the job's unit or the machine sends SIGTERM to
// every process of the unit at once, and qemu-img may die of it before
// the worker has seen its own. Such a run was interrupted, not failed.
var ErrTerminated = errors.New("stopped from outside")

// terminated is ErrTerminated, with the signal, when err says qemu-img
// died of SIGTERM, SIGINT or SIGHUP (cancellation through ctx is told
// apart before); otherwise nil.
func terminated(err error) error {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return nil
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return nil
	}
	switch sig := ws.Signal(); sig {
	case syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP:
		return fmt.Errorf("%w: qemu-img got %s (the job's unit or the machine is stopping)", ErrTerminated, sig)
	}
	return nil
}

func run(ctx context.Context, args ...string) ([]byte, error) {
	out, stderr, code, err := runCode(ctx, args...)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, fmt.Errorf("qemu-img %s: %s", args[0], firstLine(stderr))
	}
	return out, nil
}

// runCode runs qemu-img and returns its exit status; err is set only when it
// could not run or was cancelled.
func runCode(ctx context.Context, args ...string) (stdout, stderr []byte, code int, err error) {
	cmd, err := command(ctx, args)
	if err != nil {
		return nil, nil, 0, err
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if ctx.Err() != nil {
		return nil, nil, 0, fmt.Errorf("qemu-img %s: %w", args[0], context.Cause(ctx))
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		return o.Bytes(), e.Bytes(), ee.ExitCode(), nil
	}
	if t := terminated(err); t != nil {
		return nil, nil, 0, fmt.Errorf("qemu-img %s: %w", args[0], t)
	}
	if err != nil {
		return nil, nil, 0, fmt.Errorf("qemu-img %s: %w", args[0], err)
	}
	return o.Bytes(), e.Bytes(), 0, nil
}

func exitError(ctx context.Context, err error, stderr []byte) error {
	if ctx.Err() != nil {
		return fmt.Errorf("cancelled: %w", context.Cause(ctx))
	}
	if t := terminated(err); t != nil {
		return t
	}
	if msg := firstLine(stderr); msg != "" {
		return errors.New(msg)
	}
	return err
}

// firstLine returns qemu-img's messages without their "qemu-img: "
// prefix. qemu often says the cause on one line ("... Image has probably
// been truncated.") and the consequence on the last ("Could not open"), so
// up to three are joined.
func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	var msgs []string
	for _, l := range strings.Split(s, "\n") {
		if m, ok := strings.CutPrefix(l, "qemu-img:"); ok && len(msgs) < 3 {
			msgs = append(msgs, strings.TrimSpace(m))
		}
	}
	if len(msgs) == 0 {
		return truncate(s)
	}
	return truncate(strings.Join(msgs, "; "))
}

func truncate(s string) string {
	if len(s) > 500 {
		return s[:500] + "..."
	}
	return s
}

// Describe names an image for messages: a file's path, or for a json: spec
// the file its chain of "file" nodes reads ("ARCHIVE[offset N, size M]" for
// a range inside an archive).
func Describe(path string) string {
	n, ok := jsonSpec(path)
	if !ok {
		return path
	}
	var off, size any
	for depth := 0; depth < 8; depth++ {
		if name, ok := n["filename"].(string); ok {
			if off != nil {
				return fmt.Sprintf("%s[offset %v, size %v]", name, off, size)
			}
			return name
		}
		if o, ok := n["offset"]; ok {
			off, size = o, n["size"]
		}
		child, ok := n["file"].(map[string]any)
		if !ok {
			return path
		}
		n = child
	}
	return path
}

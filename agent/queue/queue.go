// Package queue is the drop folder on disk: to_be_processed/ where users and
// Submit put manifests and disk images, processing/ for claimed files, and
// processed/<date>/ and failed/<date>/ where each claimed file ends beside
// its report. It only moves files (rename(2), never copy) and decides which
// dropped files may be taken; the agent decides what to do with them.
//
// A file in to_be_processed/ is taken only when all of these hold:
//   - its name does not start with "." and does not end in ".part",
//     ".partial" or ".tmp" (those are ignored: uploads in progress);
//   - its name has no control characters and no "..", it is a regular file
//     (not a symlink, FIFO, device, socket or directory) with one link, and
//     a manifest is at most MaxManifestSize bytes (anything else is refused:
//     moved to failed/ with the reason);
//   - it is complete: no process has it open for writing (probed with a
//     read lease, where the filesystem supports leases), and either it is
//     stable (size, mtime and inode unchanged across two looks at least
//     StableTime apart) or it was moved in whole: the watcher saw it appear
//     (Created) and never saw it written since (Written), it is not empty,
//     and the lease probe could answer. A file renamed into the folder, the
//     recommended way to drop one, is therefore taken at once; a file
//     written in place waits StableTime after its last change;
//   - a disk image is whole by what its own container format says
//     (imgfmt.Complete: end-of-stream marker, footer, tables that fit the
//     file, an OVA's tar trailer and .mf checksums). One that is not keeps
//     waiting, and is refused with the failed check once it has stayed
//     unchanged for StableTimeout. An image whose bytes are raw has
//     nothing to check and must stay unchanged StableTimeRaw instead.
package queue

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
	"github.com/hyper2kvm/hyper2kvm/agent/noreplace"
)

// Directory names under the queue root.
const (
	ToBeProcessed = "to_be_processed"
	Processing    = "processing"
	Processed     = "processed"
	Failed        = "failed"
)

// Sidecar suffixes of the reports written beside settled files.
const (
	ReportSuffix = ".report.json"
	ErrorSuffix  = ".error.json"
)

// DateLayout names the per-day directories.
const DateLayout = "2006-01-02"

// Kind says what a dropped file is.
type Kind int

const (
	Manifest Kind = iota // .json .yaml .yml
	Image                // a disk image or appliance converted with the default pipeline
)

var imageExts = map[string]bool{".vmdk": true, ".ova": true, ".ovf": true, ".vhd": true, ".vhdx": true, ".raw": true, ".img": true, ".qcow2": true}
var manifestExts = map[string]bool{".json": true, ".yaml": true, ".yml": true}

// KindOf classifies a file name by its extension.
func KindOf(name string) (Kind, bool) {
	ext := strings.ToLower(filepath.Ext(name))
	switch {
	case manifestExts[ext]:
		return Manifest, true
	case imageExts[ext]:
		return Image, true
	}
	return 0, false
}

// ImageType is the manifest source_type of a dropped image.
func ImageType(name string) string {
	switch ext := strings.TrimPrefix(strings.ToLower(filepath.Ext(name)), "."); ext {
	case "img":
		return "raw"
	default:
		return ext
	}
}

// Entry is a dropped file ready to be claimed.
type Entry struct {
	Name    string
	Kind    Kind
	Size    int64
	ModTime time.Time
	UID     uint32 // the file's owner: who dropped it
}

// Rejected is a dropped file that will never be taken, and why.
type Rejected struct {
	Name   string
	Reason string
}

// Options tune the queue.
type Options struct {
	StableTime time.Duration
	// StableTimeRaw replaces StableTime for images whose bytes are raw:
	// they have no format to say they are whole (default StableTime).
	StableTimeRaw time.Duration
	// StableTimeout is how long an image that its format says is not
	// whole may stay unchanged before it is refused (default 10 minutes).
	StableTimeout   time.Duration
	MaxManifestSize int64
	Now             func() time.Time
	// Retention is how long settled files are kept in mind (keep_finished):
	// a file settled under the same name within it is listed in the report
	// of a new one (Target.Earlier). 0: however old.
	Retention time.Duration
	// Complete checks that an image file is whole (default
	// imgfmt.Complete): the format it found, an *imgfmt.IncompleteError
	// when the file is not whole, another error when it cannot be read.
	Complete func(path, ext string) (string, error)
}

// DefaultStableTimeout is Options.StableTimeout when it is zero.
const DefaultStableTimeout = 10 * time.Minute

type look struct {
	size  int64
	mtime time.Time
	ino   uint64
	at    time.Time
	// What Options.Complete said of the file in this state (checked is
	// false until it was asked): a file is checked once per state, so an
	// OVA's members are hashed once, not at every scan.
	checked bool
	format  string
	err     error
}

// recheck is how often a file that is not whole is looked at again when
// no event says it changed (a writer on another host of a network
// filesystem makes none).
const recheck = 5 * time.Second

// Queue is the drop folder rooted at Root. It is not safe for concurrent use.
type Queue struct {
	Root string
	opt  Options
	seen map[string]look
	// fresh names appeared (inotify IN_CREATE or IN_MOVED_TO) and were not
	// written to since: candidates for being taken without waiting.
	fresh map[string]bool
	// nextLook is when the first waiting file of the last scan may be
	// found stable.
	nextLook time.Time
}

// NextLook is when the earliest of the files the last Scan counted as
// waiting can be found stable: the time to scan again (by Options.Now's
// clock). Zero when none waits.
func (q *Queue) NextLook() time.Time { return q.nextLook }

// Created records that name appeared in to_be_processed/ (a create or a
// rename into it, as the watcher reports them).
func (q *Queue) Created(name string) { q.fresh[name] = true }

// Written records that name was written to, or its attributes changed,
// after it appeared: it must be stable for StableTime before it is taken.
func (q *Queue) Written(name string) { delete(q.fresh, name) }

// Open creates the queue directories under root if needed.
func Open(root string, o Options) (*Queue, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxManifestSize == 0 {
		o.MaxManifestSize = 1 << 20
	}
	if o.StableTimeout == 0 {
		o.StableTimeout = DefaultStableTimeout
	}
	if o.StableTimeRaw == 0 {
		o.StableTimeRaw = o.StableTime
	}
	if o.Complete == nil {
		o.Complete = imgfmt.Complete
	}
	for _, d := range []string{ToBeProcessed, Processing, Processed, Failed} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, fmt.Errorf("cannot create queue directory: %w", err)
		}
	}
	return &Queue{Root: root, opt: o, seen: map[string]look{}, fresh: map[string]bool{}}, nil
}

// Dir returns the path of a queue directory.
func (q *Queue) Dir(sub string) string { return filepath.Join(q.Root, sub) }

// Ignored reports whether name is a file still being written by convention:
// a dot-file, or a name ending in .part, .partial or .tmp (what cp, rsync,
// curl and browsers write to before renaming).
func Ignored(name string) bool {
	if strings.HasPrefix(name, ".") {
		return true
	}
	for _, s := range []string{".part", ".partial", ".tmp"} {
		if strings.HasSuffix(strings.ToLower(name), s) {
			return true
		}
	}
	return false
}

// BadName returns why name is refused, or "".
func BadName(name string) string {
	if strings.Contains(name, "..") {
		return `name contains ".."`
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return "name contains control characters"
		}
	}
	if len(name) > 200 {
		return "name is longer than 200 bytes"
	}
	return ""
}

// Scan looks at to_be_processed/ once. ready are the stable files to claim
// (oldest first), rejected the files to refuse, and waiting counts files
// seen but not yet stable: the caller should scan again after StableTime.
// busy counts ignored files (dot-files, *.partial) still lying there.
func (q *Queue) Scan() (ready []Entry, rejected []Rejected, waiting, busy int, err error) {
	dir := q.Dir(ToBeProcessed)
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, 0, 0, fmt.Errorf("cannot scan queue: %w", err)
	}
	now := q.opt.Now()
	q.nextLook = time.Time{}
	waitUntil := func(at time.Time) {
		waiting++
		if q.nextLook.IsZero() || at.Before(q.nextLook) {
			q.nextLook = at
		}
	}
	wait := func(since time.Time) { waitUntil(since.Add(q.opt.StableTime)) }
	present := map[string]bool{}
	for _, de := range des {
		name := de.Name()
		if Ignored(name) {
			busy++
			continue
		}
		present[name] = true
		if why := BadName(name); why != "" {
			rejected = append(rejected, Rejected{name, why})
			continue
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, name), &st); err != nil {
			continue // gone since ReadDir
		}
		kind, why := q.check(name, &st)
		if why != "" {
			rejected = append(rejected, Rejected{name, why})
			continue
		}
		cur := look{size: st.Size, mtime: time.Unix(st.Mtim.Unix()), ino: st.Ino, at: now}
		prev, ok := q.seen[name]
		if !ok || prev.size != cur.size || !prev.mtime.Equal(cur.mtime) || prev.ino != cur.ino {
			prev = cur
		}
		if q.fresh[name] && st.Size > 0 {
			if writer, known := leaseProbe(filepath.Join(dir, name)); known && !writer {
				if kind != Image || q.whole(dir, name, &prev) == nil {
					ready = append(ready, Entry{Name: name, Kind: kind, Size: st.Size, ModTime: cur.mtime, UID: st.Uid})
					continue
				}
				if why := notImage(prev.err); why != "" {
					rejected = append(rejected, Rejected{name, why})
					continue
				}
			}
			// Moved in, but not whole: wait as for a file written in place.
			delete(q.fresh, name)
		}
		if !ok || prev.at.Equal(now) {
			q.seen[name] = prev
			wait(now)
			continue
		}
		if now.Sub(prev.at) < q.opt.StableTime {
			wait(prev.at)
			continue
		}
		if openForWriting(filepath.Join(dir, name)) {
			q.seen[name] = cur // start over once the writer is gone
			wait(now)
			continue
		}
		if kind == Image {
			if err := q.whole(dir, name, &prev); err != nil {
				if why := notImage(err); why != "" {
					rejected = append(rejected, Rejected{name, why})
					continue
				}
				if unchanged := now.Sub(prev.at); unchanged >= q.opt.StableTimeout {
					rejected = append(rejected, Rejected{name, fmt.Sprintf("%v (unchanged for %s; stable_timeout is %s)",
						err, unchanged.Round(time.Second), q.opt.StableTimeout)})
					continue
				}
				waitUntil(minTime(prev.at.Add(q.opt.StableTimeout), now.Add(recheck)))
				continue
			}
			if prev.format == imgfmt.Raw && now.Sub(prev.at) < q.opt.StableTimeRaw {
				waitUntil(prev.at.Add(q.opt.StableTimeRaw))
				continue
			}
		}
		ready = append(ready, Entry{Name: name, Kind: kind, Size: st.Size, ModTime: cur.mtime, UID: st.Uid})
	}
	for name := range q.seen {
		if !present[name] {
			delete(q.seen, name)
		}
	}
	for name := range q.fresh {
		if !present[name] {
			delete(q.fresh, name)
		}
	}
	sort.Slice(ready, func(i, j int) bool {
		if !ready[i].ModTime.Equal(ready[j].ModTime) {
			return ready[i].ModTime.Before(ready[j].ModTime)
		}
		return ready[i].Name < ready[j].Name
	})
	return ready, rejected, waiting, busy, nil
}

// whole asks Options.Complete about dir/name once per state l of the file
// and returns why it is not whole, or nil.
func (q *Queue) whole(dir, name string, l *look) error {
	if !l.checked {
		l.format, l.err = q.opt.Complete(filepath.Join(dir, name), filepath.Ext(name))
		l.checked = true
		if prev, ok := q.seen[name]; ok && prev.size == l.size && prev.mtime.Equal(l.mtime) && prev.ino == l.ino {
			q.seen[name] = *l
		}
	}
	return l.err
}

// notImage is why a file whose content is no disk image is refused at
// once (waiting does not make text a disk), or "".
func notImage(err error) string {
	var ne *imgfmt.NotImageError
	if !errors.As(err, &ne) {
		return ""
	}
	return fmt.Sprintf("not a disk image: its content is text (it starts with %q); drop the image itself, or give a manifest a .json or .yaml name", ne.Start)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// Forget drops what Scan remembered about name (after a claim or reject).
func (q *Queue) Forget(name string) {
	delete(q.seen, name)
	delete(q.fresh, name)
}

// check returns the kind of a dropped file or why it is refused.
func (q *Queue) check(name string, st *unix.Stat_t) (Kind, string) {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFLNK:
		return 0, "symbolic links are not followed; drop the file itself"
	case unix.S_IFDIR:
		return 0, "directories are not accepted; drop a manifest or an image file"
	case unix.S_IFIFO:
		return 0, "FIFOs are not accepted"
	case unix.S_IFCHR, unix.S_IFBLK:
		return 0, "device nodes are not accepted"
	default:
		return 0, "only regular files are accepted"
	}
	if st.Nlink != 1 {
		return 0, fmt.Sprintf("file has %d hard links; drop a file with a single link", st.Nlink)
	}
	kind, ok := KindOf(name)
	if !ok {
		return 0, "unknown file type: want .json, .yaml or .yml manifests or .vmdk .ova .ovf .vhd .vhdx .raw .img .qcow2 images"
	}
	if kind == Manifest && st.Size > q.opt.MaxManifestSize {
		return 0, fmt.Sprintf("manifest is %d bytes, larger than the limit of %d", st.Size, q.opt.MaxManifestSize)
	}
	return kind, ""
}

// openForWriting reports whether some process holds path open for writing.
// A read lease can only be taken when no one has the file open for writing;
// filesystems without lease support answer "no" (the size/mtime rule still
// holds).
func openForWriting(path string) bool {
	writer, _ := leaseProbe(path)
	return writer
}

// leaseProbe tries a read lease on path: writer is true while some process
// has it open for writing; known is false when the probe cannot tell (no
// lease support, or the file cannot be opened).
func leaseProbe(path string) (writer, known bool) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, false
	}
	defer unix.Close(fd)
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_RDLCK); err != nil {
		if errors.Is(err, unix.EAGAIN) {
			return true, true
		}
		return false, false
	}
	unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_UNLCK)
	return false, true
}

// Claim moves to_be_processed/name into processing/ (under a new name if
// processing/ already has one) and returns the claimed name. The moved
// object is checked again after the move, so a file swapped for a symlink
// between Scan and Claim is refused rather than followed.
func (q *Queue) Claim(name string) (string, error) {
	q.Forget(name)
	claimed, err := q.moveUnique(filepath.Join(q.Dir(ToBeProcessed), name), q.Dir(Processing), name)
	if err != nil {
		return "", fmt.Errorf("cannot claim %s: %w", name, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(q.Dir(Processing), claimed), &st); err != nil {
		return "", fmt.Errorf("cannot claim %s: %w", name, err)
	}
	if _, why := q.check(claimed, &st); why != "" {
		return claimed, &RefusedError{Name: claimed, Reason: why}
	}
	return claimed, nil
}

// RefusedError says a claimed file turned out not to be acceptable; it is
// left in processing/ under Name for the caller to settle as failed.
type RefusedError struct{ Name, Reason string }

func (e *RefusedError) Error() string { return fmt.Sprintf("cannot take %s: %s", e.Name, e.Reason) }

// Processing lists the claimed files (dot-files are the agent's temporaries).
func (q *Queue) Processing() ([]string, error) {
	des, err := os.ReadDir(q.Dir(Processing))
	if err != nil {
		return nil, fmt.Errorf("cannot list processing: %w", err)
	}
	var names []string
	for _, de := range des {
		if !strings.HasPrefix(de.Name(), ".") {
			names = append(names, de.Name())
		}
	}
	return names, nil
}

// RemoveTemps removes the dot-temp files a write into processing/ left
// when the agent died in the middle of it (Put), and returns their names.
// processing/ is the agent's alone, so call it at start, before any Put.
// A leftover would otherwise keep processing/ non-empty, and the path
// unit would start an idle agent again and again.
func (q *Queue) RemoveTemps() ([]string, error) {
	des, err := os.ReadDir(q.Dir(Processing))
	if err != nil {
		return nil, fmt.Errorf("cannot list processing: %w", err)
	}
	var removed []string
	for _, de := range des {
		n := de.Name()
		if strings.HasPrefix(n, ".") && strings.Contains(n, ".tmp-") && de.Type().IsRegular() {
			if err := os.Remove(filepath.Join(q.Dir(Processing), n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return removed, fmt.Errorf("cannot remove %s: %w", n, err)
			}
			removed = append(removed, n)
		}
	}
	return removed, nil
}

// Put writes data as a new claimed file in processing/ (a dot-temp file
// renamed into place, never overwriting) and returns its name.
func (q *Queue) Put(name string, data []byte) (string, error) {
	tmp, err := writeTemp(q.Dir(Processing), name, data, 0o640, true)
	if err != nil {
		return "", fmt.Errorf("cannot write %s: %w", name, err)
	}
	claimed, err := q.moveUnique(tmp, q.Dir(Processing), name)
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("cannot write %s: %w", name, err)
	}
	return claimed, nil
}

// Target is where a settled file goes: Dir/Name plus Dir/Name+Suffix.
type Target struct {
	Dir    string `json:"dir"`
	Name   string `json:"name"`
	Suffix string `json:"suffix"` // ReportSuffix or ErrorSuffix
	// Earlier are the files settled before under the same name (or a
	// "-N" variant of it) within Options.Retention, relative to the queue
	// root, one a line: Finish adds them to the report as
	// "earlier_drops", so that a second drop of a name says so. (A string,
	// so that Targets compare with ==.)
	Earlier string `json:"earlier,omitempty"`
}

// Path is the settled file's path.
func (t Target) Path() string { return filepath.Join(t.Dir, t.Name) }

// ReportPath is the report's path.
func (t Target) ReportPath() string { return filepath.Join(t.Dir, t.Name+t.Suffix) }

// Reserve picks the target of a settled file: processed/<date>/ when ok,
// failed/<date>/ otherwise, under a name that clashes with no file and no
// report already there. The caller persists it before Finish so that a
// settle interrupted by a crash completes under the same name.
func (q *Queue) Reserve(name string, ok bool, at time.Time) (Target, error) {
	t := Target{Dir: filepath.Join(q.Root, Failed, at.Format(DateLayout)), Suffix: ErrorSuffix}
	if ok {
		t = Target{Dir: filepath.Join(q.Root, Processed, at.Format(DateLayout)), Suffix: ReportSuffix}
	}
	if err := os.MkdirAll(t.Dir, 0o755); err != nil {
		return Target{}, fmt.Errorf("cannot create %s: %w", t.Dir, err)
	}
	t.Earlier = strings.Join(q.earlier(SafeName(name), at), "\n")
	t.Name = uniqueName(t.Dir, SafeName(name), ReportSuffix, ErrorSuffix)
	return t, nil
}

// earlier lists the files settled under name or its "-N" variants in the
// processed/ and failed/ days within Options.Retention before at, oldest
// day first. Names are probed one by one (Reserve gives each day's
// variants without gaps), so a day with thousands of files costs a few
// lstats, not a directory read.
func (q *Queue) earlier(name string, at time.Time) []string {
	var out []string
	oldest := ""
	if q.opt.Retention > 0 {
		oldest = at.Add(-q.opt.Retention).Format(DateLayout)
	}
	ext := filepath.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	for _, top := range []string{Processed, Failed} {
		days, _ := os.ReadDir(q.Dir(top))
		for _, d := range days {
			day := d.Name()
			if _, err := time.Parse(DateLayout, day); err != nil || !d.IsDir() || day < oldest {
				continue
			}
			dir := filepath.Join(q.Dir(top), day)
			for n := 1; n <= 1000; n++ {
				cand := name
				if n > 1 {
					cand = stem + "-" + strconv.Itoa(n) + ext
				}
				file, side := exists(filepath.Join(dir, cand)), anyExists(dir, cand, []string{ReportSuffix, ErrorSuffix})
				if !file && !side {
					break
				}
				if file {
					out = append(out, filepath.Join(top, day, cand))
				}
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return dayOf(out[i]) < dayOf(out[j]) })
	return out
}

func dayOf(rel string) string { return filepath.Base(filepath.Dir(rel)) }

// withEarlier adds "earlier_drops" to a JSON object report, keeping the
// report as it is written (its fields in their order) otherwise.
func withEarlier(report []byte, earlier string) []byte {
	body := bytes.TrimRight(report, " \t\r\n")
	if earlier == "" || len(body) < 2 || body[0] != '{' || body[len(body)-1] != '}' {
		return report
	}
	list, err := json.Marshal(strings.Split(earlier, "\n"))
	if err != nil {
		return report
	}
	inner := bytes.TrimSpace(body[1 : len(body)-1])
	out := append([]byte{}, body[:len(body)-1]...)
	out = bytes.TrimRight(out, " \t\r\n")
	if len(inner) > 0 {
		out = append(out, ',')
	}
	out = append(out, "\n  \"earlier_drops\": "...)
	out = append(out, list...)
	return append(out, "\n}\n"...)
}

// Finish writes the report and moves the file from srcDir (processing/ or
// to_be_processed/) to t. It is idempotent: a second call after a crash
// rewrites the report and finds the file already moved.
func (q *Queue) Finish(srcDir, name string, t Target, report []byte) error {
	if err := WriteFileAtomic(t.ReportPath(), withEarlier(report, t.Earlier), 0o644); err != nil {
		return fmt.Errorf("cannot write report of %s: %w", name, err)
	}
	err := noreplace.Rename(filepath.Join(srcDir, name), t.Path())
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Lstat(t.Path()); serr == nil {
			return nil
		}
		return fmt.Errorf("cannot settle %s: it is gone from %s: %w", name, srcDir, fs.ErrNotExist)
	}
	if err != nil {
		return fmt.Errorf("cannot settle %s: %w", name, err)
	}
	return nil
}

// SafeName replaces control characters and ".." so a refused name can be
// kept in failed/.
func SafeName(name string) string {
	name = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '_'
		}
		return r
	}, name)
	return strings.ReplaceAll(name, "..", "__")
}

// uniqueName returns name, or name with "-N" before its extension, such that
// neither it nor it+sidecar exists in dir.
func uniqueName(dir, name string, sidecars ...string) string {
	ext := filepath.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	for n := 1; ; n++ {
		cand := name
		if n > 1 {
			cand = stem + "-" + strconv.Itoa(n) + ext
		}
		if !exists(filepath.Join(dir, cand)) && !anyExists(dir, cand, sidecars) {
			return cand
		}
	}
}

func anyExists(dir, name string, sidecars []string) bool {
	for _, s := range sidecars {
		if exists(filepath.Join(dir, name+s)) {
			return true
		}
	}
	return false
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// moveUnique renames src into dir as name or a free variant of it, never
// replacing an existing file, and returns the name used.
func (q *Queue) moveUnique(src, dir, name string) (string, error) {
	for range 1000 {
		cand := uniqueName(dir, name)
		err := noreplace.Rename(src, filepath.Join(dir, cand))
		if errors.Is(err, fs.ErrExist) {
			continue // taken between the check and the rename
		}
		return cand, err
	}
	return "", fmt.Errorf("no free name for %s in %s", name, dir)
}

// WriteFileAtomic writes data to path through a dot-temp file in the same
// directory, so readers see the old content or the new, never a part.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return replace(path, data, perm, true)
}

// ReplaceFile writes data to path as WriteFileAtomic does (readers see
// the old content or the new, never a part) but does not wait for the
// disk: for files that are made again from durable state after a crash.
func ReplaceFile(path string, data []byte, perm os.FileMode) error {
	return replace(path, data, perm, false)
}

// replace renames a temp file with data over path; durable syncs the file
// and the directory.
func replace(path string, data []byte, perm os.FileMode, durable bool) error {
	tmp, err := writeTemp(filepath.Dir(path), filepath.Base(path), data, perm, durable)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	if durable {
		syncDir(filepath.Dir(path))
	}
	return nil
}

func writeTemp(dir, name string, data []byte, perm os.FileMode, sync bool) (string, error) {
	f, err := os.CreateTemp(dir, "."+SafeName(name)+".tmp-*")
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// PutFile moves a settled file (from processed/ or failed/) back into
// processing/ and returns its claimed name.
func (q *Queue) PutFile(path string) (string, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return "", fmt.Errorf("cannot take %s back: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("cannot take %s back: not a regular file", path)
	}
	return q.moveUnique(path, q.Dir(Processing), filepath.Base(path))
}

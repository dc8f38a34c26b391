package queue

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newQueue(t *testing.T) (*Queue, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2024, 5, 1, 12, 0, 0, 0, time.Local)}
	q, err := Open(t.TempDir(), Options{StableTime: time.Second, MaxManifestSize: 4096, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return q, c
}

func drop(t *testing.T, q *Queue, name, content string) string {
	t.Helper()
	p := filepath.Join(q.Dir(ToBeProcessed), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func names(es []Entry) []string {
	var n []string
	for _, e := range es {
		n = append(n, e.Name)
	}
	return n
}

func TestStableRule(t *testing.T) {
	q, c := newQueue(t)
	p := drop(t, q, "web01.json", "{}")

	ready, _, waiting, _, _ := q.Scan()
	if len(ready) != 0 || waiting != 1 {
		t.Fatalf("first look: ready %v waiting %d; a file seen once must wait", names(ready), waiting)
	}
	c.advance(500 * time.Millisecond)
	if ready, _, _, _, _ := q.Scan(); len(ready) != 0 {
		t.Fatalf("taken before StableTime passed: %v", names(ready))
	}
	// The writer appends: the clock starts again.
	os.WriteFile(p, []byte(`{"version":"1.0"}`), 0o644)
	c.advance(2 * time.Second)
	if ready, _, waiting, _, _ := q.Scan(); len(ready) != 0 || waiting != 1 {
		t.Fatalf("taken although its size changed: %v", names(ready))
	}
	c.advance(2 * time.Second)
	ready, _, waiting, _, _ = q.Scan()
	if len(ready) != 1 || ready[0].Name != "web01.json" || ready[0].Kind != Manifest || waiting != 0 {
		t.Fatalf("stable file not ready: %+v waiting %d", ready, waiting)
	}
}

func TestOpenForWritingIsNotTaken(t *testing.T) {
	q, c := newQueue(t)
	p := drop(t, q, "big.raw", "\x00")
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	q.Scan()
	c.advance(2 * time.Second)
	ready, _, waiting, _, _ := q.Scan()
	leases := probeLeases(t, q.Dir(ToBeProcessed))
	if leases && (len(ready) != 0 || waiting != 1) {
		t.Fatalf("file open for writing was taken: %v", names(ready))
	}
	f.Close()
	c.advance(2 * time.Second)
	q.Scan()
	c.advance(2 * time.Second)
	if ready, _, _, _, _ := q.Scan(); len(ready) != 1 || ready[0].Kind != Image {
		t.Fatalf("closed file not taken: %+v", ready)
	}
}

// probeLeases reports whether dir's filesystem supports leases at all.
func probeLeases(t *testing.T, dir string) bool {
	p := filepath.Join(dir, ".probe")
	os.WriteFile(p, nil, 0o644)
	defer os.Remove(p)
	f, _ := os.Open(p)
	defer f.Close()
	_, _, errno := syscall.Syscall(syscall.SYS_FCNTL, f.Fd(), 1024 /* F_SETLEASE */, 0 /* F_RDLCK */)
	if errno != 0 {
		t.Logf("filesystem has no leases (%v): only the size/mtime rule applies", errno)
		return false
	}
	return true
}

func TestIgnoredAndRefused(t *testing.T) {
	q, c := newQueue(t)
	dir := q.Dir(ToBeProcessed)
	drop(t, q, ".hidden.json", "{}")
	drop(t, q, "upload.json.partial", "{}")
	drop(t, q, "notes.txt", "hello")
	drop(t, q, "bad\nname.json", "{}")
	drop(t, q, "a..b.json", "{}")
	drop(t, q, "huge.json", strings.Repeat(" ", 5000))
	drop(t, q, "huge.raw", strings.Repeat("\x00", 5000)) // images have no size limit
	drop(t, q, "notes.vmdk", "a text file is no disk image\n")
	os.WriteFile(filepath.Join(t.TempDir(), "target.json"), []byte("{}"), 0o644)
	os.Symlink("/etc/passwd", filepath.Join(dir, "link.json"))
	drop(t, q, "linked.json", "{}")
	os.Link(filepath.Join(dir, "linked.json"), filepath.Join(t.TempDir(), "other"))
	syscall.Mkfifo(filepath.Join(dir, "fifo.json"), 0o644)
	os.Mkdir(filepath.Join(dir, "sub.json"), 0o755)

	q.Scan()
	c.advance(2 * time.Second)
	ready, rejected, _, busy, err := q.Scan()
	if err != nil {
		t.Fatal(err)
	}
	if got := names(ready); len(got) != 1 || got[0] != "huge.raw" {
		t.Errorf("ready = %v, want only huge.raw", got)
	}
	if busy != 2 {
		t.Errorf("busy = %d, want 2 (dot-file and .partial)", busy)
	}
	want := map[string]string{
		"notes.txt":      "unknown file type",
		"notes.vmdk":     `not a disk image: its content is text (it starts with "a text file is no disk image")`,
		"bad\nname.json": "control characters",
		"a..b.json":      `".."`,
		"huge.json":      "larger than the limit",
		"link.json":      "symbolic links",
		"linked.json":    "hard links",
		"fifo.json":      "FIFO",
		"sub.json":       "directories",
	}
	got := map[string]string{}
	for _, r := range rejected {
		got[r.Name] = r.Reason
	}
	for name, reason := range want {
		if !strings.Contains(got[name], reason) {
			t.Errorf("%q: reason %q, want it to mention %q", name, got[name], reason)
		}
	}
	if len(got) != len(want) {
		t.Errorf("rejected %v, want exactly %v", got, want)
	}
}

func TestClaimRenamesAndNeverOverwrites(t *testing.T) {
	q, _ := newQueue(t)
	os.WriteFile(filepath.Join(q.Dir(Processing), "web01.json"), []byte("older"), 0o644)
	src := drop(t, q, "web01.json", "newer")
	st0, _ := os.Stat(src)

	claimed, err := q.Claim("web01.json")
	if err != nil {
		t.Fatal(err)
	}
	if claimed != "web01-2.json" {
		t.Errorf("claimed as %q, want web01-2.json", claimed)
	}
	if b, _ := os.ReadFile(filepath.Join(q.Dir(Processing), "web01.json")); string(b) != "older" {
		t.Errorf("existing file overwritten: %q", b)
	}
	st1, err := os.Stat(filepath.Join(q.Dir(Processing), claimed))
	if err != nil || !os.SameFile(st0, st1) {
		t.Errorf("claim did not rename the same inode (copy?): %v", err)
	}
	if _, err := os.Lstat(src); !os.IsNotExist(err) {
		t.Errorf("source still in to_be_processed: %v", err)
	}
}

func TestClaimRechecksAfterMove(t *testing.T) {
	q, _ := newQueue(t)
	// Swapped for a symlink after the scan: the link is moved, never followed.
	os.Symlink("/etc/shadow", filepath.Join(q.Dir(ToBeProcessed), "swap.json"))
	claimed, err := q.Claim("swap.json")
	var re *RefusedError
	if err == nil || !errorsAs(err, &re) || claimed != "swap.json" {
		t.Fatalf("Claim = %q, %v; want a RefusedError", claimed, err)
	}
	if fi, _ := os.Lstat(filepath.Join(q.Dir(Processing), claimed)); fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("claimed object is not the symlink itself")
	}
}

func errorsAs(err error, re **RefusedError) bool {
	e, ok := err.(*RefusedError)
	*re = e
	return ok
}

func TestReserveAndFinish(t *testing.T) {
	q, c := newQueue(t)
	day := filepath.Join(q.Root, Processed, "2024-05-01")
	os.MkdirAll(day, 0o755)
	os.WriteFile(filepath.Join(day, "web01.json"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(day, "web01-2.json.report.json"), []byte("x"), 0o644) // a stray report also blocks the name
	os.WriteFile(filepath.Join(q.Dir(Processing), "web01.json"), []byte("m"), 0o644)

	tg, err := q.Reserve("web01.json", true, c.now())
	if err != nil {
		t.Fatal(err)
	}
	if tg.Dir != day || tg.Name != "web01-3.json" || tg.Suffix != ReportSuffix {
		t.Fatalf("target = %+v", tg)
	}
	if err := q.Finish(q.Dir(Processing), "web01.json", tg, []byte(`{"ok":true}`)); err != nil {
		t.Fatal(err)
	}
	// Finishing again (after a crash) is harmless.
	if err := q.Finish(q.Dir(Processing), "web01.json", tg, []byte(`{"ok":true}`)); err != nil {
		t.Fatalf("second Finish: %v", err)
	}
	if b, _ := os.ReadFile(tg.Path()); string(b) != "m" {
		t.Errorf("manifest not moved: %q", b)
	}
	// web01.json settled before on that day: the report says so.
	if b, _ := os.ReadFile(tg.ReportPath()); string(b) != "{\"ok\":true,\n  \"earlier_drops\": [\"processed/2024-05-01/web01.json\"]\n}\n" {
		t.Errorf("report = %q", b)
	}
	fg, _ := q.Reserve("bad\nname.json", false, c.now())
	if fg.Suffix != ErrorSuffix || !strings.Contains(fg.Dir, Failed) || fg.Name != "bad_name.json" {
		t.Errorf("failed target = %+v", fg)
	}
}

func TestPut(t *testing.T) {
	q, _ := newQueue(t)
	a, err := q.Put("x.json", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := q.Put("x.json", []byte("2"))
	if a != "x.json" || b != "x-2.json" {
		t.Errorf("names %q %q", a, b)
	}
	names, _ := q.Processing()
	if len(names) != 2 {
		t.Errorf("processing holds %v (temp files left?)", names)
	}
}

func TestRemoveTemps(t *testing.T) {
	q, _ := newQueue(t)
	if _, err := q.Put("kept.json", []byte("1")); err != nil {
		t.Fatal(err)
	}
	dir := q.Dir(Processing)
	for _, n := range []string{".cut.json.tmp-123", ".other"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := q.RemoveTemps()
	if err != nil || len(removed) != 1 || removed[0] != ".cut.json.tmp-123" {
		t.Fatalf("RemoveTemps = %v, %v", removed, err)
	}
	var left []string
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		left = append(left, de.Name())
	}
	if strings.Join(left, " ") != ".other kept.json" {
		t.Errorf("processing/ holds %v, want the claim and the file that is not a temp", left)
	}
}

func TestMovedInIsTakenAtOnce(t *testing.T) {
	q, _ := newQueue(t)
	if !probeLeases(t, q.Dir(ToBeProcessed)) {
		t.Skip("no lease support here: moved-in files wait like the others")
	}
	tmp := filepath.Join(q.Dir(ToBeProcessed), ".web01.json")
	os.WriteFile(tmp, []byte(`{"version":"1.0"}`), 0o644)
	os.Rename(tmp, filepath.Join(q.Dir(ToBeProcessed), "web01.json"))
	q.Created("web01.json") // what the watcher reports for the rename
	ready, _, waiting, _, _ := q.Scan()
	if len(ready) != 1 || waiting != 0 {
		t.Fatalf("a file renamed in whole must be taken at once: ready %v waiting %d", names(ready), waiting)
	}

	for _, tc := range []struct {
		name    string
		written bool // the watcher saw a write after it appeared
		content string
		open    bool // a writer still holds it
	}{
		{"written.json", true, `{"version":"1.0"}`, false},
		{"empty.json", false, "", false},
		{"held.json", false, `{"version":"1.0"}`, true},
	} {
		p := drop(t, q, tc.name, tc.content)
		q.Created(tc.name)
		if tc.written {
			q.Written(tc.name)
		}
		if tc.open {
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
		}
		if ready, _, _, _, _ := q.Scan(); slices.Contains(names(ready), tc.name) {
			t.Errorf("%s: taken at once; written %v, %d bytes, open %v must wait", tc.name, tc.written, len(tc.content), tc.open)
		}
	}
}

// TestNextLookIsTheFirstSettlingFile: scans for other files in between do
// not put off the second look at a file that is settling.
func TestNextLookIsTheFirstSettlingFile(t *testing.T) {
	q, c := newQueue(t)
	if q.Scan(); !q.NextLook().IsZero() {
		t.Fatalf("NextLook %v with nothing waiting", q.NextLook())
	}
	start := c.t
	drop(t, q, "a.json", "{}")
	q.Scan()
	if want := start.Add(time.Second); !q.NextLook().Equal(want) {
		t.Fatalf("NextLook %v, want %v (first seen + StableTime)", q.NextLook(), want)
	}
	c.advance(600 * time.Millisecond)
	drop(t, q, "b.json", "{}")
	if ready, _, waiting, _, _ := q.Scan(); len(ready) != 0 || waiting != 2 {
		t.Fatalf("ready %v waiting %d, want 2 waiting", names(ready), waiting)
	}
	if want := start.Add(time.Second); !q.NextLook().Equal(want) {
		t.Fatalf("after a scan for b.json NextLook is %v, want a.json's %v", q.NextLook(), want)
	}
	c.advance(400 * time.Millisecond)
	if ready, _, _, _, _ := q.Scan(); !slices.Equal(names(ready), []string{"a.json"}) {
		t.Fatalf("ready %v at a.json's NextLook, want [a.json]", names(ready))
	}
	if want := start.Add(1600 * time.Millisecond); !q.NextLook().Equal(want) {
		t.Fatalf("NextLook %v, want b.json's %v", q.NextLook(), want)
	}
}

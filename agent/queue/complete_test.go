package queue

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
)

func TestIgnoredNames(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ignored bool
	}{
		{".web01.vmdk.part", true},
		{".web01.vmdk", true},
		{"web01.vmdk.part", true},
		{"web01.vmdk.partial", true},
		{"web01.vmdk.tmp", true},
		{"WEB01.VMDK.TMP", true},
		{"web01.vmdk", false},
		{"part.vmdk", false},
		{"tmp.json", false},
	} {
		if got := Ignored(tc.name); got != tc.ignored {
			t.Errorf("Ignored(%q) = %v, want %v", tc.name, got, tc.ignored)
		}
	}
}

// stubComplete answers Complete from a table by file name and counts the
// calls.
type stubComplete struct {
	format map[string]string
	err    map[string]error
	calls  map[string]int
}

func (s *stubComplete) complete(p, ext string) (string, error) {
	n := filepath.Base(p)
	s.calls[n]++
	return s.format[n], s.err[n]
}

func newCheckedQueue(t *testing.T, s *stubComplete) (*Queue, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2024, 5, 1, 12, 0, 0, 0, time.Local)}
	q, err := Open(t.TempDir(), Options{StableTime: time.Second, StableTimeRaw: 30 * time.Second,
		StableTimeout: time.Minute, Now: c.now, Complete: s.complete})
	if err != nil {
		t.Fatal(err)
	}
	return q, c
}

// TestIncompleteImageWaitsThenFails: an image its format says is not whole
// is not taken however long it stays unchanged; after StableTimeout it is
// refused with the failed check; a change restarts the clock, and once it
// is whole it is taken.
func TestIncompleteImageWaitsThenFails(t *testing.T) {
	s := &stubComplete{
		format: map[string]string{"a.vmdk": imgfmt.VMDK, "b.vhd": imgfmt.VPC},
		err: map[string]error{
			"a.vmdk": &imgfmt.IncompleteError{Format: "vmdk", Check: imgfmt.CheckVMDKStream, Reason: "cut"},
			"b.vhd":  &imgfmt.IncompleteError{Format: "vhd", Check: imgfmt.CheckVHDFooter, Reason: "cut"},
		},
		calls: map[string]int{},
	}
	q, c := newCheckedQueue(t, s)
	a := drop(t, q, "a.vmdk", "part one")
	drop(t, q, "b.vhd", "cut")
	q.Scan()
	for range 5 {
		c.advance(10 * time.Second)
		ready, rejected, waiting, _, _ := q.Scan()
		if len(ready) != 0 || len(rejected) != 0 || waiting != 2 {
			t.Fatalf("incomplete images: ready %v rejected %v waiting %d; want both waiting", names(ready), rejected, waiting)
		}
		if next := q.NextLook(); next.After(c.t.Add(recheck)) {
			t.Fatalf("next look %v, more than %v away", next.Sub(c.t), recheck)
		}
	}
	if s.calls["b.vhd"] != 1 {
		t.Errorf("b.vhd checked %d times in one state, want 1", s.calls["b.vhd"])
	}
	// a.vmdk's writer comes back and finishes it: the clock restarts.
	os.WriteFile(a, []byte("part one, part two"), 0o644)
	delete(s.err, "a.vmdk")
	c.advance(10 * time.Second)
	q.Scan()
	c.advance(10 * time.Second)
	ready, rejected, _, _, _ := q.Scan()
	if len(ready) != 1 || ready[0].Name != "a.vmdk" {
		t.Fatalf("whole a.vmdk not ready: %v", names(ready))
	}
	if len(rejected) != 1 || rejected[0].Name != "b.vhd" || !strings.Contains(rejected[0].Reason, imgfmt.CheckVHDFooter) ||
		!strings.Contains(rejected[0].Reason, "stable_timeout") {
		t.Fatalf("b.vhd after stable_timeout: rejected %+v, want it refused naming %q and stable_timeout", rejected, imgfmt.CheckVHDFooter)
	}
}

// TestRawImageWaitsLonger: an image whose bytes are raw must stay
// unchanged StableTimeRaw; manifests and other formats StableTime.
func TestRawImageWaitsLonger(t *testing.T) {
	s := &stubComplete{format: map[string]string{"d.img": imgfmt.Raw, "d.qcow2": imgfmt.QCOW2}, err: map[string]error{}, calls: map[string]int{}}
	q, c := newCheckedQueue(t, s)
	drop(t, q, "d.img", "raw bytes")
	drop(t, q, "d.qcow2", "QFI")
	drop(t, q, "m.json", "{}")
	q.Scan()
	c.advance(2 * time.Second)
	ready, _, waiting, _, _ := q.Scan()
	if got := strings.Join(names(ready), " "); got != "d.qcow2 m.json" && got != "m.json d.qcow2" || waiting != 1 {
		t.Fatalf("after StableTime: ready %q waiting %d; want d.qcow2 and m.json, d.img waiting", got, waiting)
	}
	if want := c.t.Add(28 * time.Second); !q.NextLook().Equal(want) {
		t.Errorf("next look %v, want %v (StableTimeRaw after the first look)", q.NextLook(), want)
	}
	q.Forget("d.qcow2")
	os.Remove(filepath.Join(q.Dir(ToBeProcessed), "d.qcow2"))
	os.Remove(filepath.Join(q.Dir(ToBeProcessed), "m.json"))
	c.advance(28 * time.Second)
	if ready, _, _, _, _ := q.Scan(); len(ready) != 1 || ready[0].Name != "d.img" {
		t.Fatalf("raw image after StableTimeRaw: ready %v", names(ready))
	}
}

// TestMovedInIncompleteWaits: a file moved in whole is taken at once only
// when its format says it is whole.
func TestMovedInIncompleteWaits(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	c := &clock{t: time.Date(2024, 5, 1, 12, 0, 0, 0, time.Local)}
	q, err := Open(t.TempDir(), Options{StableTime: time.Second, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "d.vhd")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "vpc", src, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, out)
	}
	b, _ := os.ReadFile(src)
	os.WriteFile(filepath.Join(q.Dir(ToBeProcessed), "whole.vhd"), b, 0o644)
	os.WriteFile(filepath.Join(q.Dir(ToBeProcessed), "cut.vhd"), b[:len(b)-512], 0o644)
	q.Created("whole.vhd")
	q.Created("cut.vhd")
	ready, _, waiting, _, _ := q.Scan()
	if len(ready) != 1 || ready[0].Name != "whole.vhd" || waiting != 1 {
		t.Fatalf("moved in: ready %v waiting %d; want whole.vhd taken, cut.vhd waiting", names(ready), waiting)
	}
}

// TestSecondDropSaysSo: a file settled under the same name (or a "-N"
// variant) within Retention is listed in the new one's report; older ones,
// other names and stray reports are not.
func TestSecondDropSaysSo(t *testing.T) {
	c := &clock{t: time.Date(2024, 5, 10, 12, 0, 0, 0, time.Local)}
	q, err := Open(t.TempDir(), Options{StableTime: time.Second, Now: c.now, Retention: 5 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	put := func(rel string) {
		p := filepath.Join(q.Root, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("x"), 0o644)
	}
	put("processed/2024-05-01/web01.vmdk")             // older than Retention
	put("processed/2024-05-08/web01.vmdk")             // the first drop
	put("failed/2024-05-09/web01.vmdk")                // a second, failed
	put("failed/2024-05-09/web01-2.vmdk")              // a third, same day
	put("processed/2024-05-09/web02.vmdk")             // another name
	put("processed/2024-05-10/web01.vmdk.report.json") // a report alone
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"web01.vmdk", []string{"processed/2024-05-08/web01.vmdk", "failed/2024-05-09/web01.vmdk", "failed/2024-05-09/web01-2.vmdk"}},
		{"web03.vmdk", nil},
	} {
		tg, err := q.Reserve(tc.name, true, c.now())
		if err != nil {
			t.Fatal(err)
		}
		if got := tg.Earlier; got != strings.Join(tc.want, "\n") {
			t.Errorf("%s: Earlier = %q, want %q", tc.name, got, tc.want)
		}
		drop(t, q, tc.name, "disk")
		if err := q.Finish(q.Dir(ToBeProcessed), tc.name, tg, []byte("{\n  \"status\": \"completed\"\n}")); err != nil {
			t.Fatal(err)
		}
		var rep map[string]any
		b, _ := os.ReadFile(tg.ReportPath())
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatalf("%s: report is not JSON: %v\n%s", tc.name, err, b)
		}
		got, _ := json.Marshal(rep["earlier_drops"])
		want, _ := json.Marshal(tc.want)
		if tc.want == nil {
			want = []byte("null")
		}
		if string(got) != string(want) || rep["status"] != "completed" {
			t.Errorf("%s: report %s, want earlier_drops %s", tc.name, b, want)
		}
	}
}

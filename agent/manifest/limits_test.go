package manifest_test

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

// Hostile manifests (issue 16, item 4): each must be refused with a short,
// clear message at a cost bounded by the 1 MiB cap, whatever it would
// expand to.

// aliasBomb is a batch whose vms entries are all aliases of one map
// holding a name of nameLen bytes.
func aliasBomb(entries, nameLen int) string {
	var b strings.Builder
	b.WriteString("version: '1.0'\nbatch: true\nname: bomb\nbase: &vm\n  name: ")
	b.WriteString(strings.Repeat("n", nameLen))
	b.WriteString("\n  pipeline: {load: {source_type: raw, source_path: /a}}\nvms:\n")
	for range entries {
		b.WriteString("  - *vm\n")
	}
	return b.String()
}

// unknownKeys is a JSON object with n distinct unknown keys.
func unknownKeys(n int) string {
	var b strings.Builder
	b.WriteString(`{"version": "1.0", "name": "a", "pipeline": {"load": {"source_type": "raw", "source_path": "/a"}}`)
	for i := range n {
		fmt.Fprintf(&b, `,"k%d":1`, i)
	}
	b.WriteString("}")
	return b.String()
}

// allocated is the bytes f allocates (TotalAlloc counts every allocation,
// freed or not, so this bounds the peak from above and does not depend on
// when the collector runs).
func allocated(f func()) uint64 {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestHostileManifests(t *testing.T) {
	longName := strings.Repeat("N", 900<<10)
	cases := []struct {
		name     string
		in       string
		syntax   bool     // a *SyntaxError, not Problems
		want     []string // substrings of the error
		notWant  []string
		problems int // with !syntax: how many problems are listed (the cap plus the "more" line)
		maxAlloc uint64
	}{
		{name: "alias bomb: 15,000 vms aliasing one map with a 900 KiB name", in: aliasBomb(15000, 900<<10), syntax: true,
			want:     []string{"line 4: YAML anchors and aliases are not allowed in a manifest"},
			maxAlloc: 32 << 20},
		{name: "alias bomb over the cap: 15,000 aliases, 3.9 MB name", in: aliasBomb(15000, 3_900_000), syntax: true,
			want: []string{"larger than the limit of 1048576 bytes"}, maxAlloc: 1 << 20},
		{name: "262,144 unknown keys (over the cap)", in: unknownKeys(262144), syntax: true,
			want: []string{"larger than the limit of 1048576 bytes"}, notWant: []string{"alias"}, maxAlloc: 1 << 20},
		{name: "as many unknown keys as fit", in: unknownKeys(90000),
			want:     []string{`k0: unknown field; allowed here: version`, "k99: unknown field", "... and 89900 more problems"},
			notWant:  []string{"alias", "k100:"},
			problems: manifest.MaxProblems + 1, maxAlloc: 128 << 20},
		{name: "a name of 900 KiB", in: "version: '1.0'\nname: " + longName + "\npipeline: {load: {source_type: raw, source_path: /a}}\n",
			want:     []string{`name: is 921600 bytes long, more than the 4096 allowed (it starts "NNNNNNNN`},
			notWant:  []string{strings.Repeat("N", 100)},
			problems: 1, maxAlloc: 16 << 20},
		{name: "a source_path of 900 KiB in JSON", in: `{"version": "1.0", "name": "a", "pipeline": {"load": {"source_type": "raw", "source_path": "/` + longName + `"}}}`,
			want:     []string{"pipeline.load.source_path: is 921601 bytes long, more than the 4096 allowed"},
			notWant:  []string{strings.Repeat("N", 100)},
			problems: 1, maxAlloc: 16 << 20},
		{name: "an unknown key of 900 KiB", in: `{"version": "1.0", "name": "a", "pipeline": {"load": {"source_type": "raw", "source_path": "/a"}}, "` + longName + `": 1}`,
			want:     []string{"NNNN…: unknown field; allowed here:"},
			notWant:  []string{strings.Repeat("N", 100)},
			problems: 1, maxAlloc: 16 << 20},
		{name: "a long unsupported version", in: "version: '" + strings.Repeat("9", 4000) + "'\nname: a\npipeline: {load: {source_type: raw, source_path: /a}}\n",
			want: []string{"version: unsupported version"}, notWant: []string{strings.Repeat("9", 100)}, problems: 1, maxAlloc: 1 << 20},
		{name: "15,000 invalid VMs", in: "version: '1.0'\nbatch: true\nname: b\nvms:\n" + strings.Repeat("- {name: '!', pipeline: {load: {source_type: x, source_path: y}}}\n", 15000),
			want:     []string{`vms[0].name: "!" is not a valid name`, "more problems"},
			problems: manifest.MaxProblems + 1, maxAlloc: 128 << 20},
		{name: "200,000 values", in: "version: '1.0'\nbatch: true\nvms: [" + strings.Repeat("a,", 200000) + "a]\n", syntax: true,
			want: []string{"the manifest has more than 200000 values"}, notWant: []string{"alias"}, maxAlloc: 160 << 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			in := []byte(tc.in)
			alloc := allocated(func() { _, err = manifest.Parse(in) })
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			// The whole answer stays short: at most MaxProblems lines of a
			// few hundred bytes.
			if len(msg) > 64<<10 {
				t.Errorf("message is %d bytes long; starts %.300q", len(msg), msg)
			}
			var se *manifest.SyntaxError
			var ps manifest.Problems
			switch {
			case tc.syntax && !errors.As(err, &se):
				t.Errorf("want a *SyntaxError, got %T: %.300s", err, msg)
			case !tc.syntax && !errors.As(err, &ps):
				t.Errorf("want Problems, got %T: %.300s", err, msg)
			case !tc.syntax && len(ps) != tc.problems:
				t.Errorf("%d problems listed, want %d", len(ps), tc.problems)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message lacks %q: %.500s", w, msg)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(msg, w) {
					t.Errorf("message has %.60q", w)
				}
			}
			if alloc > tc.maxAlloc {
				t.Errorf("parsing %d bytes allocated %d MiB, want at most %d MiB", len(tc.in), alloc>>20, tc.maxAlloc>>20)
			}
			t.Logf("%d bytes in, %d MiB allocated, %d bytes of message", len(tc.in), alloc>>20, len(msg))
		})
	}
}

// countingReader yields size bytes of 'a' without holding them, counting
// what was read.
type countingReader struct {
	size, read int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	if r.read >= r.size {
		return 0, io.EOF
	}
	n := int64(len(p))
	if left := r.size - r.read; n > left {
		n = left
	}
	for i := range p[:n] {
		p[i] = 'a'
	}
	r.read += n
	return int(n), nil
}

func TestReadStopsAtTheCap(t *testing.T) {
	cases := []struct {
		name     string
		size     int64
		tooLarge bool
		wantRead int64
	}{
		{"200 MiB", 200 << 20, true, manifest.MaxSize + 1},
		{"one byte over", manifest.MaxSize + 1, true, manifest.MaxSize + 1},
		{"exactly the cap", manifest.MaxSize, false, manifest.MaxSize},
		{"small", 100, false, 100},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &countingReader{size: tc.size}
			var data []byte
			var err error
			alloc := allocated(func() { data, err = manifest.Read(r, "/srv/drop/big.yaml") })
			if r.read != tc.wantRead {
				t.Errorf("read %d bytes, want %d", r.read, tc.wantRead)
			}
			// ReadAll doubles its buffer: a few times the cap, never the input.
			if alloc > 8<<20 {
				t.Errorf("allocated %d MiB", alloc>>20)
			}
			var tl *manifest.TooLargeError
			if !tc.tooLarge {
				if err != nil || int64(len(data)) != tc.size {
					t.Fatalf("got %d bytes, %v", len(data), err)
				}
				return
			}
			if !errors.As(err, &tl) {
				t.Fatalf("want *TooLargeError, got %T %v", err, err)
			}
			want := "cannot read manifest /srv/drop/big.yaml: manifest is larger than the limit of 1048576 bytes (1 MiB)"
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("got %q, want it to start %q", err, want)
			}
		})
	}
}

// A valid batch as large as the cap allows parses: the limits refuse
// attacks, not big batches.
func TestLargeBatchFits(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: '1.0'\nbatch: true\nname: big\nvms:\n")
	n := 0
	for ; b.Len() < manifest.MaxSize-200; n++ {
		fmt.Fprintf(&b, "- {name: vm%05d, pipeline: {load: {source_type: raw, source_path: /d/vm%05d.raw}}}\n", n, n)
	}
	m, err := manifest.Parse([]byte(b.String()))
	if err != nil {
		t.Fatalf("%d VMs: %.500v", n, err)
	}
	if len(m.VMs) != n || n < 10000 {
		t.Fatalf("%d VMs parsed of %d", len(m.VMs), n)
	}
}

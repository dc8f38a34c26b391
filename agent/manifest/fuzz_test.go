package manifest_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

// FuzzParse: no input panics; every refusal is a *SyntaxError or a
// non-empty Problems; every accepted manifest is valid, survives
// SetDefaults and Split, and reads back the same after json.Marshal.
// Seeds are in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add([]byte(singleJSON))
	f.Add([]byte(singleYAML))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := manifest.Parse(data)
		if err != nil {
			var se *manifest.SyntaxError
			var ps manifest.Problems
			switch {
			case errors.As(err, &se):
				if se.Msg == "" {
					t.Fatal("SyntaxError without a message")
				}
			case errors.As(err, &ps):
				if len(ps) == 0 {
					t.Fatal("empty Problems returned as an error")
				}
				for _, p := range ps {
					if p.Message == "" {
						t.Fatalf("problem without a message at %q", p.Path)
					}
				}
			default:
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			if m != nil {
				t.Fatal("a manifest returned with an error")
			}
			return
		}
		if ps := m.Validate(); ps != nil {
			t.Fatalf("accepted manifest does not validate: %v", ps)
		}
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		again, err := manifest.Parse(out)
		if err != nil {
			t.Fatalf("cannot parse the marshalled manifest: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(m, again) {
			t.Fatalf("round trip changed the manifest:\n%s", out)
		}
		again.SetDefaults()
		if !reflect.DeepEqual(m, again) {
			t.Fatal("SetDefaults is not idempotent")
		}
		for i, one := range m.Split() {
			if ps := one.Validate(); ps != nil {
				t.Fatalf("split part %d does not validate: %v", i, ps)
			}
		}
	})
}

// The valid seeds must stay valid, or the round-trip half of FuzzParse
// would never run on them.
func TestFuzzSeedsValid(t *testing.T) {
	for _, name := range []string{"single-json", "single-yaml", "batch-json", "ova-disks-yaml"} {
		raw, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzParse", name))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitN(string(raw), "\n", 3)
		if len(lines) < 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") {
			t.Fatalf("%s: not a corpus file", name)
		}
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := manifest.Parse([]byte(s)); err != nil {
			t.Errorf("seed %s is not a valid manifest: %v", name, err)
		}
	}
}

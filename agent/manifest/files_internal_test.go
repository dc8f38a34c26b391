package manifest

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// The detector's error names the file; CheckFiles says which file and
// field, without repeating the path twice.
func TestCheckFilesDetectorError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.vmdk")
	if err := os.WriteFile(p, []byte("\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := &Manifest{Version: "1.0", Name: "a", Pipeline: &Pipeline{Load: Load{SourceType: "vmdk", SourcePath: p}}}
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"plain", errors.New("imgfmt: not implemented yet"), "cannot detect the format of " + p + ": imgfmt: not implemented yet"},
		{"wrapped with path", wrapErr("cannot detect format of "+p, errors.New("truncated header")), "cannot detect the format of " + p + ": truncated header"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ps := checkFiles(m, func(string) (string, error) { return "", tc.err })
			if len(ps) != 1 || ps[0].Path != "pipeline.load.source_path" || ps[0].Message != tc.want {
				t.Fatalf("got %v", ps)
			}
		})
	}
	ps := checkFiles(m, func(string) (string, error) { return "ovf", nil })
	if len(ps) != 1 || ps[0].String() != `pipeline.load.source_type: declares "vmdk" (qemu format "vmdk") but `+p+" holds an ovf image" {
		t.Fatalf("got %v", ps)
	}
}

type wrapped struct {
	msg   string
	inner error
}

func (w wrapped) Error() string { return w.msg + ": " + w.inner.Error() }
func (w wrapped) Unwrap() error { return w.inner }

func wrapErr(msg string, inner error) error { return wrapped{msg, inner} }

package engine_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/engine"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

// TestRunForUserOutputDir runs the engine as the worker does for another
// uid with a manifest-chosen convert.output_dir: a directory the uid owns
// gets the outputs (reported under the user's path); the same directory, or
// a parent, swapped for a symbolic link to a root-only directory after the
// agent's check fails in LOAD naming the link and writes nothing there.
func TestRunForUserOutputDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("giving the output directory to another uid (chown) needs root")
	}
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	const uid = 4242421
	base := t.TempDir()
	for _, d := range []string{base, filepath.Dir(base)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	raw := filepath.Join(base, "disk.raw")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "raw", raw, "4M").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	os.Chmod(raw, 0o644)
	userDir := func(name string) string {
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rootOnly := filepath.Join(base, "rootonly")
	if err := os.Mkdir(rootOnly, 0o700); err != nil {
		t.Fatal(err)
	}
	owned := userDir("owned")
	parent := userDir("parent")
	if err := os.Symlink(rootOnly, filepath.Join(base, "swapped")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(base, "rootonly"), filepath.Join(parent, "sub")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(rootOnly, "inner"), 0o777); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, dir, err string
	}{
		{"directory owned by the uid", owned, ""},
		{"missing directory below one owned by the uid", filepath.Join(owned, "new"), ""},
		{"directory swapped for a symlink", filepath.Join(base, "swapped"), filepath.Join(base, "swapped") + " is a symbolic link"},
		{"parent swapped for a symlink", filepath.Join(parent, "sub", "inner"), filepath.Join(parent, "sub") + " is a symbolic link"},
		{"directory the uid cannot write", rootOnly, "uid 4242421 cannot"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := vmManifest("outvm", "raw", raw)
			m.Pipeline.Convert = &manifest.Convert{OutputDir: tc.dir}
			rep, err := engine.Run(context.Background(), m, engine.Options{
				JobID: "o1", OutputDir: filepath.Join(base, "default"), WorkDir: filepath.Join(base, "work"), SourceUID: uid})
			if tc.err == "" {
				if err != nil || rep.Status != "completed" {
					t.Fatalf("%v %+v", err, rep.Error)
				}
				for _, name := range []string{"outvm.qcow2", "outvm.xml", "outvm.report.json"} {
					if st, err := os.Lstat(filepath.Join(tc.dir, name)); err != nil || !st.Mode().IsRegular() {
						t.Errorf("%s: %v", name, err)
					}
				}
				if rep.ReportPath != filepath.Join(tc.dir, "outvm.report.json") {
					t.Errorf("report path %q", rep.ReportPath)
				}
				for _, a := range rep.Artifacts {
					if !strings.HasPrefix(a.Path, tc.dir+"/") || a.SHA256 == "" {
						t.Errorf("artifact %+v, want it under %s with a sha256", a, tc.dir)
					}
				}
				return
			}
			if err == nil || rep.Error == nil || rep.Error.Stage != "load" || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v (report %+v), want LOAD failing with %q", err, rep.Error, tc.err)
			}
			for _, d := range []string{rootOnly, filepath.Join(rootOnly, "inner")} {
				entries, _ := os.ReadDir(d)
				for _, e := range entries {
					if e.Name() != "inner" {
						t.Errorf("%s holds %s", d, e.Name())
					}
				}
			}
		})
	}
}

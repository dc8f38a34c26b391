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
	"github.com/hyper2kvm/hyper2kvm/agent/progress"
)

// leaseFixture makes, in a fresh directory, a qcow2 source, a host file
// holding canary, and the first cluster of a qcow2 of the same size that
// keeps its data in that host file: what a user who may write the source
// would write over its header.
func leaseFixture(t *testing.T, canary string) (dir, src string, evil []byte) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	dir = t.TempDir()
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	src = filepath.Join(dir, "vm.qcow2")
	run("qemu-img", "create", "-q", "-f", "qcow2", src, "1M")
	host := filepath.Join(dir, "host.raw")
	evilPath := filepath.Join(dir, "evil.qcow2")
	run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+host+",data_file_raw=on", evilPath, "1M")
	if err := os.WriteFile(host, []byte(strings.Repeat(canary, 1<<20/len(canary))), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(evilPath)
	if err != nil {
		t.Fatal(err)
	}
	return dir, src, b[:64<<10]
}

// noCanary fails when a file below dir holds canary.
func noCanary(t *testing.T, dir, canary string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), canary) {
				t.Errorf("%s holds the host file's bytes", p)
			}
		}
		return nil
	})
}

// TestRunSourceOpenForWriting: a source some process holds open for
// writing could change under qemu at any moment: LOAD refuses it, naming
// it, and converts nothing.
func TestRunSourceOpenForWriting(t *testing.T) {
	dir, src, _ := leaseFixture(t, "unused")
	w, err := os.OpenFile(src, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	out := filepath.Join(dir, "out")
	m := vmManifest("held", "qcow2", src)
	m.Pipeline.Validate = &manifest.Validate{Enabled: no()}
	rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: out})
	if err == nil || rep.Error == nil || rep.Error.Stage != "load" || !strings.Contains(err.Error(), src+" is open for writing by another process") {
		t.Fatalf("error %v (report %+v), want LOAD refusing %s as open for writing", err, rep.Error, src)
	}
	if entries, _ := os.ReadDir(out); len(entries) != 1 || !strings.HasSuffix(entries[0].Name(), ".report.json") {
		t.Errorf("output directory holds %v, want only the report", entries)
	}
}

// TestRunSourceRewrittenMeanwhile: whoever may write the source opens it
// and writes over its header a qcow2 header that keeps the data in a host
// file, while the job reads it (in LOAD, after the header check; in
// CONVERT). The job fails naming the source, the writer waited for the job
// to let go of it, and no output or report holds the host file's bytes.
func TestRunSourceRewrittenMeanwhile(t *testing.T) {
	const canary = "HYPER2KVM-LEASE-CANARY-0b5e55ed"
	for _, stage := range []string{"load", "convert"} {
		t.Run(stage, func(t *testing.T) {
			dir, src, evil := leaseFixture(t, canary)
			out := filepath.Join(dir, "out")
			m := vmManifest("rewritten", "qcow2", src)
			m.Pipeline.Validate = &manifest.Validate{Enabled: no()}
			written := false
			rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: out, Progress: func(u progress.Update) {
				if u.Stage != stage || u.Percent < 1 || written {
					return
				}
				written = true
				// Opening for writing waits until the job lets go.
				f, err := os.OpenFile(src, os.O_WRONLY, 0)
				if err != nil {
					t.Error(err)
					return
				}
				f.WriteAt(evil, 0)
				f.Close()
			}})
			if !written {
				t.Fatalf("the job never reached %s: %v", stage, err)
			}
			want := src + " was opened for writing while the job read it; the job was stopped and its outputs removed"
			if err == nil || rep.Error == nil || !strings.Contains(err.Error(), want) || !strings.Contains(rep.Error.Message, want) {
				t.Fatalf("error %v (report %+v), want %q", err, rep.Error, want)
			}
			if entries, _ := os.ReadDir(out); len(entries) != 1 || !strings.HasSuffix(entries[0].Name(), ".report.json") {
				t.Errorf("output directory holds %v, want only the report", entries)
			}
			noCanary(t, out, canary)
		})
	}
}

// TestRunHardLinkedSource: where fs.protected_hardlinks is 0 a user can
// give root's file a name in their own directory; root's job reads a file
// with several names only from a directory nobody else writes.
func TestRunHardLinkedSource(t *testing.T) {
	dir, src, _ := leaseFixture(t, "unused")
	shared := filepath.Join(dir, "shared")
	if err := os.Mkdir(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(shared, 0o1777) // like /tmp
	linked := filepath.Join(shared, "vm.qcow2")
	if err := os.Link(src, linked); err != nil {
		t.Fatal(err)
	}
	m := vmManifest("linked", "qcow2", linked)
	m.Pipeline.Validate = &manifest.Validate{Enabled: no()}
	rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: filepath.Join(dir, "out1")})
	if err == nil || rep.Error == nil || rep.Error.Stage != "load" || !strings.Contains(err.Error(), linked+" has 2 hard links") {
		t.Fatalf("error %v (report %+v), want LOAD refusing %s for its hard links", err, rep.Error, linked)
	}
	// The other name, in root's own directory: root's file, converted.
	m = vmManifest("own", "qcow2", src)
	m.Pipeline.Validate = &manifest.Validate{Enabled: no()}
	if _, err := engine.Run(context.Background(), m, engine.Options{OutputDir: filepath.Join(dir, "out2")}); err != nil {
		t.Fatalf("root's own hard-linked file in its own directory: %v", err)
	}
}

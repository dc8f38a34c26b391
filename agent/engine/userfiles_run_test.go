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
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// TestRunForUser runs the engine as the worker does for a job of an
// unprivileged user (Options.SourceUID): what that user may read converts,
// the same image offered through a path or reference the user could not
// follow fails in LOAD naming the path, and nothing is written for it.
// The files belong to the test's user and the job's uid owns none of them,
// so the test needs no root.
func TestRunForUser(t *testing.T) {
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
	mkdir := func(p string, mode os.FileMode) string {
		p = filepath.Join(base, p)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mine, private := mkdir("mine", 0o755), mkdir("private", 0o755)
	raw := filepath.Join(mine, "disk.raw")
	run := func(args ...string) {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	run("qemu-img", "create", "-q", "-f", "raw", raw, "4M")
	run("sh", "-c", "printf 'user data' | dd of="+raw+" conv=notrunc status=none")
	flat := fixture.Convert(t, raw, "vmdk", "monolithicFlat")

	// root's secret and a VMDK and an OVF whose references lead to it.
	secret := filepath.Join(private, "secret.raw")
	run("qemu-img", "create", "-q", "-f", "raw", secret, "4M")
	secretFlat := fixture.Convert(t, secret, "vmdk", "monolithicFlat")
	run("chmod", "0600", secret, secretFlat, strings.TrimSuffix(secretFlat, ".vmdk")+"-flat.vmdk")
	if err := os.Chmod(secretFlat, 0o644); err != nil { // the descriptor is readable, its extent not
		t.Fatal(err)
	}
	if err := os.Symlink(private, filepath.Join(mine, "sub")); err != nil {
		t.Fatal(err)
	}
	ovf := filepath.Join(mine, "vm.ovf")
	xml := fixture.OVFXML(fixture.VM{Name: "uservm"}, []fixture.OVFDisk{{File: "sub/secret.raw", Size: 4 << 20, Capacity: 4 << 20}})
	if err := os.WriteFile(ovf, []byte(xml), 0o644); err != nil {
		t.Fatal(err)
	}
	backed := filepath.Join(mine, "backed.qcow2")
	run("qemu-img", "create", "-q", "-f", "qcow2", "-b", raw, "-F", "raw", backed)
	dataFile := filepath.Join(mine, "external.qcow2")
	run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+secret, dataFile, "4M")
	swapped := filepath.Join(mine, "swapped.raw")
	if err := os.Symlink(raw, swapped); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, typ, src, err string
	}{
		{"raw", "raw", raw, ""},
		{"flat vmdk", "vmdk", flat, ""},
		{"ovf through a symlinked directory", "ovf", ovf, "sub is a symbolic link"},
		{"vmdk whose extent the user cannot read", "vmdk", secretFlat, "cannot read"},
		{"source that is a symlink", "raw", swapped, "is a symbolic link"},
		{"qcow2 with a backing file beside it", "qcow2", backed, ""},
		{"qcow2 with an external data file elsewhere", "qcow2", dataFile, "external data file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(base, "out", strings.ReplaceAll(tc.name, " ", "-"))
			rep, err := engine.Run(context.Background(), vmManifest("uservm", tc.typ, tc.src), engine.Options{
				JobID: "u1", OutputDir: out, WorkDir: filepath.Join(base, "work"), SourceUID: uid})
			if tc.err == "" {
				if err != nil || rep.Status != "completed" {
					t.Fatalf("%v %+v", err, rep.Error)
				}
				return
			}
			if err == nil || rep.Error == nil || rep.Error.Stage != "load" || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v (report %+v), want LOAD failing with %q", err, rep.Error, tc.err)
			}
			if strings.Contains(err.Error(), "/proc/") {
				t.Errorf("the error names the opened file, not the user's path: %v", err)
			}
			entries, _ := os.ReadDir(out)
			if len(entries) != 1 || !strings.HasSuffix(entries[0].Name(), ".report.json") {
				t.Errorf("output directory holds %v, want only the report", entries)
			}
		})
	}
}

// TestRunForUserWithFix runs the whole pipeline (INSPECT and FIX with the
// native backend on an overlay) for another uid on a VMDK with a flat
// extent: qemu-img, the overlay and qemu-storage-daemon all read the
// source through the worker's open files and the private descriptor copy.
func TestRunForUserWithFix(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the native guest backend mounts the guest: needs root")
	}
	for _, tool := range []string{"qemu-img", "qemu-storage-daemon", "unshare", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip(tool + " not installed")
		}
	}
	base := t.TempDir()
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(base), 0o755)
	uuid := fixture.NewUUID(t)
	raw := fixture.LinuxDisk(t, base, fixture.Options{SizeMB: 32, UUID: uuid})
	vmdk := fixture.Convert(t, raw, "vmdk", "monolithicFlat")
	on, off := true, false
	m := vmManifest("fixed", "vmdk", vmdk)
	m.Pipeline.Inspect = nil
	m.Pipeline.Fix = &manifest.Fix{Enabled: &on, Backend: "native", Initramfs: &manifest.InitramfsFix{Enabled: &on, Regenerate: &off}}
	out := filepath.Join(base, "out")
	rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: out, WorkDir: filepath.Join(base, "work"), SourceUID: 4242421})
	if err != nil {
		t.Fatalf("Run: %v\nstages %+v", err, rep.Stages)
	}
	for _, s := range rep.Stages {
		if s.Status != "ok" {
			t.Errorf("stage %s: %s %s %s", s.Name, s.Status, s.Reason, s.Error)
		}
	}
	t.Logf("%d changes by FIX, stages %d", len(rep.Changes), len(rep.Stages))
	if fstab, _ := fixture.ReadFile(t, filepath.Join(out, "fixed.qcow2"), "qcow2", "/etc/fstab"); !strings.Contains(fstab, "UUID="+uuid) {
		t.Errorf("output fstab not fixed:\n%s", fstab)
	}
}

package manifest_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

func withSource(sourceType, path string) *manifest.Manifest {
	return &manifest.Manifest{Version: "1.0", Name: "a", Pipeline: &manifest.Pipeline{
		Load: manifest.Load{SourceType: sourceType, SourcePath: path}}}
}

func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
	}
}

// CheckFiles with the real imgfmt.Detect on images qemu-img makes.
func TestCheckFiles(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed (packaging/deps.txt: qemu-utils)")
	}
	dir := t.TempDir()
	img := func(name string) string { return filepath.Join(dir, name) }
	qemuImg(t, "create", "-q", "-f", "qcow2", img("disk.qcow2"), "16M")
	qemuImg(t, "create", "-q", "-f", "vmdk", img("disk.vmdk"), "16M")
	qemuImg(t, "create", "-q", "-f", "vpc", img("disk.vhd"), "16M")
	qemuImg(t, "create", "-q", "-f", "vhdx", img("disk.vhdx"), "16M")
	qemuImg(t, "create", "-q", "-f", "raw", img("disk.raw"), "16M")
	if err := os.WriteFile(img("empty"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(img("disk.qcow2"), img("link.qcow2")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(img("fifo"), 0o644); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name, sourceType, path string
		want                   string // "path: message substring"; "" for no problem
	}{
		{"qcow2", "qcow2", img("disk.qcow2"), ""},
		{"vmdk", "vmdk", img("disk.vmdk"), ""},
		{"vhd", "vhd", img("disk.vhd"), ""},
		{"vhdx", "vhdx", img("disk.vhdx"), ""},
		{"raw", "raw", img("disk.raw"), ""},
		{"qcow2 declared vmdk", "vmdk", img("disk.qcow2"),
			`pipeline.load.source_type: declares "vmdk" (qemu format "vmdk") but ` + img("disk.qcow2") + " holds a qcow2 image"},
		{"vhd declared raw", "raw", img("disk.vhd"),
			`pipeline.load.source_type: declares "raw" (qemu format "raw") but ` + img("disk.vhd") + ` holds a vhd image (qemu format "vpc")`},
		{"raw declared vhdx", "vhdx", img("disk.raw"),
			`pipeline.load.source_type: declares "vhdx" (qemu format "vhdx") but ` + img("disk.raw") + " holds a raw image"},
		{"missing", "raw", img("nope.raw"), "pipeline.load.source_path: " + img("nope.raw") + " does not exist"},
		{"directory", "raw", dir, "pipeline.load.source_path: " + dir + " is a directory, not a disk image file"},
		{"symlink", "qcow2", img("link.qcow2"), "pipeline.load.source_path: " + img("link.qcow2") + " is a symbolic link (to " + img("disk.qcow2") + ")"},
		{"fifo", "raw", img("fifo"), "pipeline.load.source_path: " + img("fifo") + " is a FIFO, not a disk image file"},
		{"device", "raw", "/dev/null", "pipeline.load.source_path: /dev/null is a device, not a disk image file"},
		{"undetectable", "raw", img("empty"), "pipeline.load.source_path: cannot detect the format of " + img("empty") + ":"},
		{"relative path is Validate's business", "raw", "disk.raw", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ps := manifest.CheckFiles(withSource(tc.sourceType, tc.path))
			if tc.want == "" {
				if len(ps) != 0 {
					t.Fatalf("unexpected problems:\n%v", ps)
				}
				return
			}
			if len(ps) != 1 || !strings.HasPrefix(ps[0].String(), tc.want) {
				t.Fatalf("got:\n%v\nwant a problem starting %q", ps, tc.want)
			}
		})
	}
}

func TestCheckFilesUnreadable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root can read any file; the permission check needs an ordinary user")
	}
	p := filepath.Join(t.TempDir(), "secret.raw")
	if err := os.WriteFile(p, make([]byte, 512), 0o000); err != nil {
		t.Fatal(err)
	}
	ps := manifest.CheckFiles(withSource("raw", p))
	if len(ps) != 1 || ps[0].String() != "pipeline.load.source_path: "+p+" cannot be read: permission denied" {
		t.Fatalf("got %v", ps)
	}
}

func TestCheckFilesBatch(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "a.raw")
	if err := os.WriteFile(good, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	m := &manifest.Manifest{Version: "1.0", Batch: true, VMs: []manifest.VM{
		{Name: "a", Pipeline: &manifest.Pipeline{Load: manifest.Load{SourceType: "raw", SourcePath: good}}},
		{Name: "b", Pipeline: &manifest.Pipeline{Load: manifest.Load{SourceType: "raw", SourcePath: filepath.Join(dir, "b.raw")}}},
		{Name: "c"},
	}}
	ps := manifest.CheckFiles(m)
	if len(ps) != 1 || ps[0].Path != "vms[1].pipeline.load.source_path" || !strings.Contains(ps[0].Message, "does not exist") {
		t.Fatalf("got %v", ps)
	}
	if manifest.CheckFiles(nil) != nil {
		t.Fatal("nil manifest")
	}
}

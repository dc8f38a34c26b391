package engine

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/report"

	"golang.org/x/sys/unix"
)

func TestCheckLinks(t *testing.T) {
	rootDir := unix.Stat_t{Uid: 0, Mode: unix.S_IFDIR | 0o755}
	userDir := unix.Stat_t{Uid: 1000, Mode: unix.S_IFDIR | 0o755}
	tmpDir := unix.Stat_t{Uid: 0, Mode: unix.S_IFDIR | 0o1777}
	file := func(uid uint32, nlink uint64) unix.Stat_t {
		return unix.Stat_t{Uid: uid, Nlink: nlink, Mode: unix.S_IFREG | 0o644}
	}
	for _, tc := range []struct {
		name   string
		uid    int64 // the job's SourceUID
		st     unix.Stat_t
		parent unix.Stat_t
		err    string
	}{
		{"one name", 0, file(1000, 1), userDir, ""},
		{"root's file, root's directory", 0, file(0, 2), rootDir, ""},
		{"root's file in a user's directory", 0, file(0, 2), userDir, "a directory others may write"},
		{"root's file in /tmp", 0, file(0, 2), tmpDir, "a directory others may write"},
		{"another user's file for root", 0, file(1000, 3), rootDir, "has 3 hard links and belongs to uid 1000"},
		{"the submitter's own file", 1000, file(1000, 2), userDir, ""},
		{"root's file for a user", 1000, file(0, 2), userDir, "belongs to uid 0, not to the submitter (uid 1000)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := newUserFiles(tc.uid, "")
			if err != nil {
				t.Fatal(err)
			}
			if os.Geteuid() != 0 && tc.uid == 0 {
				t.Skip("root's jobs are the caller's: needs root")
			}
			err = u.checkLinks("/x/disk.img", tc.st, tc.parent)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("error %v, want %q", err, tc.err)
			}
		})
	}
}

// headersSame reads again exactly what the header parsers read.
func TestHeadersSame(t *testing.T) {
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, []byte("QFI\xfb-header-and-the-rest-of-the-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	u, _ := newUserFiles(0, "")
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	u.hold(f)
	defer u.close()
	rd := u.record(f, "/vm/disk.qcow2")
	buf := make([]byte, 10)
	rd.ReadAt(buf, 0)
	if err := u.headersSame(); err != nil {
		t.Fatalf("unchanged: %v", err)
	}
	// A byte nobody parsed may change (guest data).
	os.WriteFile(p, []byte("QFI\xfb-header-AND-THE-REST-OF-THE-FILE"), 0o600)
	if err := u.headersSame(); err != nil {
		t.Fatalf("data past the header changed: %v", err)
	}
	os.WriteFile(p, []byte("QFI\xfb-HEADER-and-the-rest-of-the-file"), 0o600)
	if err := u.headersSame(); err == nil || !strings.Contains(err.Error(), "/vm/disk.qcow2 changed while the job read it") || !isSourceChange(err) {
		t.Errorf("header changed: error %v", err)
	}
}

// A job whose file was written while it read it keeps nothing of what it
// read: its outputs are removed and its report holds no finding.
func TestDiscard(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "vm.qcow2")
	os.WriteFile(out, []byte("converted"), 0o600)
	os.WriteFile(filepath.Join(dir, "vm.xml"), []byte("<domain/>"), 0o600)
	r := &runner{vm: &manifest.Manifest{Name: "vm"}, outDir: dir, converted: true, disks: []*disk{{target: out, converted: true}}, rep: &report.Report{
		Guest:    &report.Guest{Kernels: []string{"read-from-a-host-file"}},
		Changes:  []report.Change{{}},
		Warnings: []string{"INSPECT said something"},
		Stages: []report.Stage{
			{Name: "load", Status: "ok", Result: "kept"},
			{Name: "inspect", Status: "ok", Result: "findings"},
			{Name: "convert", Status: "failed", Error: "cancelled during convert", Result: "partial"},
		},
		Error: &report.Failure{Stage: "convert", Message: "cancelled during convert"},
	}}
	err := sourceWritten{"/home/alice/vm.qcow2"}
	r.discard(err)
	for _, p := range []string{out, filepath.Join(dir, "vm.xml")} {
		if _, serr := os.Stat(p); serr == nil {
			t.Errorf("%s kept", p)
		}
	}
	rep := r.rep
	if rep.Guest != nil || rep.Changes != nil || rep.Warnings != nil {
		t.Errorf("report keeps findings: %+v %v %v", rep.Guest, rep.Changes, rep.Warnings)
	}
	if rep.Stages[0].Result != "kept" || rep.Stages[1].Result != nil || rep.Stages[2].Result != nil {
		t.Errorf("stage results: %+v", rep.Stages)
	}
	if rep.Error.Stage != "convert" || rep.Error.Message != err.Error() || rep.Stages[2].Error != err.Error() {
		t.Errorf("error %+v, stage error %q; want %q", rep.Error, rep.Stages[2].Error, err)
	}
}

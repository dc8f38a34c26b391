package engine_test

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/engine"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/progress"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// TestRunReferences runs the engine as root's jobs and hyperctl convert do
// (no SourceUID) on images that make qemu read a host file beside nothing
// of theirs: each fails in LOAD naming the image, the file and
// allow_references, and writes no output holding the file's bytes; listed
// in allow_references, the same image converts.
func TestRunReferences(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	base := t.TempDir()
	vm, host := filepath.Join(base, "vm"), filepath.Join(base, "host")
	for _, d := range []string{vm, host} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	const canary = "HYPER2KVM-CANARY-f00dfeed"
	secret := filepath.Join(host, "secret.raw")
	run("qemu-img", "create", "-q", "-f", "raw", secret, "1M")
	run("sh", "-c", "printf "+canary+" | dd of="+secret+" conv=notrunc status=none")
	run("chmod", "0600", secret)

	backed := filepath.Join(vm, "backed.qcow2")
	run("qemu-img", "create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw", backed)
	relBacked := filepath.Join(vm, "relative.qcow2")
	run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "../host/secret.raw", "-F", "raw", relBacked, "1M")
	// qemu-img create -o data_file writes into the data file: make a copy.
	dataSecret := filepath.Join(host, "data.raw")
	dataFile := filepath.Join(vm, "external.qcow2")
	run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+dataSecret+",data_file_raw=on", dataFile, "1M")
	run("cp", secret, dataSecret)
	sparse := filepath.Join(vm, "sparse.vmdk")
	if err := os.WriteFile(sparse, fixture.DeferringVMDK(fixture.FlatDescriptor(secret, 2048)), 0o644); err != nil {
		t.Fatal(err)
	}
	linked := filepath.Join(vm, "linked.qcow2")
	if err := os.Symlink(secret, filepath.Join(vm, "base.raw")); err != nil {
		t.Fatal(err)
	}
	run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "base.raw", "-F", "raw", linked, "1M")
	// An OVA holding a qcow2 whose backing file lies outside.
	ovaQcow := filepath.Join(base, "ova-disk.qcow2")
	run("qemu-img", "create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw", ovaQcow)
	ova := filepath.Join(vm, "appliance.ova")
	writeOVA(t, ova, "disk1.qcow2", ovaQcow)
	big := filepath.Join(vm, "big.qcow2")
	run("qemu-img", "create", "-q", "-f", "qcow2", big, "64T")

	old := syscall.Umask(0)
	defer syscall.Umask(old)

	for _, tc := range []struct {
		name, typ, src string
		allow          []string
		err            []string // all in the error; none: it converts
		canary         bool     // the output holds the canary
	}{
		{name: "qcow2 backing file outside", typ: "qcow2", src: backed, err: []string{backed, "backing file", secret, "allow_references"}},
		{name: "qcow2 backing file allowed", typ: "qcow2", src: backed, allow: []string{secret}, canary: true},
		{name: "qcow2 backing file through ..", typ: "qcow2", src: relBacked, err: []string{"../host/secret.raw", "allow_references"}},
		{name: "qcow2 external data file outside", typ: "qcow2", src: dataFile, err: []string{dataFile, "external data file", dataSecret, "allow_references"}},
		{name: "qcow2 external data file allowed", typ: "qcow2", src: dataFile, allow: []string{dataSecret}, canary: true},
		{name: "sparse vmdk deferring to an extent outside", typ: "vmdk", src: sparse, err: []string{sparse, "extent", secret, "allow_references"}},
		{name: "sparse vmdk deferring, allowed", typ: "vmdk", src: sparse, allow: []string{secret}, canary: true},
		{name: "backing file beside, a symlink out", typ: "qcow2", src: linked, err: []string{"base.raw is a symbolic link"}},
		{name: "backing file in an ova outside", typ: "ova", src: ova, err: []string{ova + ":disk1.qcow2", "backing file", secret, "allow_references"}},
		{name: "backing file in an ova allowed", typ: "ova", src: ova, allow: []string{secret}, canary: true},
		{name: "64 TiB virtual size", typ: "qcow2", src: big, err: []string{"64 TiB", "limits.max_virtual_size", "16 TiB"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(base, "out", strings.ReplaceAll(tc.name, " ", "-"))
			m := vmManifest("refs", tc.typ, tc.src)
			m.Pipeline.Load.AllowReferences = tc.allow
			m.Pipeline.Validate = &manifest.Validate{Enabled: no()}
			rep, err := engine.Run(context.Background(), m, engine.Options{JobID: "r1", OutputDir: out, WorkDir: filepath.Join(base, "work")})
			if len(tc.err) == 0 {
				if err != nil {
					t.Fatalf("%v", err)
				}
			} else {
				if err == nil || rep.Error == nil || rep.Error.Stage != "load" {
					t.Fatalf("error %v (report %+v), want LOAD failing", err, rep.Error)
				}
				for _, want := range tc.err {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not say %q", err, want)
					}
				}
				if strings.Contains(err.Error(), "/proc/") {
					t.Errorf("the error names the opened file, not the path: %v", err)
				}
			}
			entries, _ := os.ReadDir(out)
			if len(tc.err) > 0 && (len(entries) != 1 || !strings.HasSuffix(entries[0].Name(), ".report.json")) {
				t.Errorf("output directory holds %v, want only the report", entries)
			}
			leaked := false
			for _, e := range entries {
				p := filepath.Join(out, e.Name())
				st, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				if st.Mode().Perm() != 0o640 {
					t.Errorf("%s has mode %v, want 0640 whatever the umask", e.Name(), st.Mode().Perm())
				}
				data, _ := os.ReadFile(p)
				if strings.HasSuffix(p, ".qcow2") {
					raw := p + ".raw"
					run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", p, raw)
					data, _ = os.ReadFile(raw)
					os.Remove(raw)
				}
				leaked = leaked || bytes.Contains(data, []byte(canary))
			}
			if leaked != tc.canary {
				t.Errorf("an output holds the canary: %v, want %v", leaked, tc.canary)
			}
			if st, err := os.Stat(out); err == nil && st.Mode().Perm() != 0o750 {
				t.Errorf("output directory has mode %v, want 0750", st.Mode().Perm())
			}
		})
	}
}

// writeOVA writes an OVA holding an OVF that names one disk, member name,
// with the bytes of file.
func writeOVA(t *testing.T, ova, name, file string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	// qemu's raw driver reads a range of whole sectors.
	data = append(data, make([]byte, (512-len(data)%512)%512)...)
	ovf := fixture.OVFXML(fixture.VM{Name: "refs"}, []fixture.OVFDisk{{File: name, Size: int64(len(data)), Capacity: 1 << 20}})
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range []struct {
		name string
		data []byte
	}{{"refs.ovf", []byte(ovf)}, {name, data}} {
		if err := tw.WriteHeader(&tar.Header{Name: m.name, Mode: 0o644, Size: int64(len(m.data)), Format: tar.FormatUSTAR}); err != nil {
			t.Fatal(err)
		}
		tw.Write(m.data)
	}
	tw.Close()
	if err := os.WriteFile(ova, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRunSourceChangedMeanwhile: whoever may write a source could rewrite
// its header while qemu reads it (flip a qcow2's external data file bit)
// and make qemu open a file nobody checked; so a source written to during
// CONVERT discards the output, which nobody but root could read meanwhile.
func TestRunSourceChangedMeanwhile(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	base := t.TempDir()
	src := filepath.Join(base, "vm.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", src, "4M").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	out := filepath.Join(base, "out")
	touched := false
	var partMode os.FileMode
	m := vmManifest("changed", "qcow2", src)
	m.Pipeline.Validate = &manifest.Validate{Enabled: no()}
	rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: out, Progress: func(u progress.Update) {
		if u.Stage != "convert" || touched {
			return
		}
		if st, err := os.Stat(filepath.Join(out, "changed.qcow2.part")); err == nil {
			partMode = st.Mode().Perm()
		}
		touched = true
		f, err := os.OpenFile(src, os.O_WRONLY, 0)
		if err != nil {
			t.Error(err)
			return
		}
		f.WriteAt([]byte("QFI\xfb"), 0) // the same bytes: only the write matters
		f.Close()
	}})
	if err == nil || rep.Error == nil || rep.Error.Stage != "convert" || !strings.Contains(err.Error(), src+" was opened for writing while the job read it; the job was stopped and its outputs removed") {
		t.Fatalf("error %v (report %+v), want CONVERT failing because %s changed", err, rep.Error, src)
	}
	if entries, _ := os.ReadDir(out); len(entries) != 1 || !strings.HasSuffix(entries[0].Name(), ".report.json") {
		t.Errorf("output directory holds %v, want only the report", entries)
	}
	if partMode != 0 && partMode != 0o600 {
		t.Errorf("the partial output was mode %v while qemu-img wrote it, want 0600", partMode)
	}
}

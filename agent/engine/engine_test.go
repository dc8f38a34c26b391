package engine_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/engine"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/progress"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

func no() *bool { b := false; return &b }

func vmManifest(name, sourceType, src string) *manifest.Manifest {
	return &manifest.Manifest{Version: "1.0", Name: name, Pipeline: &manifest.Pipeline{
		Load:    manifest.Load{SourceType: sourceType, SourcePath: src},
		Inspect: &manifest.Inspect{Enabled: no()},
		Fix:     &manifest.Fix{Enabled: no()},
	}}
}

func TestRunRawToQcow2(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	raw := fixture.LinuxDisk(t, dir, fixture.Options{SizeMB: 16})
	out := filepath.Join(dir, "out")
	var updates []progress.Update
	rep, err := engine.Run(context.Background(), vmManifest("web01", "raw", raw), engine.Options{JobID: "j1", OutputDir: out,
		Progress: func(u progress.Update) { updates = append(updates, u) }})
	if err != nil {
		t.Fatalf("%v\n%+v", err, rep)
	}
	if rep.Status != "completed" || len(rep.Stages) != 5 {
		t.Fatalf("report %+v", rep)
	}
	want := map[string]string{"load": "ok", "inspect": "skipped", "fix": "skipped", "convert": "ok", "validate": "ok"}
	for _, s := range rep.Stages {
		if want[s.Name] != s.Status {
			t.Errorf("stage %s: %s (%s), want %s", s.Name, s.Status, s.Error, want[s.Name])
		}
	}
	last := -1
	for _, u := range updates {
		if u.Percent < last {
			t.Errorf("progress went back: %v", updates)
			break
		}
		last = u.Percent
	}
	if last != 100 {
		t.Errorf("progress ended at %d", last)
	}
	// The report on disk is the one returned.
	b, err := os.ReadFile(filepath.Join(out, "web01.report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var disk report.Report
	if err := json.Unmarshal(b, &disk); err != nil || disk.Status != "completed" || disk.ReportVersion != report.Version {
		t.Errorf("report.json: %v %+v", err, disk)
	}
	if !strings.Contains(string(b), `"started_at": "20`) {
		t.Errorf("times are not RFC 3339: %s", b)
	}
	if len(rep.Artifacts) != 2 || rep.Artifacts[0].Kind != "disk" || len(rep.Artifacts[0].SHA256) != 64 || rep.Artifacts[0].Path != filepath.Join(out, "web01.qcow2") {
		t.Errorf("artifacts %+v", rep.Artifacts)
	}
	entries, _ := os.ReadDir(out)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "web01.qcow2 web01.report.json web01.xml" {
		t.Errorf("output directory holds %v", names)
	}

	// A second run into the same directory refuses before touching anything.
	rep2, err := engine.Run(context.Background(), vmManifest("web01", "raw", raw), engine.Options{OutputDir: out})
	if err == nil || !strings.Contains(err.Error(), "exists; not overwriting") || rep2.Status != "failed" || rep2.Error.Stage != "load" {
		t.Errorf("second run: %v, %+v", err, rep2)
	}
	b2, _ := os.ReadFile(filepath.Join(out, "web01.report.json"))
	if string(b2) != string(b) {
		t.Error("second run replaced web01.report.json")
	}
}

func TestRunMismatchNamesBoth(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	raw := fixture.LinuxDisk(t, dir, fixture.Options{SizeMB: 16})
	vmdk := fixture.Convert(t, raw, "vmdk", "monolithicSparse")
	rep, err := engine.Run(context.Background(), vmManifest("x", "vhd", vmdk), engine.Options{OutputDir: filepath.Join(dir, "out")})
	if err == nil || !strings.Contains(err.Error(), `source_type is "vhd"`) || !strings.Contains(err.Error(), "vmdk image") {
		t.Fatalf("error = %v", err)
	}
	if rep.Error == nil || rep.Error.Stage != "load" || rep.Source.Detected != "vmdk" {
		t.Errorf("report %+v", rep)
	}
}

func TestDomainXML(t *testing.T) {
	b, err := engine.DomainXML(engine.DomainSpec{Name: "web<01>", MemoryMB: 4096, CPUs: 4, Firmware: "efi", NICs: 2,
		Disks: []engine.DomainDisk{{Path: "/out/a.qcow2", Format: "qcow2"}, {Path: "/out/b.qcow2", Format: "qcow2"}}})
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Name   string `xml:"name"`
		Memory string `xml:"memory"`
		VCPU   int    `xml:"vcpu"`
		OS     struct {
			Firmware string `xml:"firmware,attr"`
		} `xml:"os"`
		Disks []struct {
			Target struct {
				Dev string `xml:"dev,attr"`
				Bus string `xml:"bus,attr"`
			} `xml:"target"`
			Source struct {
				File string `xml:"file,attr"`
			} `xml:"source"`
		} `xml:"devices>disk"`
		NICs []struct {
			Model struct {
				Type string `xml:"type,attr"`
			} `xml:"model"`
		} `xml:"devices>interface"`
	}
	if err := xml.Unmarshal(b, &d); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if d.Name != "web<01>" || d.Memory != "4096" || d.VCPU != 4 || d.OS.Firmware != "efi" {
		t.Errorf("domain %+v", d)
	}
	if len(d.Disks) != 2 || d.Disks[1].Target.Dev != "vdb" || d.Disks[1].Target.Bus != "virtio" || d.Disks[0].Source.File != "/out/a.qcow2" {
		t.Errorf("disks %+v", d.Disks)
	}
	if len(d.NICs) != 2 || d.NICs[0].Model.Type != "virtio" {
		t.Errorf("nics %+v", d.NICs)
	}
	if _, err := engine.DomainXML(engine.DomainSpec{Name: "x", Disks: []engine.DomainDisk{{Path: "rel.qcow2"}}}); err == nil {
		t.Error("relative disk path accepted")
	}
	// virt-xml-validate checks it against libvirt's schema where installed.
	if v, err := exec.LookPath("virt-xml-validate"); err == nil {
		p := filepath.Join(t.TempDir(), "d.xml")
		os.WriteFile(p, b, 0o644)
		if out, err := exec.Command(v, p, "domain").CombinedOutput(); err != nil {
			t.Errorf("virt-xml-validate: %v\n%s", err, out)
		}
	}
}

func TestDomainXMLWindowsAvoidsVirtio(t *testing.T) {
	b, err := engine.DomainXML(engine.DomainSpec{Name: "win", Windows: true, Disks: []engine.DomainDisk{{Path: "/out/w.qcow2", Format: "qcow2"}}})
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if !strings.Contains(s, `dev="sda" bus="sata"`) || !strings.Contains(s, `<model type="e1000e">`) || strings.Contains(s, `bus="virtio"`) {
		t.Errorf("windows domain uses virtio or lacks sata/e1000e:\n%s", s)
	}
	if !strings.Contains(s, "<memory unit=\"MiB\">2048</memory>") || !strings.Contains(s, "<vcpu>2</vcpu>") {
		t.Errorf("defaults missing:\n%s", s)
	}
}

// TestRunChecksum: the outputs' sha256 is VALIDATE's; with it turned off,
// or VALIDATE off, the artifacts still name every output with its size.
func TestRunChecksum(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	raw := fixture.LinuxDisk(t, dir, fixture.Options{SizeMB: 16})
	for _, tc := range []struct {
		name     string
		validate *manifest.Validate
		hashed   bool
	}{
		{"default", nil, true},
		{"checksum-off", &manifest.Validate{Checksum: no()}, false},
		{"validate-off", &manifest.Validate{Enabled: no()}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := vmManifest("vm", "raw", raw)
			m.Pipeline.Validate = tc.validate
			out := filepath.Join(dir, tc.name)
			rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: out})
			if err != nil {
				t.Fatalf("%v\n%+v", err, rep)
			}
			if len(rep.Artifacts) != 2 {
				t.Fatalf("artifacts %+v, want the disk and domain.xml", rep.Artifacts)
			}
			for _, a := range rep.Artifacts {
				st, err := os.Stat(a.Path)
				if err != nil || st.Size() != a.Size {
					t.Errorf("artifact %s: size %d, file %v %v", a.Path, a.Size, st, err)
				}
				want := ""
				if tc.hashed {
					b, err := os.ReadFile(a.Path)
					if err != nil {
						t.Fatal(err)
					}
					sum := sha256.Sum256(b)
					want = hex.EncodeToString(sum[:])
				}
				if a.SHA256 != want {
					t.Errorf("artifact %s: sha256 %q, want %q", a.Path, a.SHA256, want)
				}
			}
		})
	}
}

// TestRunStoppedFromOutside: when systemd stops the job's unit it sends
// SIGTERM to every process in it, and qemu-img may die of it before the
// worker sees its own. That run is reported cancelled (an interruption the
// agent runs again), not failed. qemu-img here is a wrapper whose convert
// dies of SIGTERM; everything else is the real qemu-img.
func TestRunStoppedFromOutside(t *testing.T) {
	real, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	raw := fixture.LinuxDisk(t, dir, fixture.Options{SizeMB: 16})
	bin := filepath.Join(dir, "bin")
	os.MkdirAll(bin, 0o755)
	wrapper := "#!/bin/sh\n[ \"$1\" = convert ] && kill -TERM $$\nexec " + real + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "qemu-img"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	out := filepath.Join(dir, "out")
	rep, err := engine.Run(context.Background(), vmManifest("vm", "raw", raw), engine.Options{OutputDir: out})
	if err == nil {
		t.Fatal("the run succeeded though qemu-img convert was stopped")
	}
	if rep.Status != "cancelled" || rep.Error == nil || rep.Error.Stage != "convert" || !strings.Contains(rep.Error.Message, "stopped from outside") {
		t.Errorf("status %s, error %+v; want cancelled in convert, stopped from outside", rep.Status, rep.Error)
	}
	for _, name := range []string{"vm.qcow2", "vm.qcow2.part"} {
		if _, err := os.Stat(filepath.Join(out, name)); err == nil {
			t.Errorf("%s was left in the output directory", name)
		}
	}
}

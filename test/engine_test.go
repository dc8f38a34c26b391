package test

import (
	"context"
	"crypto/rand"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/engine"
	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/progress"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// These tests run the engine with FIX off on images made from scratch by
// test/fixture and check the results with qemu-img itself. They need
// qemu-img, sfdisk and mkfs.ext4 but not root. INSPECT runs too; its
// guest part belongs to agent/inspect, so a failed inspection is tolerated
// here (the engine reports it and converts anyway with FIX off), but when
// it succeeds, what it read from the output must be the unfixed guest.

func engNeedTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"qemu-img"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (packaging/deps.txt)", tool)
		}
	}
}

func engManifest(name, sourceType, src string) *manifest.Manifest {
	off := false
	m := &manifest.Manifest{Version: "1.0", Name: name, Pipeline: &manifest.Pipeline{
		Load: manifest.Load{SourceType: sourceType, SourcePath: src},
		Fix:  &manifest.Fix{Enabled: &off},
	}}
	m.SetDefaults()
	return m
}

func engStage(t *testing.T, rep *report.Report, name string) report.Stage {
	t.Helper()
	for _, s := range rep.Stages {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no stage %s in report: %+v", name, rep.Stages)
	return report.Stage{}
}

// engSame runs qemu-img compare: the output must hold exactly the guest's bytes.
func engSame(t *testing.T, a, aFormat, b, bFormat string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "compare", "-f", aFormat, "-F", bFormat, a, b).CombinedOutput()
	if err != nil {
		t.Errorf("qemu-img compare %s %s: %v\n%s", a, b, err, out)
	}
}

func engFormatOf(t *testing.T, p string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "--output=json", p).Output()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", p, err)
	}
	s := string(out)
	i := strings.Index(s, `"format": "`)
	if i < 0 {
		t.Fatalf("qemu-img info %s: no format in %s", p, s)
	}
	s = s[i+len(`"format": "`):]
	return s[:strings.IndexByte(s, '"')]
}

// engHashes returns the sha256 of every file under dir.
func engHashes(t *testing.T, dir string) map[string]string {
	t.Helper()
	h := map[string]string{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			h[p] = fixture.SHA256(t, p)
		}
		return nil
	})
	return h
}

func engList(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func engCheckArtifacts(t *testing.T, rep *report.Report) {
	t.Helper()
	for _, a := range rep.Artifacts {
		if got := fixture.SHA256(t, a.Path); got != a.SHA256 {
			t.Errorf("artifact %s: report sha256 %s, file %s", a.Path, a.SHA256, got)
		}
		if st, err := os.Stat(a.Path); err != nil || st.Size() != a.Size {
			t.Errorf("artifact %s: report size %d, file %v %v", a.Path, a.Size, st, err)
		}
	}
}

func TestEngineConvertsEveryFormat(t *testing.T) {
	engNeedTools(t)
	src := t.TempDir()
	raw := fixture.LinuxDisk(t, src, fixture.Options{SizeMB: 32})
	type input struct{ format, sub, path string }
	var inputs []input
	for _, f := range fixture.Formats {
		p := raw
		if f.Format != "raw" {
			p = fixture.Convert(t, raw, f.Format, f.Subformat)
		}
		inputs = append(inputs, input{f.Format, f.Subformat, p})
	}
	before := engHashes(t, src)
	outRoot := t.TempDir()
	for _, in := range inputs {
		t.Run(in.format+"-"+in.sub, func(t *testing.T) {
			out := filepath.Join(outRoot, in.format+in.sub)
			rep, err := engine.Run(context.Background(), engManifest("vm", fixture.SourceType(in.format), in.path), engine.Options{OutputDir: out})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if rep.Status != "completed" || rep.Source.Detected != in.format {
				t.Fatalf("status %s, detected %q", rep.Status, rep.Source.Detected)
			}
			if in.format == "vmdk" && rep.Source.Disks[0].Subformat != in.sub {
				t.Errorf("subformat %q, want %q", rep.Source.Disks[0].Subformat, in.sub)
			}
			for name, want := range map[string]string{"load": "ok", "fix": "skipped", "convert": "ok", "validate": "ok"} {
				if s := engStage(t, rep, name); s.Status != want {
					t.Errorf("stage %s: %s %s, want %s", name, s.Status, s.Error, want)
				}
			}
			if s := engStage(t, rep, "inspect"); s.Status == "ok" {
				if rep.Guest == nil || rep.Guest.OS == nil || rep.Guest.OS.ID != "debian" || len(rep.Guest.Fstab) == 0 || rep.Guest.Fstab[0].Device != "/dev/sda1" {
					t.Errorf("inspect ok but found %+v", rep.Guest)
				}
			} else {
				t.Logf("inspect tolerated: %s %s", s.Status, s.Error)
			}
			qcow := filepath.Join(out, "vm.qcow2")
			if got := engFormatOf(t, qcow); got != "qcow2" {
				t.Errorf("output format %s", got)
			}
			// The output holds exactly the original disk's bytes.
			engSame(t, raw, "raw", qcow, "qcow2")
			engCheckArtifacts(t, rep)
			if got := strings.Join(engList(t, out), " "); got != "vm.qcow2 vm.report.json vm.xml" {
				t.Errorf("output directory holds %s", got)
			}
		})
	}
	after := engHashes(t, src)
	for p, h := range before {
		if after[p] != h {
			t.Errorf("source file %s changed: sha256 %s -> %s", p, h, after[p])
		}
	}
}

func TestEngineOVATwoDisks(t *testing.T) {
	engNeedTools(t)
	src := t.TempDir()
	a := fixture.LinuxDisk(t, src, fixture.Options{Name: "a", SizeMB: 24})
	b := fixture.LinuxDisk(t, src, fixture.Options{Name: "b", SizeMB: 16, Table: "gpt"})
	ova := fixture.OVAWith(t, src, fixture.VM{Name: "two", CPUs: 4, MemoryMB: 3072, Firmware: "efi", NICs: 2}, a, b)
	sum := fixture.SHA256(t, ova)
	out := filepath.Join(t.TempDir(), "out")
	m := engManifest("two", "ova", ova)
	m.Pipeline.Load.SHA256 = sum
	rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: out})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res, _ := engStage(t, rep, "load").Result.(map[string]any); res["ova_manifest"] != "verified 3 files against two.mf" {
		t.Errorf("load result %v", engStage(t, rep, "load").Result)
	}
	if rep.Source.SHA256 != sum || rep.Source.OVF == nil || rep.Source.OVF.CPUs != 4 || len(rep.Source.Disks) != 2 {
		t.Errorf("source %+v ovf %+v", rep.Source, rep.Source.OVF)
	}
	engSame(t, a, "raw", filepath.Join(out, "two.qcow2"), "qcow2")
	engSame(t, b, "raw", filepath.Join(out, "two-disk2.qcow2"), "qcow2")
	engCheckArtifacts(t, rep)
	if got := strings.Join(engList(t, out), " "); got != "two-disk2.qcow2 two.qcow2 two.report.json two.xml" {
		t.Errorf("output directory holds %s (nothing may be extracted)", got)
	}
	if fixture.SHA256(t, ova) != sum {
		t.Error("the OVA changed")
	}
	data, err := os.ReadFile(filepath.Join(out, "two.xml"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Memory string `xml:"memory"`
		VCPU   int    `xml:"vcpu"`
		OS     struct {
			Loader string `xml:"loader"`
			NVRAM  struct {
				Template string `xml:"template,attr"`
			} `xml:"nvram"`
		} `xml:"os"`
		Disks []struct {
			Source struct {
				File string `xml:"file,attr"`
			} `xml:"source"`
			Target struct {
				Bus string `xml:"bus,attr"`
			} `xml:"target"`
		} `xml:"devices>disk"`
		NICs []struct{} `xml:"devices>interface"`
	}
	if err := xml.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	// UEFI: OVMF (packaging/deps.txt: ovmf) with a per-VM NVRAM made from
	// its vars template.
	if d.Memory != "3072" || d.VCPU != 4 || !strings.Contains(d.OS.Loader, "OVMF_CODE") || !strings.Contains(d.OS.NVRAM.Template, "OVMF_VARS") || len(d.Disks) != 2 || len(d.NICs) != 2 ||
		d.Disks[0].Source.File != filepath.Join(out, "two.qcow2") || d.Disks[1].Target.Bus != "virtio" {
		t.Errorf("two.xml does not match the OVF:\n%s", data)
	}
}

func TestEngineOVF(t *testing.T) {
	engNeedTools(t)
	src := t.TempDir()
	raw := fixture.LinuxDisk(t, t.TempDir(), fixture.Options{SizeMB: 16})
	ovf := fixture.OVF(t, src, fixture.VM{Name: "ovfvm"}, raw)
	out := filepath.Join(t.TempDir(), "out")
	rep, err := engine.Run(context.Background(), engManifest("ovfvm", "ovf", ovf), engine.Options{OutputDir: out})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if rep.Source.Detected != "ovf" || rep.Source.Disks[0].Subformat != "streamOptimized" {
		t.Errorf("source %+v", rep.Source)
	}
	engSame(t, raw, "raw", filepath.Join(out, "ovfvm.qcow2"), "qcow2")
}

func TestEngineSourceTypeMismatch(t *testing.T) {
	engNeedTools(t)
	src := t.TempDir()
	raw := fixture.LinuxDisk(t, src, fixture.Options{SizeMB: 16})
	for _, c := range []struct{ format, sub, declared, detectedWord string }{
		{"vmdk", "monolithicSparse", "vhdx", "vmdk image"},
		{"qcow2", "", "raw", "qcow2 image"},
		{"vpc", "dynamic", "vmdk", "VHD image"},
		{"raw", "", "qcow2", "raw image"},
	} {
		p := raw
		if c.format != "raw" {
			p = fixture.Convert(t, raw, c.format, c.sub)
		}
		out := filepath.Join(t.TempDir(), "out")
		_, err := engine.Run(context.Background(), engManifest("vm", c.declared, p), engine.Options{OutputDir: out})
		if err == nil || !strings.Contains(err.Error(), `source_type is "`+c.declared+`"`) || !strings.Contains(err.Error(), c.detectedWord) {
			t.Errorf("%s declared %s: error %v", c.format, c.declared, err)
		}
		if n := engList(t, out); len(n) > 1 || (len(n) == 1 && n[0] != "vm.report.json") {
			t.Errorf("%s declared %s: outputs %v", c.format, c.declared, n)
		}
	}
}

// Every format, damaged: the job fails in LOAD with an error that names the
// file and says what is wrong, and leaves no disk or partial file behind.
func TestEngineDamagedInputs(t *testing.T) {
	engNeedTools(t)
	base := t.TempDir()
	raw := fixture.LinuxDisk(t, base, fixture.Options{SizeMB: 32})
	rawSum := fixture.SHA256(t, raw)
	truncate := func(p string) {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, st.Size()/2); err != nil {
			t.Fatal(err)
		}
	}
	// fresh converts raw into a directory of its own so damage stays local.
	fresh := func(format, sub string) string {
		dir := t.TempDir()
		r := filepath.Join(dir, "disk.raw")
		if err := os.Link(raw, r); err != nil {
			t.Fatal(err)
		}
		if format == "raw" {
			c := filepath.Join(dir, "copy.raw")
			data, _ := os.ReadFile(raw)
			os.WriteFile(c, data, 0o644)
			return c
		}
		return fixture.Convert(t, r, format, sub)
	}
	cases := []struct {
		name, sourceType string
		make             func() string
		sha              string
		want             []string
	}{
		{"vmdk sparse truncated", "vmdk", func() string { p := fresh("vmdk", "monolithicSparse"); truncate(p); return p }, "", []string{"damaged or truncated", "points after EOF"}},
		{"vmdk stream truncated", "vmdk", func() string { p := fresh("vmdk", "streamOptimized"); truncate(p); return p }, "", []string{"damaged or truncated"}},
		{"vmdk flat extent truncated", "vmdk", func() string {
			p := fresh("vmdk", "monolithicFlat")
			truncate(strings.TrimSuffix(p, ".vmdk") + "-flat.vmdk")
			return p
		}, "", []string{"flat extent", "truncated"}},
		{"vmdk split extent missing", "vmdk", func() string {
			p := fresh("vmdk", "twoGbMaxExtentSparse")
			os.Remove(strings.TrimSuffix(p, ".vmdk") + "-s001.vmdk")
			return p
		}, "", []string{"-s001.vmdk", "missing"}},
		{"vmdk split extent truncated", "vmdk", func() string {
			p := fresh("vmdk", "twoGbMaxExtentSparse")
			truncate(strings.TrimSuffix(p, ".vmdk") + "-s001.vmdk")
			return p
		}, "", []string{"damaged or truncated"}},
		{"vmdk descriptor garbled", "vmdk", func() string {
			p := fresh("vmdk", "monolithicFlat")
			os.WriteFile(p, []byte("# Disk DescriptorFile\nversion=1\nRW lots FLAT \"x\" 0\n"), 0o644)
			return p
		}, "", []string{"bad sector count"}},
		{"vmdk extent outside its directory", "vmdk", func() string {
			p := fresh("vmdk", "monolithicFlat")
			os.WriteFile(p, []byte("# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"../../../etc/shadow\" 0\n"), 0o644)
			return p
		}, "", []string{"../../../etc/shadow", "is not in the source's directory"}},
		{"ovf href outside its directory", "ovf", func() string {
			d := t.TempDir()
			p := fixture.OVF(t, d, fixture.VM{}, raw)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.Replace(string(b), `ovf:href="fixture-vm-disk1.vmdk"`, `ovf:href="../../etc/shadow"`, 1)), 0o644)
			return p
		}, "", []string{"../../etc/shadow", "must not leave"}},
		{"vhd fixed truncated", "vhd", func() string { p := fresh("vpc", "fixed"); truncate(p); return p }, "", []string{`source_type is "vhd"`, "raw image"}},
		{"vhd dynamic truncated", "vhd", func() string { p := fresh("vpc", "dynamic"); truncate(p); return p }, "", []string{"truncated"}},
		{"vhdx truncated", "vhdx", func() string { p := fresh("vhdx", ""); truncate(p); return p }, "", []string{"truncated"}},
		{"qcow2 truncated", "qcow2", func() string { p := fresh("qcow2", ""); truncate(p); return p }, "", []string{"damaged or truncated"}},
		{"qcow2 header garbled", "qcow2", func() string {
			p := fresh("qcow2", "")
			f, _ := os.OpenFile(p, os.O_RDWR, 0)
			f.WriteAt([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 24) // size
			f.WriteAt([]byte{0xff, 0xff}, 20)                                     // cluster_bits
			f.Close()
			return p
		}, "", []string{"is damaged: cannot read its qcow2 header"}},
		{"raw corrupted (sha256)", "raw", func() string {
			p := fresh("raw", "")
			f, _ := os.OpenFile(p, os.O_RDWR, 0)
			f.WriteAt([]byte("X"), 5<<20)
			f.Close()
			return p
		}, rawSum, []string{"sha256 of", "load.sha256"}},
		{"ova truncated", "ova", func() string {
			p := fixture.OVA(t, t.TempDir(), raw)
			truncate(p)
			return p
		}, "", []string{"truncated"}},
		{"ova member corrupted", "ova", func() string {
			p := fixture.OVA(t, t.TempDir(), raw)
			arc, err := imgfmt.ReadOVA(p)
			if err != nil {
				t.Fatal(err)
			}
			m := arc.Members[len(arc.Members)-1]
			f, _ := os.OpenFile(p, os.O_RDWR, 0)
			var b [1]byte
			f.ReadAt(b[:], m.Offset+m.Size/2)
			f.WriteAt([]byte{b[0] ^ 0xff}, m.Offset+m.Size/2)
			f.Close()
			return p
		}, "", []string{"fixture-vm-disk1.vmdk is corrupted", "fixture-vm.mf"}},
		{"ovf disk missing", "ovf", func() string {
			d := t.TempDir()
			p := fixture.OVF(t, d, fixture.VM{}, raw)
			os.Remove(filepath.Join(d, "fixture-vm-disk1.vmdk"))
			return p
		}, "", []string{"fixture-vm-disk1.vmdk", "is missing"}},
		{"empty file", "vmdk", func() string {
			p := filepath.Join(t.TempDir(), "empty.vmdk")
			os.WriteFile(p, nil, 0o644)
			return p
		}, "", []string{"empty file"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := c.make()
			m := engManifest("vm", c.sourceType, src)
			m.Pipeline.Load.SHA256 = c.sha
			out := filepath.Join(t.TempDir(), "out")
			rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: out})
			if err == nil {
				t.Fatalf("damaged %s converted: %+v", c.name, rep.Stages)
			}
			msg := err.Error()
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
			if !strings.Contains(msg, src) {
				t.Errorf("error %q does not name the source %s", msg, src)
			}
			if rep.Status != "failed" || rep.Error == nil || rep.Error.Stage != "load" {
				t.Errorf("report status %s error %+v", rep.Status, rep.Error)
			}
			for _, n := range engList(t, out) {
				if n != "vm.report.json" {
					t.Errorf("left %s in the output directory", n)
				}
			}
		})
	}
}

// Cancelling during CONVERT ends the job "cancelled" with no partial file;
// an output that was complete before the cancel landed is whole.
func TestEngineCancel(t *testing.T) {
	engNeedTools(t)
	dir := t.TempDir()
	raw := filepath.Join(dir, "big.raw")
	data := make([]byte, 96<<20)
	rand.Read(data)
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rep, err := engine.Run(ctx, engManifest("big", "raw", raw), engine.Options{OutputDir: out,
		Progress: func(u progress.Update) {
			if u.Stage == "convert" && u.Total > 0 {
				cancel()
			}
		}})
	if err == nil || rep.Status != "cancelled" {
		t.Fatalf("err %v status %s", err, rep.Status)
	}
	for _, n := range engList(t, out) {
		switch {
		case strings.HasSuffix(n, ".part") || strings.HasPrefix(n, ".work-"):
			t.Errorf("left %s behind", n)
		case n == "big.qcow2":
			engSame(t, raw, "raw", filepath.Join(out, n), "qcow2")
		}
	}
}

// With FIX on, the fixes land in the output through an overlay while the
// source keeps every byte: fstab and grub.cfg in the output name the root
// by UUID, the source's still say /dev/sda1.
func TestEngineFixWorksOnAnOverlay(t *testing.T) {
	engNeedTools(t)
	if os.Geteuid() != 0 {
		t.Skip("the native guest backend mounts the guest: needs root")
	}
	src := t.TempDir()
	uuid := fixture.NewUUID(t)
	raw := fixture.LinuxDisk(t, src, fixture.Options{SizeMB: 32, UUID: uuid})
	vmdk := fixture.Convert(t, raw, "vmdk", "streamOptimized")
	before := engHashes(t, src)
	on, off := true, false
	m := &manifest.Manifest{Version: "1.0", Name: "fixed", Pipeline: &manifest.Pipeline{
		Load: manifest.Load{SourceType: "vmdk", SourcePath: vmdk},
		Fix: &manifest.Fix{Enabled: &on, Backend: "native",
			Initramfs: &manifest.InitramfsFix{Enabled: &on, Regenerate: &off}}, // the fixture has no real kernel
	}}
	m.SetDefaults()
	out := filepath.Join(t.TempDir(), "out")
	rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: out})
	if err != nil {
		t.Fatalf("Run: %v\nstages %+v", err, rep.Stages)
	}
	if s := engStage(t, rep, "fix"); s.Status != "ok" || len(rep.Changes) == 0 {
		t.Fatalf("fix stage %+v, %d changes", s, len(rep.Changes))
	}
	qcow := filepath.Join(out, "fixed.qcow2")
	fstab, _ := fixture.ReadFile(t, qcow, "qcow2", "/etc/fstab")
	if !strings.Contains(fstab, "UUID="+uuid) || strings.Contains(fstab, "/dev/sda1 ") {
		t.Errorf("output fstab:\n%s", fstab)
	}
	grub, _ := fixture.ReadFile(t, qcow, "qcow2", "/boot/grub/grub.cfg")
	if !strings.Contains(grub, "root=UUID="+uuid) {
		t.Errorf("output grub.cfg:\n%s", grub)
	}
	orig, _ := fixture.ReadFile(t, vmdk, "vmdk", "/etc/fstab")
	if !strings.HasPrefix(strings.SplitN(orig, "\n", 2)[1], "/dev/sda1 ") {
		t.Errorf("source fstab changed:\n%s", orig)
	}
	for p, h := range before {
		if got := fixture.SHA256(t, p); got != h {
			t.Errorf("source file %s changed", p)
		}
	}
	if got := strings.Join(engList(t, out), " "); got != "fixed.qcow2 fixed.report.json fixed.xml" {
		t.Errorf("output directory holds %s (the overlay must be gone)", got)
	}
}

// hyper2kvmd convert: exit 0 with the report path printed, 1 when a VM
// fails (still with its report), 2 for usage errors and invalid manifests;
// a batch gives one output directory per VM.
func TestConvertCommand(t *testing.T) {
	engNeedTools(t)
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	bin := filepath.Join(t.TempDir(), "hyper2kvmd")
	if out, err := exec.Command(goBin, "build", "-o", bin, "../cmd/hyper2kvmd").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	src := t.TempDir()
	raw := fixture.LinuxDisk(t, src, fixture.Options{SizeMB: 16})
	vmdk := fixture.Convert(t, raw, "vmdk", "streamOptimized")
	bad := filepath.Join(src, "bad.vmdk")
	data, _ := os.ReadFile(vmdk)
	os.WriteFile(bad, data[:len(data)/2], 0o644)
	write := func(name, text string) string {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	vm := func(name, path string) string {
		return `{"name": "` + name + `", "pipeline": {"load": {"source_type": "vmdk", "source_path": "` + path + `"}, "fix": {"enabled": false}}}`
	}
	single := write("one.json", `{"version": "1.0", `+vm("one", vmdk)[1:])
	batch := write("batch.json", `{"version": "1.0", "batch": true, "vms": [`+vm("b1", vmdk)+`, `+vm("b2", vmdk)+`]}`)
	failing := write("bad.json", `{"version": "1.0", `+vm("bad", bad)[1:])
	invalid := write("invalid.json", `{"version": "1.0", "name": "x", "pipeline": {"load": {"source_type": "floppy", "source_path": "/x"}}}`)
	zstd := write("z.json", `{"version": "1.0", "name": "z", "pipeline": {"load": {"source_type": "vmdk", "source_path": "`+vmdk+`"}, "fix": {"enabled": false}, "convert": {"output_format": "qcow2", "compress": true}}}`)
	out := t.TempDir()
	for _, c := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"single", []string{"-f", single, "-o", out}, 0, []string{"report: " + filepath.Join(out, "one", "one.report.json"), "one: completed", "convert   ok"}},
		{"zstd", []string{"-f", zstd, "-o", out}, 0, []string{"z: completed"}},
		{"batch", []string{"-f", batch, "-o", out}, 0, []string{"[1/2] b1", "[2/2] b2", filepath.Join(out, "b2", "b2.qcow2")}},
		{"batch, two VMs at once", []string{"-f", batch, "-o", filepath.Join(out, "par"), "-j", "2"}, 0,
			[]string{"[b1] convert", "[b2] convert", "b1: completed", "b2: completed", filepath.Join(out, "par", "b2", "b2.qcow2")}},
		{"-j 0", []string{"-f", batch, "-o", out, "-j", "0"}, 2, []string{"-j 0: must be at least 1"}},
		{"negative disk parallelism", []string{"-f", single, "-o", out, "--disk-parallelism", "-1"}, 2, []string{"--disk-parallelism -1"}},
		{"again: never overwrites", []string{"-f", single, "-o", out}, 1, []string{"exists; not overwriting"}},
		{"damaged source", []string{"-f", failing, "-o", out}, 1, []string{"bad: failed", "damaged or truncated", "report: " + filepath.Join(out, "bad", "bad.report.json")}},
		{"invalid manifest", []string{"-f", invalid, "-o", out}, 2, []string{"pipeline.load.source_type"}},
		{"no manifest", []string{"-o", out}, 2, []string{"-f MANIFEST is required"}},
		{"bad flag", []string{"--frobnicate"}, 2, []string{"frobnicate"}},
		{"bad backend", []string{"-f", single, "--backend", "vbox"}, 2, []string{"--backend"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(bin, append([]string{"convert"}, c.args...)...)
			got, _ := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != c.code {
				t.Errorf("exit %d, want %d\n%s", code, c.code, got)
			}
			for _, w := range c.want {
				if !strings.Contains(string(got), w) {
					t.Errorf("output lacks %q:\n%s", w, got)
				}
			}
		})
	}
	engSame(t, raw, "raw", filepath.Join(out, "one", "one.qcow2"), "qcow2")
	engSame(t, raw, "raw", filepath.Join(out, "par", "b1", "b1.qcow2"), "qcow2")
	// A compressed output: zstd, the same guest, its source read through
	// io_uring wherever qemu-img can use it here (PERFORMANCE.md 6b).
	engSame(t, raw, "raw", filepath.Join(out, "z", "z.qcow2"), "qcow2")
	info, _ := exec.Command("qemu-img", "info", "--output=json", filepath.Join(out, "z", "z.qcow2")).Output()
	if !strings.Contains(string(info), `"compression-type": "zstd"`) {
		t.Errorf("z.qcow2 is not zstd-compressed: %s", info)
	}
	rep, _ := os.ReadFile(filepath.Join(out, "z", "z.report.json"))
	probe := `json:{"driver":"raw","file":{"driver":"file","filename":"` + raw + `","aio":"io_uring"}}`
	uring := exec.Command("qemu-img", "info", probe).Run() == nil
	if got := strings.Contains(string(rep), `\"aio\":\"io_uring\"`); got != uring {
		t.Errorf("io_uring in the report's qemu-img arguments: %v, but qemu-img here can use it: %v", got, uring)
	}
}

// A full output file system fails the job with qemu-img's "No space left on
// device", removes the partial disk, and still writes the report.
func TestEngineOutputDiskFull(t *testing.T) {
	engNeedTools(t)
	if os.Geteuid() != 0 {
		t.Skip("mounts a small tmpfs as the output directory: needs root")
	}
	dir := t.TempDir()
	raw := filepath.Join(dir, "src.raw")
	data := make([]byte, 32<<20)
	rand.Read(data)
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	out := filepath.Join(mnt, "full")
	rep, err := engine.Run(context.Background(), engManifest("full", "raw", raw), engine.Options{OutputDir: out})
	// LOAD measures what the source allocates against statfs before
	// anything is written.
	want := "output filesystem " + mnt + " has 0.01 GiB free, the conversion needs about 0.03 GiB"
	if err == nil || !strings.Contains(err.Error(), want) || rep.Error == nil || rep.Error.Stage != "load" {
		t.Fatalf("err %v, report error %+v; want LOAD failing with %q", err, rep.Error, want)
	}
	if got := strings.Join(engList(t, out), " "); got != "full.report.json" {
		t.Errorf("output directory holds %s, want only full.report.json", got)
	}
}

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

func needQemuImg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed (packaging/deps.txt: qemu-utils)")
	}
}

func qemuImgCreate(t *testing.T, path, format, size string) string {
	t.Helper()
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", format, path, size).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create %s: %v: %s", path, err, out)
	}
	return path
}

func TestGenerateLooksAtTheImage(t *testing.T) {
	needQemuImg(t)
	src := t.TempDir()
	tests := []struct {
		name, file, format, wantType string
	}{
		{"vmdk", "web01.vmdk", "vmdk", "vmdk"},
		{"vhd named .img", "legacy.img", "vpc", "vhd"}, // content wins over the suffix
		{"vhdx", "db01.vhdx", "vhdx", "vhdx"},
		{"qcow2", "app.qcow2", "qcow2", "qcow2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := qemuImgCreate(t, filepath.Join(src, tt.file), tt.format, "16M")
			out := filepath.Join(t.TempDir(), "manifests")
			r := runCLI(t, nil, "manifest", "generate", img, out)
			if r.code != 0 {
				t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			name := strings.TrimSuffix(tt.file, filepath.Ext(tt.file))
			m := parseFile(t, filepath.Join(out, name+".yaml"))
			if m.Name != name || m.Pipeline.Load.SourceType != tt.wantType || m.Pipeline.Load.SourcePath != img {
				t.Errorf("got name %q load %+v", m.Name, m.Pipeline.Load)
			}
			if ps := manifest.CheckFiles(m); len(ps) > 0 {
				t.Errorf("generated manifest fails the file checks: %v", ps)
			}
		})
	}
}

func TestGenerateOVAWithTwoDisks(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	d1 := qemuImgCreate(t, filepath.Join(dir, "d1.raw"), "raw", "2M")
	d2 := qemuImgCreate(t, filepath.Join(dir, "d2.raw"), "raw", "1M")
	ova := fixture.OVAWith(t, dir, fixture.VM{Name: "Mail Server", CPUs: 4, MemoryMB: 2048}, d1, d2)
	out := t.TempDir()
	r := runCLI(t, nil, "manifest", "generate", "--format", "json", ova, out)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"Detected ova", "disk 1: vmdisk1", "disk 2: vmdisk2", "4 CPU(s)", "2048 MiB",
		"vmdisk1 -> Mail-Server.qcow2", "vmdisk2 -> Mail-Server-disk2.qcow2"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("description lacks %q:\n%s", want, r.stdout)
		}
	}
	file := filepath.Join(out, "Mail-Server.json")
	m := parseFile(t, file)
	if m.Name != "Mail-Server" || m.Pipeline.Load.SourceType != "ova" || m.Pipeline.Load.SourcePath != ova {
		t.Errorf("got name %q load %+v", m.Name, m.Pipeline.Load)
	}
	if ps := manifest.CheckFiles(m); len(ps) > 0 {
		t.Errorf("generated manifest fails the file checks: %v", ps)
	}

	// Never overwritten.
	before, _ := os.ReadFile(file)
	r = runCLI(t, nil, "manifest", "generate", "--format", "json", "--output-format", "raw", ova, out)
	if r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("second generate: exit %d: %s", r.code, r.stderr)
	}
	if after, _ := os.ReadFile(file); string(after) != string(before) {
		t.Errorf("existing manifest was changed")
	}
}

// TestGenerateFillsTarget: every network the OVA's NICs are on is mapped
// (as --map-network says, else libvirt's "default"), the MACs are shown,
// and --pool/--define/--autostart fill target.storage and target.libvirt.
func TestGenerateFillsTarget(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	d1 := qemuImgCreate(t, filepath.Join(dir, "d1.raw"), "raw", "1M")
	ova := fixture.OVAWith(t, dir, fixture.VM{Name: "web01", NICs: 3, Networks: []string{"VM Network", "Backup", "VM Network"},
		MACs: []string{"00:50:56:aa:bb:01", "00:50:56:aa:bb:02", "00:50:56:aa:bb:03"}}, d1)
	for _, c := range []struct {
		name string
		args []string
		code int
		want func(t *testing.T, tg *manifest.Target)
		out  []string
	}{
		{"defaults", nil, 0, func(t *testing.T, tg *manifest.Target) {
			want := []manifest.NetworkMap{{Source: "VM Network", Network: "default"}, {Source: "Backup", Network: "default"}}
			if !reflect.DeepEqual(tg.Networks, want) || tg.Storage != nil || tg.Libvirt != nil {
				t.Errorf("target %+v", tg)
			}
		}, []string{`nic 1: VmxNet3 on "VM Network" (00:50:56:aa:bb:01)`, `Network "Backup" -> network default`}},
		{"mapped, pool, defined", []string{"--map-network", "VM Network=bridge:br0", "--map-network", "Backup=network:isolated", "--pool", "images", "--autostart"}, 0,
			func(t *testing.T, tg *manifest.Target) {
				want := []manifest.NetworkMap{{Source: "VM Network", Bridge: "br0"}, {Source: "Backup", Network: "isolated"}}
				if !reflect.DeepEqual(tg.Networks, want) || tg.Storage == nil || tg.Storage.Pool != "images" || !tg.Libvirt.Defines() || !tg.Libvirt.Autostart || tg.Libvirt.Start {
					t.Errorf("target %+v storage %+v libvirt %+v", tg, tg.Storage, tg.Libvirt)
				}
			}, []string{`Network "VM Network" -> bridge br0`}},
		{"unknown source network", []string{"--map-network", "DMZ=bridge:br9"}, 2, nil, nil},
		{"bad mapping", []string{"--map-network", "VM Network=br0"}, 2, nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := t.TempDir()
			r := runCLI(t, nil, append(append([]string{"manifest", "generate"}, c.args...), ova, out)...)
			if r.code != c.code {
				t.Fatalf("exit %d, want %d\n%s%s", r.code, c.code, r.stdout, r.stderr)
			}
			if c.want == nil {
				return
			}
			for _, w := range c.out {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("output lacks %q:\n%s", w, r.stdout)
				}
			}
			m := parseFile(t, filepath.Join(out, "web01.yaml"))
			if m.Pipeline.Target == nil {
				t.Fatal("no target")
			}
			c.want(t, m.Pipeline.Target)
		})
	}
}

func TestGenerateRefusesWhatIsNotAnImage(t *testing.T) {
	dir := t.TempDir()
	r := runCLI(t, nil, "manifest", "generate", filepath.Join(dir, "missing.vmdk"), dir)
	if r.code != 2 || !strings.Contains(r.stderr, "cannot read image") {
		t.Errorf("missing image: exit %d: %s", r.code, r.stderr)
	}
	empty := writeFile(t, dir, "empty.vmdk", "")
	r = runCLI(t, nil, "manifest", "generate", empty, filepath.Join(dir, "out"))
	if r.code != 1 || !strings.Contains(r.stderr, "cannot generate") {
		t.Errorf("empty file: exit %d: %s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "empty.yaml")); err == nil {
		t.Errorf("a manifest was written for an empty file")
	}
}

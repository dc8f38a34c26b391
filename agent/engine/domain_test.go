package engine_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"libvirt.org/go/libvirtxml"

	"github.com/hyper2kvm/hyper2kvm/agent/engine"
)

// TestDomainXMLSameAsBefore parses, with libvirt's own schema types, the
// domain each spec gives and the one the hand-written structs gave
// (testdata/domain-*.xml, written by them before DomainXML used
// libvirtxml): every element and attribute must be the same.
func TestDomainXMLSameAsBefore(t *testing.T) {
	for name, spec := range map[string]engine.DomainSpec{
		"linux-efi": {Name: "web<01>", MemoryMB: 4096, CPUs: 4, Firmware: "efi", NICs: 2,
			Disks: []engine.DomainDisk{{Path: "/out/a.qcow2", Format: "qcow2"}, {Path: "/out/b & c.raw", Format: "raw"}}},
		"defaults": {Name: "x", Disks: []engine.DomainDisk{{Path: "/out/x.qcow2", Format: "qcow2"}}},
		"windows": {Name: "win", Windows: true, MemoryMB: 8192, CPUs: 2, NICs: 1,
			Disks: []engine.DomainDisk{{Path: "/out/w.qcow2", Format: "qcow2"}, {Path: "/out/w2.vdi", Format: "vdi"}}},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := engine.DomainXML(spec)
			if err != nil {
				t.Fatal(err)
			}
			before, err := os.ReadFile("testdata/domain-" + name + ".xml")
			if err != nil {
				t.Fatal(err)
			}
			var g, b libvirtxml.Domain
			if err := g.Unmarshal(string(got)); err != nil {
				t.Fatalf("DomainXML gave what libvirtxml cannot parse: %v\n%s", err, got)
			}
			if err := b.Unmarshal(string(before)); err != nil {
				t.Fatal(err)
			}
			if spec.Windows {
				// Added since (issue 22): the Hyper-V enlightenments and
				// timers Windows gets; the rest is as before.
				if g.Features.HyperV == nil || g.Features.HyperV.Spinlocks.Retries != 8191 || len(g.Clock.Timer) != 4 {
					t.Errorf("no Hyper-V enlightenments for Windows:\n%s", got)
				}
				g.Features.HyperV, g.Clock.Timer = nil, nil
			}
			if !reflect.DeepEqual(g, b) {
				t.Errorf("domain differs from before:\n%s\nwas:\n%s", got, before)
			}
		})
	}
}

// TestDomainXMLTargets: the hardware of the source kept, NICs mapped with
// their MACs, firmware, display, boot order and pool volumes, each as
// libvirt's schema types read it back; virt-xml-validate (libvirt-clients)
// accepts every one.
func TestDomainXMLTargets(t *testing.T) {
	disks := []engine.DomainDisk{{Path: "/out/web01.qcow2", Format: "qcow2"}, {Path: "/out/web01-disk2.qcow2", Format: "qcow2"}}
	ovmf := engine.OVMF{Code: "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", VarsTemplate: "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"}
	for _, c := range []struct {
		name  string
		spec  engine.DomainSpec
		check func(t *testing.T, d *libvirtxml.Domain)
	}{
		{"bios, mapped NICs with MACs, vnc", engine.DomainSpec{Name: "web01", UUID: "0b6c1a5e-9f43-4b1e-8d2a-3c4d5e6f7a8b", MemoryMB: 4096, CPUs: 4, Disks: disks, Graphics: "vnc",
			Description: "Converted by hyper2kvm from /srv/a&b.ova (job j1)", Job: "j1",
			Interfaces: []engine.DomainNIC{{MAC: "00:50:56:aa:bb:01", Bridge: "br0"}, {MAC: "00:50:56:aa:bb:02", Network: "isolated"}, {Network: "default"}}},
			func(t *testing.T, d *libvirtxml.Domain) {
				if d.UUID != "0b6c1a5e-9f43-4b1e-8d2a-3c4d5e6f7a8b" || d.Memory.Value != 4096 || d.VCPU.Value != 4 || d.OS.Type.Machine != "q35" || d.OS.Loader != nil || d.OS.Firmware != "" {
					t.Errorf("domain %+v os %+v", d, d.OS)
				}
				nics := d.Devices.Interfaces
				if len(nics) != 3 || nics[0].Source.Bridge == nil || nics[0].Source.Bridge.Bridge != "br0" || nics[0].MAC.Address != "00:50:56:aa:bb:01" ||
					nics[1].Source.Network == nil || nics[1].Source.Network.Network != "isolated" || nics[1].MAC.Address != "00:50:56:aa:bb:02" || nics[2].MAC != nil {
					t.Errorf("interfaces %+v", nics)
				}
				g := d.Devices.Graphics
				if len(g) != 1 || g[0].VNC == nil || len(g[0].VNC.Listeners) != 1 || g[0].VNC.Listeners[0].Address.Address != "127.0.0.1" || g[0].VNC.AutoPort != "yes" {
					t.Errorf("graphics %+v", g)
				}
				if len(d.Devices.Serials) != 1 || len(d.Devices.Channels) != 1 || d.Devices.Channels[0].Target.VirtIO.Name != "org.qemu.guest_agent.0" || len(d.Devices.RNGs) != 1 || d.Devices.RNGs[0].Model != "virtio" {
					t.Errorf("serial %+v channels %+v rng %+v", d.Devices.Serials, d.Devices.Channels, d.Devices.RNGs)
				}
				if x, _ := d.Marshal(); engine.DomainJob(x) != "j1" || d.Description != "Converted by hyper2kvm from /srv/a&b.ova (job j1)" {
					t.Errorf("job %q description %q", engine.DomainJob(x), d.Description)
				}
				if len(d.OS.BootDevices) != 1 || d.Devices.Disks[0].Boot != nil {
					t.Errorf("boot %+v, disk boot %+v", d.OS.BootDevices, d.Devices.Disks[0].Boot)
				}
			}},
		{"uefi secure boot with OVMF, spice", engine.DomainSpec{Name: "sb", Firmware: "efi", SecureBoot: true, OVMF: ovmf, Disks: disks[:1], Graphics: "spice"},
			func(t *testing.T, d *libvirtxml.Domain) {
				l := d.OS.Loader
				if l == nil || l.Path != ovmf.Code || l.Secure != "yes" || l.Readonly != "yes" || l.Type != "pflash" || d.OS.NVRam == nil || d.OS.NVRam.Template != ovmf.VarsTemplate {
					t.Errorf("loader %+v nvram %+v", l, d.OS.NVRam)
				}
				if d.Features.SMM == nil || d.Features.SMM.State != "on" {
					t.Errorf("no SMM for Secure Boot: %+v", d.Features)
				}
				if g := d.Devices.Graphics; len(g) != 1 || g[0].Spice == nil || g[0].Spice.Listeners[0].Address.Address != "127.0.0.1" {
					t.Errorf("graphics %+v", g)
				}
			}},
		{"uefi without Secure Boot", engine.DomainSpec{Name: "efi", Firmware: "efi", OVMF: engine.OVMF{Code: "/usr/share/OVMF/OVMF_CODE_4M.fd", VarsTemplate: "/usr/share/OVMF/OVMF_VARS_4M.fd"}, Disks: disks[:1]},
			func(t *testing.T, d *libvirtxml.Domain) {
				if l := d.OS.Loader; l == nil || l.Secure == "yes" || d.Features.SMM != nil || d.OS.NVRam.Template != "/usr/share/OVMF/OVMF_VARS_4M.fd" || len(d.Devices.Graphics) != 0 {
					t.Errorf("loader %+v features %+v graphics %+v", l, d.Features, d.Devices.Graphics)
				}
			}},
		{"uefi autoselection with Secure Boot", engine.DomainSpec{Name: "auto", Firmware: "efi", SecureBoot: true, Disks: disks[:1]},
			func(t *testing.T, d *libvirtxml.Domain) {
				if d.OS.Firmware != "efi" || d.OS.Loader != nil || d.OS.FirmwareInfo == nil || len(d.OS.FirmwareInfo.Features) != 2 || d.OS.FirmwareInfo.Features[0].Name != "secure-boot" {
					t.Errorf("os %+v", d.OS)
				}
			}},
		{"root on the second disk boots first", engine.DomainSpec{Name: "b2", Disks: disks, BootDisk: 1},
			func(t *testing.T, d *libvirtxml.Domain) {
				dd := d.Devices.Disks
				if len(d.OS.BootDevices) != 0 || dd[0].Boot == nil || dd[0].Boot.Order != 2 || dd[1].Boot == nil || dd[1].Boot.Order != 1 || dd[0].Target.Dev != "vda" {
					t.Errorf("os boot %+v disks %+v %+v", d.OS.BootDevices, dd[0].Boot, dd[1].Boot)
				}
			}},
		{"pool volumes", engine.DomainSpec{Name: "p", Disks: []engine.DomainDisk{{Format: "qcow2", Pool: "images", Volume: "p.qcow2"}}},
			func(t *testing.T, d *libvirtxml.Domain) {
				s := d.Devices.Disks[0].Source
				if s.Volume == nil || s.Volume.Pool != "images" || s.Volume.Volume != "p.qcow2" || s.File != nil {
					t.Errorf("source %+v", s)
				}
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := engine.DomainXML(c.spec)
			if err != nil {
				t.Fatal(err)
			}
			var d libvirtxml.Domain
			if err := d.Unmarshal(string(b)); err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			c.check(t, &d)
			if t.Failed() {
				t.Logf("%s", b)
			}
			virtXMLValidate(t, b)
		})
	}
}

func TestDomainJobOfOthers(t *testing.T) {
	for _, x := range []string{"<domain><name>x</name></domain>", "not xml", `<domain><metadata><other xmlns="urn:x" id="j1"/></metadata></domain>`} {
		if j := engine.DomainJob(x); j != "" {
			t.Errorf("DomainJob(%q) = %q, want none", x, j)
		}
	}
}

func TestDomainXMLRefuses(t *testing.T) {
	d := []engine.DomainDisk{{Path: "/out/x.qcow2", Format: "qcow2"}}
	for name, spec := range map[string]engine.DomainSpec{
		"boot disk out of range": {Name: "x", Disks: d, BootDisk: 1},
		"nic with no place":      {Name: "x", Disks: d, Interfaces: []engine.DomainNIC{{MAC: "00:50:56:00:00:01"}}},
		"unknown graphics":       {Name: "x", Disks: d, Graphics: "rdp"},
	} {
		if _, err := engine.DomainXML(spec); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// virtXMLValidate checks b against libvirt's own schema when
// virt-xml-validate (libvirt-clients, with xmllint) is installed.
func virtXMLValidate(t *testing.T, b []byte) {
	t.Helper()
	v, err := exec.LookPath("virt-xml-validate")
	if err != nil {
		t.Log("virt-xml-validate not installed (libvirt-clients): schema not checked")
		return
	}
	p := filepath.Join(t.TempDir(), "d.xml")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(v, p, "domain").CombinedOutput(); err != nil {
		t.Errorf("virt-xml-validate: %v\n%s\n%s", err, out, b)
	}
}

// TestDomainXMLWindowsBus: a Windows guest gets virtio disks and NICs only
// when it has the drivers, SATA and e1000e otherwise; Linux never gets
// Hyper-V enlightenments.
func TestDomainXMLWindowsBus(t *testing.T) {
	disks := []engine.DomainDisk{{Path: "/out/w.qcow2", Format: "qcow2"}}
	for _, tt := range []struct {
		spec          engine.DomainSpec
		bus, dev, nic string
		hyperv        bool
		clock         string
	}{
		{engine.DomainSpec{Name: "w", Windows: true, Disks: disks}, "sata", "sda", "e1000e", true, "localtime"},
		{engine.DomainSpec{Name: "w", Windows: true, VirtioDrivers: true, Disks: disks}, "virtio", "vda", "virtio", true, "localtime"},
		{engine.DomainSpec{Name: "l", Disks: disks}, "virtio", "vda", "virtio", false, "utc"},
	} {
		b, err := engine.DomainXML(tt.spec)
		if err != nil {
			t.Fatal(err)
		}
		var d libvirtxml.Domain
		if err := d.Unmarshal(string(b)); err != nil {
			t.Fatal(err)
		}
		if tg := d.Devices.Disks[0].Target; tg.Bus != tt.bus || tg.Dev != tt.dev || d.Devices.Interfaces[0].Model.Type != tt.nic ||
			(d.Features.HyperV != nil) != tt.hyperv || d.Clock.Offset != tt.clock {
			t.Errorf("%+v:\n%s", tt.spec, b)
		}
	}
}

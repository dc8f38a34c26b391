package engine_test

import (
	"os"
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

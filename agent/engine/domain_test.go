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
			if !reflect.DeepEqual(g, b) {
				t.Errorf("domain differs from before:\n%s\nwas:\n%s", got, before)
			}
		})
	}
}

package main

import (
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

func TestImportManifests(t *testing.T) {
	tmpl := &manifest.Pipeline{Convert: &manifest.Convert{OutputFormat: "raw"}}
	docs, err := importManifests("vc1", []string{"/DC0/vm/web01", "vm-42"}, true, false, tmpl)
	if err != nil || len(docs) != 2 {
		t.Fatalf("%d docs, %v", len(docs), err)
	}
	for i, want := range []manifest.Load{
		{SourceType: "vsphere", Source: "vc1", VM: "/DC0/vm/web01", Snapshot: true},
		{SourceType: "vsphere", Source: "vc1", VMMoref: "vm-42", Snapshot: true},
	} {
		m, err := manifest.Parse(docs[i])
		if err != nil {
			t.Fatalf("doc %d: %v\n%s", i, err, docs[i])
		}
		got := m.Pipeline.Load
		if got.Source != want.Source || got.VM != want.VM || got.VMMoref != want.VMMoref || !got.Snapshot || m.Pipeline.Convert.OutputFormat != "raw" {
			t.Errorf("doc %d: load %+v convert %+v", i, got, m.Pipeline.Convert)
		}
	}
	docs, err = importManifests("vc1", []string{"/DC0/vm/a", "/DC0/vm/b"}, false, true, nil)
	if err != nil || len(docs) != 1 {
		t.Fatalf("batch: %d docs, %v", len(docs), err)
	}
	m, err := manifest.Parse(docs[0])
	if err != nil || !m.Batch || len(m.VMs) != 2 || m.VMs[1].Name != "b" || m.VMs[1].Pipeline.Load.VM != "/DC0/vm/b" {
		t.Errorf("batch: %+v, %v", m, err)
	}
}

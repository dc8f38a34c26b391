package manifest_test

import (
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

func vsphereDoc() doc {
	return doc{"version": "1.0", "pipeline": doc{"load": doc{"source_type": "vsphere", "source": "vc1", "vm": "/DC0/vm/web/web01"}}}
}

func TestRemoteLoad(t *testing.T) {
	runRules(t, []ruleCase{
		{"by path", vsphereDoc, nil, nil},
		{"by moref with snapshot", vsphereDoc, []edit{{"pipeline.load.vm", nil}, {"pipeline.load.vm_moref", "vm-42"}, {"pipeline.load.snapshot", true}, {"name", "web01"}}, nil},
		{"by uuid", vsphereDoc, []edit{{"pipeline.load.vm", nil}, {"pipeline.load.vm_uuid", "42303f5c-3d2c-1c4e-9a4a-d3f39b3e0c11"}, {"name", "web01"}}, nil},
		{"no source", vsphereDoc, []edit{{"pipeline.load.source", nil}},
			[]string{"pipeline.load.source: is required with source_type \"vsphere\""}},
		{"bad source name", vsphereDoc, []edit{{"pipeline.load.source", "../vc1"}},
			[]string{`pipeline.load.source: "../vc1" is not a source name`}},
		{"no vm", vsphereDoc, []edit{{"pipeline.load.vm", nil}, {"name", "x"}},
			[]string{"pipeline.load.vm: is required with source_type \"vsphere\""}},
		{"two ways", vsphereDoc, []edit{{"pipeline.load.vm_moref", "vm-42"}},
			[]string{"pipeline.load.vm: give only one of vm, vm_moref and vm_uuid"}},
		{"relative vm path", vsphereDoc, []edit{{"pipeline.load.vm", "web01"}, {"name", "web01"}},
			[]string{`pipeline.load.vm: "web01" is not an inventory path`}},
		{"bad uuid", vsphereDoc, []edit{{"pipeline.load.vm", nil}, {"pipeline.load.vm_uuid", "nope"}, {"name", "x"}},
			[]string{`pipeline.load.vm_uuid: "nope" is not a UUID`}},
		{"source_path too", vsphereDoc, []edit{{"pipeline.load.source_path", "/a.vmdk"}},
			[]string{"pipeline.load.source_path: is not used with source_type \"vsphere\""}},
		{"remote fields on a file", singleDoc, []edit{{"pipeline.load.source", "vc1"}, {"pipeline.load.snapshot", true}},
			[]string{`pipeline.load.source: is only allowed with source_type "vsphere"`, `pipeline.load.snapshot: is only allowed with source_type "vsphere"`}},
	})
}

func TestRemoteDefaultName(t *testing.T) {
	m, err := manifest.Parse([]byte(`{"version":"1.0","pipeline":{"load":{"source_type":"vsphere","source":"vc1","vm":"/DC0/vm/web/web01"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "web01" {
		t.Errorf("name %q, want web01", m.Name)
	}
}

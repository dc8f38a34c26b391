package engine

import (
	"reflect"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// TestPlanTarget: every source NIC lands on the bridge or network the
// manifest or agent.yaml maps its network to, keeping its MAC; an
// unmapped network fails LOAD naming it; no mapping at all keeps the old
// behaviour (libvirt's "default").
func TestPlanTarget(t *testing.T) {
	ovf := &imgfmt.OVFDescriptor{NICs: []imgfmt.OVFNIC{
		{Network: "VM Network", MAC: "00:50:56:aa:bb:01"}, {Network: "Backup", MAC: "00:50:56:aa:bb:02"}, {Network: "DMZ"}}}
	br := func(src, b string) manifest.NetworkMap { return manifest.NetworkMap{Source: src, Bridge: b} }
	for _, c := range []struct {
		name     string
		ovf      *imgfmt.OVFDescriptor
		own, def *manifest.Target
		uid      int64
		forUsers bool
		want     []report.TargetNIC
		err      string
	}{
		{name: "no mapping: libvirt's default", ovf: ovf, want: []report.TargetNIC{
			{Source: "VM Network", MAC: "00:50:56:aa:bb:01", Network: "default"}, {Source: "Backup", MAC: "00:50:56:aa:bb:02", Network: "default"}, {Source: "DMZ", Network: "default"}}},
		{name: "mapped with a default", ovf: ovf,
			own:  &manifest.Target{Networks: []manifest.NetworkMap{br("VM Network", "br0"), {Source: "Backup", Network: "isolated"}}, DefaultNetwork: &manifest.NetworkDest{Bridge: "br9"}},
			want: []report.TargetNIC{{Source: "VM Network", MAC: "00:50:56:aa:bb:01", Bridge: "br0"}, {Source: "Backup", MAC: "00:50:56:aa:bb:02", Network: "isolated"}, {Source: "DMZ", Bridge: "br9"}}},
		{name: "agent.yaml maps what the manifest does not", ovf: ovf,
			own:  &manifest.Target{Networks: []manifest.NetworkMap{br("VM Network", "br0")}},
			def:  &manifest.Target{Networks: []manifest.NetworkMap{br("VM Network", "brX"), br("Backup", "br1"), br("DMZ", "br2")}},
			want: []report.TargetNIC{{Source: "VM Network", MAC: "00:50:56:aa:bb:01", Bridge: "br0"}, {Source: "Backup", MAC: "00:50:56:aa:bb:02", Bridge: "br1"}, {Source: "DMZ", Bridge: "br2"}}},
		{name: "unmapped named", ovf: ovf, own: &manifest.Target{Networks: []manifest.NetworkMap{br("VM Network", "br0")}},
			err: `source network "Backup" (NIC 2), "DMZ" (NIC 3) not mapped`},
		{name: "disk image: one NIC on the default", def: &manifest.Target{DefaultNetwork: &manifest.NetworkDest{Bridge: "br0"}},
			want: []report.TargetNIC{{Bridge: "br0"}}},
		{name: "disk image with mappings but no default", own: &manifest.Target{Networks: []manifest.NetworkMap{br("VM Network", "br0")}},
			err: `"(no network named by the source)" (NIC 1) not mapped`},
		{name: "a user's own libvirt refused", own: &manifest.Target{Libvirt: &manifest.Libvirt{}}, uid: 1000,
			err: "only root's manifests may define domains"},
		{name: "pool without libvirt anywhere", own: &manifest.Target{Storage: &manifest.Storage{Pool: "images"}},
			err: "pipeline.target.storage.pool: the disks go into a pool through libvirt"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := &runner{ovf: c.ovf, p: &manifest.Pipeline{Target: c.own}, vm: &manifest.Manifest{Name: "web01"},
				o: Options{Target: c.def, SourceUID: c.uid, LibvirtForUsers: c.forUsers}}
			err := r.planTarget()
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(r.tgt.nics, c.want) {
				t.Errorf("nics %+v\nwant %+v", r.tgt.nics, c.want)
			}
			if len(r.tgt.uuid) != 36 || r.tgt.uuid[14] != '4' {
				t.Errorf("uuid %q is not a version 4 UUID", r.tgt.uuid)
			}
		})
	}
}

package manifest_test

import (
	"reflect"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

func TestTargetRules(t *testing.T) {
	const tp = "pipeline.target"
	runRules(t, []ruleCase{
		{"full", singleDoc, []edit{{tp, doc{
			"networks":        []any{doc{"source": "VM Network", "bridge": "br0"}, doc{"source": "Backup", "network": "isolated"}},
			"default_network": doc{"network": "default"},
			"storage":         doc{"pool": "default"},
			"graphics":        "spice",
			"libvirt":         doc{"uri": "qemu+unix:///system?socket=/run/libvirt/libvirt-sock", "start": true, "autostart": true},
		}}}, nil},
		{"dir storage, no libvirt", singleDoc, []edit{{tp, doc{"storage": doc{"dir": "/srv/vms"}}}}, nil},
		{"both bridge and network", singleDoc, []edit{{tp + ".networks", []any{doc{"source": "A", "bridge": "br0", "network": "x"}}}},
			[]string{tp + ".networks[0]: not both"}},
		{"neither", singleDoc, []edit{{tp + ".networks", []any{doc{"source": "A"}}}},
			[]string{tp + ".networks[0]: needs bridge"}},
		{"no source", singleDoc, []edit{{tp + ".networks", []any{doc{"bridge": "br0"}}}},
			[]string{tp + ".networks[0].source: is required"}},
		{"source twice", singleDoc, []edit{{tp + ".networks", []any{doc{"source": "A", "bridge": "br0"}, doc{"source": "A", "bridge": "br1"}}}},
			[]string{tp + ".networks[1].source: already mapped by pipeline.target.networks[0]"}},
		{"bridge name too long", singleDoc, []edit{{tp + ".networks", []any{doc{"source": "A", "bridge": "a-very-long-bridge"}}}},
			[]string{tp + ".networks[0].bridge: not an interface name"}},
		{"network with slash", singleDoc, []edit{{tp + ".default_network", doc{"network": "../x"}}},
			[]string{tp + ".default_network.network: not a libvirt network name"}},
		// agent.yaml may give target.libvirt: the engine checks the merge.
		{"pool without libvirt", singleDoc, []edit{{tp + ".storage", doc{"pool": "default"}}}, nil},
		{"pool and dir", singleDoc, []edit{{tp + ".storage", doc{"pool": "default", "dir": "/srv"}}},
			[]string{tp + ".storage: not both"}},
		{"relative dir", singleDoc, []edit{{tp + ".storage", doc{"dir": "srv"}}},
			[]string{tp + ".storage.dir: not an absolute path"}},
		{"dir and output_dir differ", singleDoc, []edit{{tp + ".storage", doc{"dir": "/srv/a"}}, {"pipeline.convert", doc{"output_dir": "/srv/b"}}},
			[]string{tp + ".storage.dir: differs from convert.output_dir"}},
		{"graphics", singleDoc, []edit{{tp + ".graphics", "vcn"}},
			[]string{tp + ".graphics: allowed: vnc, spice, none"}},
		{"remote uri", singleDoc, []edit{{tp + ".libvirt", doc{"uri": "qemu+ssh://root@host/system"}}},
			[]string{tp + ".libvirt.uri: not a local libvirt QEMU URI"}},
		{"other driver", singleDoc, []edit{{tp + ".libvirt", doc{"uri": "xen:///system"}}},
			[]string{tp + ".libvirt.uri: not a local libvirt QEMU URI"}},
		{"uri parameter", singleDoc, []edit{{tp + ".libvirt", doc{"uri": "qemu:///system?no_verify=1"}}},
			[]string{tp + ".libvirt.uri: only the socket= parameter"}},
		{"start without define", singleDoc, []edit{{tp + ".libvirt", doc{"define": false, "start": true}}},
			[]string{tp + ".libvirt: start and autostart need define"}},
		{"unknown key", singleDoc, []edit{{tp + ".libvirt", doc{"url": "qemu:///system"}}},
			[]string{tp + ".libvirt.url: "}},
	})
}

func TestTargetWithDefaults(t *testing.T) {
	def := &manifest.Target{
		Networks:       []manifest.NetworkMap{{Source: "VM Network", Bridge: "br0"}, {Source: "Backup", Network: "backup"}},
		DefaultNetwork: &manifest.NetworkDest{Network: "default"},
		Storage:        &manifest.Storage{Pool: "images"},
		Graphics:       "spice",
		Libvirt:        &manifest.Libvirt{Start: true},
	}
	for _, c := range []struct {
		name string
		own  *manifest.Target
		src  string
		want manifest.NetworkDest
		ok   bool
		pool string
	}{
		{"no own target", nil, "VM Network", manifest.NetworkDest{Bridge: "br0"}, true, "images"},
		{"own mapping wins", &manifest.Target{Networks: []manifest.NetworkMap{{Source: "VM Network", Bridge: "br9"}}}, "VM Network", manifest.NetworkDest{Bridge: "br9"}, true, "images"},
		{"agent's other mapping kept", &manifest.Target{Networks: []manifest.NetworkMap{{Source: "VM Network", Bridge: "br9"}}}, "Backup", manifest.NetworkDest{Network: "backup"}, true, "images"},
		{"default", &manifest.Target{Storage: &manifest.Storage{Dir: "/srv"}}, "Other", manifest.NetworkDest{Network: "default"}, true, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := c.own.WithDefaults(def)
			d, ok := got.Lookup(c.src)
			if d != c.want || ok != c.ok || got.Storage.Pool != c.pool || got.Graphics != "spice" || !got.Libvirt.Start {
				t.Errorf("got %+v %v (target %+v)", d, ok, got)
			}
		})
	}
	// Neither side changed.
	if len(def.Networks) != 2 || def.Storage.Pool != "images" {
		t.Errorf("defaults changed: %+v", def)
	}
	if got := (*manifest.Target)(nil).WithDefaults(nil); got != nil {
		t.Errorf("nil with nil = %+v", got)
	}
	if _, ok := (&manifest.Target{Networks: []manifest.NetworkMap{{Source: "A", Bridge: "br0"}}}).Lookup("B"); ok {
		t.Error("an unmapped network without a default was found")
	}
	if !reflect.DeepEqual((&manifest.Target{}).WithDefaults(nil), &manifest.Target{}) {
		t.Error("empty target changed")
	}
}

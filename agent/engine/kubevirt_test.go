package engine_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/hyper2kvm/hyper2kvm/agent/engine"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

// TestKubeVirtYAML: one DataVolume per disk sized from its virtual size,
// and a VirtualMachine with the source's CPUs, memory, firmware, MACs and
// networks (Multus attachments named after the mapped bridge or network,
// the first NIC on the pod network when asked).
func TestKubeVirtYAML(t *testing.T) {
	spec := engine.DomainSpec{Name: "Web_01", UUID: "0b6c1a5e-9f43-4b1e-8d2a-3c4d5e6f7a8b", CPUs: 4, MemoryMB: 4096, Firmware: "efi", SecureBoot: true,
		Disks:      []engine.DomainDisk{{Path: "/o/Web_01.qcow2", Format: "qcow2"}, {Path: "/o/Web_01-disk2.qcow2", Format: "qcow2"}},
		BootDisk:   1,
		Interfaces: []engine.DomainNIC{{MAC: "00:50:56:aa:bb:01", Bridge: "br0"}, {MAC: "00:50:56:aa:bb:02", Network: "isolated"}}}
	for _, c := range []struct {
		name  string
		k     manifest.KubeVirt
		first string // the first NIC's network: "pod" or the Multus name
	}{
		{"multus", manifest.KubeVirt{Namespace: "vms", StorageClass: "fast"}, "br0"},
		{"pod network", manifest.KubeVirt{PodNetwork: true}, "pod"},
	} {
		t.Run(c.name, func(t *testing.T) {
			y, err := engine.KubeVirtYAML(spec, &c.k, []int64{10 << 30, 1<<20 + 1})
			if err != nil {
				t.Fatal(err)
			}
			var objs []map[string]any
			dec := yaml.NewDecoder(bytes.NewReader(y))
			for {
				var o map[string]any
				if err := dec.Decode(&o); errors.Is(err, io.EOF) {
					break
				} else if err != nil {
					t.Fatalf("%v\n%s", err, y)
				}
				objs = append(objs, o)
			}
			if len(objs) != 3 || objs[0]["kind"] != "DataVolume" || objs[2]["kind"] != "VirtualMachine" {
				t.Fatalf("objects %v", objs)
			}
			get := func(v any, path string) any {
				for _, k := range strings.Split(path, ".") {
					m, _ := v.(map[string]any)
					v = m[k]
				}
				return v
			}
			if get(objs[0], "metadata.name") != "web-01-disk1" || get(objs[0], "spec.storage.resources.requests.storage") != "10240Mi" || get(objs[1], "spec.storage.resources.requests.storage") != "2Mi" {
				t.Errorf("data volumes %v %v", objs[0], objs[1])
			}
			if c.k.StorageClass != "" && get(objs[0], "spec.storage.storageClassName") != "fast" || get(objs[2], "metadata.namespace") != nilIfEmpty(c.k.Namespace) {
				t.Errorf("storage class or namespace: %v", objs)
			}
			dom := get(objs[2], "spec.template.spec.domain")
			if get(dom, "cpu.cores") != 4 || get(dom, "memory.guest") != "4096Mi" || get(dom, "firmware.bootloader.efi.secureBoot") != true || get(dom, "firmware.uuid") != spec.UUID || get(dom, "features.smm.enabled") != true {
				t.Errorf("domain %v", dom)
			}
			disks, _ := get(dom, "devices.disks").([]any)
			if len(disks) != 2 || get(disks[1], "bootOrder") != 1 {
				t.Errorf("disks %v", disks)
			}
			ifaces, _ := get(dom, "devices.interfaces").([]any)
			nets, _ := get(objs[2], "spec.template.spec.networks").([]any)
			if len(ifaces) != 2 || get(ifaces[0], "macAddress") != "00:50:56:aa:bb:01" || get(ifaces[1], "macAddress") != "00:50:56:aa:bb:02" || len(nets) != 2 || get(nets[1], "multus.networkName") != "isolated" {
				t.Errorf("interfaces %v networks %v", ifaces, nets)
			}
			first := get(nets[0], "multus.networkName")
			if c.first == "pod" {
				first = "pod"
				if get(nets[0], "pod") == nil {
					first = nil
				}
			}
			if first != c.first {
				t.Errorf("first NIC on %v, want %s", nets[0], c.first)
			}
		})
	}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

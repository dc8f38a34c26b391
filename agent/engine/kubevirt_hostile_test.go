package engine_test

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/hyper2kvm/hyper2kvm/agent/engine"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// checkKubeVirtYAML parses y and fails unless it is exactly the disks'
// DataVolumes and one VirtualMachine, each a Kubernetes object with no
// key of a name's making, with DNS-1123 names and the VM's name intact in
// its annotation.
func checkKubeVirtYAML(t *testing.T, name string, disks int, y []byte) {
	t.Helper()
	var objs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(y))
	for {
		var o map[string]any
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("not YAML: %v\n%s", err, y)
		}
		objs = append(objs, o)
	}
	if len(objs) != disks+1 {
		t.Fatalf("%d objects for %d disks:\n%s", len(objs), disks, y)
	}
	for i, o := range objs {
		var keys []string
		for k := range o {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, []string{"apiVersion", "kind", "metadata", "spec"}) {
			t.Fatalf("object %d has keys %v:\n%s", i, keys, y)
		}
		want := "DataVolume"
		if i == disks {
			want = "VirtualMachine"
		}
		if o["kind"] != want {
			t.Fatalf("object %d is a %v, want %s", i, o["kind"], want)
		}
		meta, _ := o["metadata"].(map[string]any)
		n, _ := meta["name"].(string)
		if len(n) > 63 || !dnsLabel.MatchString(n) {
			t.Errorf("object %d is named %q: not a DNS-1123 label", i, n)
		}
		var ann map[string]any
		if a, ok := meta["annotations"].(map[string]any); ok {
			ann = a
		}
		if i == disks && ann["hyper2kvm.io/source-name"] != name {
			t.Errorf("the VM's name %q came back as %q", name, ann["hyper2kvm.io/source-name"])
		}
	}
}

func hostileSpec(name string) engine.DomainSpec {
	return engine.DomainSpec{Name: name, CPUs: 1, MemoryMB: 512, Firmware: "bios",
		Disks:      []engine.DomainDisk{{Path: "/o/" + name + ".qcow2", Format: "qcow2"}, {Path: "/o/" + name + "-disk2.qcow2", Format: "qcow2"}},
		Interfaces: []engine.DomainNIC{{MAC: "52:54:00:00:00:01", Bridge: "br0"}}}
}

// A VM's name comes from its OVF or VMX: guest-side text. Whatever it
// holds, NAME.kubevirt.yaml is the objects it should be, with valid names
// and the VM's name kept as it was, or the writer says why not.
func TestKubeVirtYAMLHostileNames(t *testing.T) {
	for _, c := range []struct {
		label, name, err string
	}{
		{"a line break ending the comment", "web\nkind: Secret\napiVersion: v1", ""},
		{"a new document", "web\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: x}", ""},
		{"a carriage return", "web\rkind: Secret", ""},
		{"YAML indicators", `&a *a !!str ? : - { } [ ] , # | > ' " % @ ` + "`", ""},
		{"a key-value look", "name: evil", ""},
		{"Unicode line and paragraph separators, NEL", "web\u2028kind: Secret\u2029x\u0085y", ""},
		{"NUL and escapes", "web\x00\x1b[31m", ""},
		{"only symbols", "___", ""},
		{"a cut that would end in a dash", strings.Repeat("a", 62) + "_b", ""},
		{"long", strings.Repeat("Web_01 ", 500), ""},
		{"too long", strings.Repeat("x", 5000), "the VM name is 5000 bytes long, at most 4096"},
	} {
		t.Run(c.label, func(t *testing.T) {
			spec := hostileSpec(c.name)
			y, err := engine.KubeVirtYAML(spec, &manifest.KubeVirt{Namespace: "vms"}, []int64{1 << 30, 2 << 30})
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkKubeVirtYAML(t, c.name, len(spec.Disks), y)
			// The header is comments only: every line before the first
			// object starts with "#".
			head, _, _ := strings.Cut(string(y), "apiVersion:")
			for _, l := range strings.Split(strings.TrimSuffix(head, "\n"), "\n") {
				if !strings.HasPrefix(l, "#") {
					t.Errorf("header line %q is not a comment:\n%s", l, y)
				}
			}
		})
	}
}

// FuzzKubeVirtName: any VM name gives the objects it should or an error.
func FuzzKubeVirtName(f *testing.F) {
	for _, s := range []string{"Web_01", "web\nkind: Secret", "\u2028", "\xff\xfe", "---", strings.Repeat("a", 70)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		spec := hostileSpec(name)
		y, err := engine.KubeVirtYAML(spec, &manifest.KubeVirt{}, []int64{1 << 30, 2 << 30})
		if err != nil {
			if len(name) <= 4096 {
				t.Fatalf("refused a name of %d bytes: %v", len(name), err)
			}
			return
		}
		checkKubeVirtYAML(t, name, len(spec.Disks), y)
	})
}

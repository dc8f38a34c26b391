package engine

// KubeVirt as a second target, artifacts only: NAME.kubevirt.yaml beside
// the disks holds a DataVolume per disk (to fill with `virtctl
// image-upload`) and a VirtualMachine using them, for `kubectl apply -f`.
// No cluster is contacted.

import (
	"bytes"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

// kvObject is a Kubernetes object as written (field order kept).
type kvObject struct {
	APIVersion string         `yaml:"apiVersion"`
	Kind       string         `yaml:"kind"`
	Metadata   kvMeta         `yaml:"metadata"`
	Spec       map[string]any `yaml:"spec"`
}

type kvMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations map[string]quoted `yaml:"annotations,omitempty"`
}

// dns1123 is what Kubernetes accepts as an object name.
var dns1123 = regexp.MustCompile(`[^a-z0-9-]+`)

// kubeName is name as a DNS-1123 label of at most max characters
// ("Web_01" -> "web-01"): lower case letters, digits and "-", starting
// and ending with a letter or digit.
func kubeName(name string, max int) string {
	n := strings.Trim(dns1123.ReplaceAllString(strings.ToLower(name), "-"), "-")
	if n == "" {
		n = "vm"
	}
	return strings.TrimRight(n[:min(len(n), max)], "-")
}

// sourceNameKey is the VirtualMachine's annotation holding the VM's name
// as it was (the object names are DNS-1123 labels made from it).
const sourceNameKey = "hyper2kvm.io/source-name"

// maxSourceName bounds the name kept in sourceNameKey (Kubernetes allows
// 256 KiB of annotations in all); a longer one is refused, not cut.
const maxSourceName = 4096

// comment is s fit for a "# ..." line: as it is when every character is
// printable, else quoted with its escapes, so a name holding a line break
// never ends the comment and starts YAML of its own.
func comment(s string) string {
	if utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return s
	}
	return strconv.Quote(s)
}

// KubeVirtYAML renders the VirtualMachine and its DataVolumes for spec;
// sizes are the disks' virtual sizes in bytes, in spec.Disks' order.
func KubeVirtYAML(spec DomainSpec, k *manifest.KubeVirt, sizes []int64) ([]byte, error) {
	if len(spec.Disks) == 0 || len(sizes) != len(spec.Disks) {
		return nil, fmt.Errorf("cannot write KubeVirt objects for %s: %d disks, %d sizes", spec.Name, len(spec.Disks), len(sizes))
	}
	if len(spec.Name) > maxSourceName {
		return nil, fmt.Errorf("cannot write KubeVirt objects: the VM name is %d bytes long, at most %d; give the VM a shorter name in the manifest", len(spec.Name), maxSourceName)
	}
	vm := kubeName(spec.Name, 63)
	// "-diskNN" must fit in the 63 characters of a DataVolume's name too.
	dvBase := kubeName(spec.Name, 63-len(fmt.Sprintf("-disk%d", len(spec.Disks))))
	labels := map[string]string{"app.kubernetes.io/managed-by": "hyper2kvm", "hyper2kvm.io/vm": vm}
	var objs []kvObject
	var disks, volumes []map[string]any
	bus := "virtio"
	if spec.Windows {
		bus = "sata"
	}
	for i := range spec.Disks {
		dv := fmt.Sprintf("%s-disk%d", dvBase, i+1)
		storage := map[string]any{"resources": map[string]any{"requests": map[string]any{"storage": kubeSize(sizes[i])}}}
		if k.StorageClass != "" {
			storage["storageClassName"] = k.StorageClass
		}
		objs = append(objs, kvObject{APIVersion: "cdi.kubevirt.io/v1beta1", Kind: "DataVolume",
			Metadata: kvMeta{Name: dv, Namespace: k.Namespace, Labels: labels},
			Spec:     map[string]any{"source": map[string]any{"upload": map[string]any{}}, "storage": storage}})
		disk := map[string]any{"name": dv, "disk": map[string]any{"bus": bus}}
		if i == spec.BootDisk {
			disk["bootOrder"] = 1
		}
		disks = append(disks, disk)
		volumes = append(volumes, map[string]any{"name": dv, "dataVolume": map[string]any{"name": dv}})
	}
	var ifaces, nets []map[string]any
	for i, n := range spec.Interfaces {
		name := fmt.Sprintf("nic%d", i+1)
		iface := map[string]any{"name": name, "model": "virtio"}
		if spec.Windows {
			iface["model"] = "e1000e"
		}
		if n.MAC != "" {
			iface["macAddress"] = n.MAC
		}
		// The first NIC on the pod network; the others, and a first NIC
		// the target maps, through Multus on a network attachment named
		// after the bridge or network.
		if i == 0 && k.PodNetwork {
			iface["masquerade"] = map[string]any{}
			nets = append(nets, map[string]any{"name": name, "pod": map[string]any{}})
		} else {
			iface["bridge"] = map[string]any{}
			att := n.Network
			if n.Bridge != "" {
				att = n.Bridge
			}
			nets = append(nets, map[string]any{"name": name, "multus": map[string]any{"networkName": att}})
		}
		ifaces = append(ifaces, iface)
	}
	firmware := map[string]any{}
	if spec.Firmware == "efi" {
		firmware["bootloader"] = map[string]any{"efi": map[string]any{"secureBoot": spec.SecureBoot, "persistent": true}}
	} else {
		firmware["bootloader"] = map[string]any{"bios": map[string]any{}}
	}
	memory, cpus := int64(2048), 2
	if spec.MemoryMB > 0 {
		memory = spec.MemoryMB
	}
	if spec.CPUs > 0 {
		cpus = spec.CPUs
	}
	domain := map[string]any{
		"cpu":      map[string]any{"cores": cpus},
		"memory":   map[string]any{"guest": fmt.Sprintf("%dMi", memory)},
		"firmware": firmware,
		"machine":  map[string]any{"type": "q35"},
		"devices":  map[string]any{"disks": disks, "interfaces": ifaces, "rng": map[string]any{}, "autoattachSerialConsole": true},
	}
	if spec.SecureBoot {
		domain["features"] = map[string]any{"smm": map[string]any{"enabled": true}}
	}
	if spec.UUID != "" {
		firmware["uuid"] = spec.UUID
	}
	objs = append(objs, kvObject{APIVersion: "kubevirt.io/v1", Kind: "VirtualMachine",
		Metadata: kvMeta{Name: vm, Namespace: k.Namespace, Labels: labels, Annotations: map[string]quoted{sourceNameKey: quoted(spec.Name)}},
		Spec: map[string]any{"runStrategy": "Halted", "template": map[string]any{
			"metadata": map[string]any{"labels": labels},
			"spec":     map[string]any{"domain": domain, "networks": nets, "volumes": volumes},
		}}})
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# KubeVirt objects for %s, written by hyper2kvm; nothing was sent to a cluster.\n", comment(spec.Name))
	fmt.Fprintf(&buf, "#   kubectl apply -f %s\n", comment(manifest.KubeVirtFile(spec.Name)))
	for i, d := range spec.Disks {
		fmt.Fprintf(&buf, "#   virtctl image-upload dv %s-disk%d --no-create --image-path=%s\n", dvBase, i+1, comment(filepath.Base(d.Path)))
	}
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	for _, o := range objs {
		if err := enc.Encode(o); err != nil {
			return nil, fmt.Errorf("cannot write KubeVirt objects for %s: %w", spec.Name, err)
		}
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("cannot write KubeVirt objects for %s: %w", spec.Name, err)
	}
	return buf.Bytes(), nil
}

// kubeSize is a PVC request for n bytes: the virtual size in Mi, rounded
// up, with room for the qcow2 being unpacked (CDI converts to raw).
func kubeSize(n int64) string {
	return fmt.Sprintf("%dMi", (n+(1<<20)-1)>>20)
}

// quoted is a string always written double-quoted: the YAML encoder
// writes some strings (leading tabs before a line break) as block
// scalars that no YAML parser reads back (FuzzKubeVirtName found it).
type quoted string

func (q quoted) MarshalYAML() (any, error) {
	return &yaml.Node{Kind: yaml.ScalarNode, Style: yaml.DoubleQuotedStyle, Value: string(q)}, nil
}

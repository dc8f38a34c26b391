package manifest

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"unicode"
)

// Target is where the converted VM goes beyond its files
// (pipeline.target): which libvirt network or bridge each source network
// becomes, where the disks are stored, and whether the domain is defined
// in libvirt. agent.yaml's target section gives the defaults
// (WithDefaults). The YAML tags are for agent.yaml.
type Target struct {
	// Networks maps source networks (an OVF NIC's rasd:Connection, "VM
	// Network") to a bridge or a libvirt network.
	Networks []NetworkMap `json:"networks,omitempty" yaml:"networks"`
	// DefaultNetwork takes every NIC whose network Networks does not name.
	// Without it such a NIC fails LOAD, naming the network, once any
	// mapping is set; with no mapping anywhere every NIC goes to libvirt's
	// network "default", as before mappings existed.
	DefaultNetwork *NetworkDest `json:"default_network,omitempty" yaml:"default_network"`
	Storage        *Storage     `json:"storage,omitempty" yaml:"storage"`
	// Graphics is the domain's display: vnc (default) or spice, listening
	// on localhost only, or none.
	Graphics string   `json:"graphics,omitempty" yaml:"graphics"`
	Libvirt  *Libvirt `json:"libvirt,omitempty" yaml:"libvirt"`
	// KubeVirt writes NAME.kubevirt.yaml beside the disks: a
	// VirtualMachine and a DataVolume per disk for kubectl apply. No
	// cluster is contacted.
	KubeVirt *KubeVirt `json:"kubevirt,omitempty" yaml:"kubevirt"`
}

// KubeVirt says how the KubeVirt objects are written.
type KubeVirt struct {
	Namespace    string `json:"namespace,omitempty" yaml:"namespace"`         // default: none (kubectl's current)
	StorageClass string `json:"storage_class,omitempty" yaml:"storage_class"` // default: the cluster's
	// PodNetwork puts the first NIC on the pod network (masquerade)
	// rather than on a Multus attachment named after its bridge or
	// network.
	PodNetwork bool `json:"pod_network,omitempty" yaml:"pod_network"`
}

// NetworkMap is one source network and where its NICs go: exactly one of
// Bridge (a host bridge, <interface type='bridge'>) or Network (a libvirt
// network, <interface type='network'>).
type NetworkMap struct {
	Source  string `json:"source" yaml:"source"`
	Bridge  string `json:"bridge,omitempty" yaml:"bridge"`
	Network string `json:"network,omitempty" yaml:"network"`
}

// NetworkDest is a NetworkMap without its source.
type NetworkDest struct {
	Bridge  string `json:"bridge,omitempty" yaml:"bridge"`
	Network string `json:"network,omitempty" yaml:"network"`
}

// Storage is where the disks go: exactly one of Pool (a libvirt storage
// pool, the disks uploaded into it as volumes; needs Libvirt, here or in
// agent.yaml, which the engine checks once both are merged) or Dir (a
// directory the disks are written into, as convert.output_dir).
type Storage struct {
	Pool string `json:"pool,omitempty" yaml:"pool"`
	Dir  string `json:"dir,omitempty" yaml:"dir"`
}

// Libvirt says whether and how the domain is defined in libvirt, through
// libvirt's own protocol on its local socket.
type Libvirt struct {
	URI       string `json:"uri,omitempty" yaml:"uri"`       // default qemu:///system
	Define    *bool  `json:"define,omitempty" yaml:"define"` // default true
	Start     bool   `json:"start,omitempty" yaml:"start"`
	Autostart bool   `json:"autostart,omitempty" yaml:"autostart"`
}

// DefaultLibvirtURI is target.libvirt.uri when none is given.
const DefaultLibvirtURI = "qemu:///system"

// GraphicsTypes are the allowed target.graphics values.
func GraphicsTypes() []string { return []string{"vnc", "spice", "none"} }

// Dest is where m's NICs go.
func (m NetworkMap) Dest() NetworkDest { return NetworkDest{Bridge: m.Bridge, Network: m.Network} }

// String reads "bridge br0" or "network default".
func (d NetworkDest) String() string {
	if d.Bridge != "" {
		return "bridge " + d.Bridge
	}
	return "network " + d.Network
}

// URIOrDefault is the URI to connect to.
func (l *Libvirt) URIOrDefault() string {
	if l == nil || l.URI == "" {
		return DefaultLibvirtURI
	}
	return l.URI
}

// Defines says whether the domain is to be defined.
func (l *Libvirt) Defines() bool { return l != nil && (l.Define == nil || *l.Define) }

// Mapped says whether t maps any network (a mapping or a default).
func (t *Target) Mapped() bool { return t != nil && (len(t.Networks) > 0 || t.DefaultNetwork != nil) }

// Lookup is where the NICs on source network src go, and false when t
// neither maps it nor has a default.
func (t *Target) Lookup(src string) (NetworkDest, bool) {
	if t == nil {
		return NetworkDest{}, false
	}
	for _, m := range t.Networks {
		if m.Source == src {
			return m.Dest(), true
		}
	}
	if t.DefaultNetwork != nil {
		return *t.DefaultNetwork, true
	}
	return NetworkDest{}, false
}

// WithDefaults is t with what it leaves out taken from def (agent.yaml's
// target): network mappings for sources t does not map, and each of
// default_network, storage, graphics and libvirt when t has none. Neither
// t nor def is changed; either may be nil.
func (t *Target) WithDefaults(def *Target) *Target {
	if t == nil && def == nil {
		return nil
	}
	out := &Target{}
	if t != nil {
		*out = *t
		out.Networks = append([]NetworkMap(nil), t.Networks...)
	}
	if def == nil {
		return out
	}
	mine := map[string]bool{}
	for _, m := range out.Networks {
		mine[m.Source] = true
	}
	for _, m := range def.Networks {
		if !mine[m.Source] {
			out.Networks = append(out.Networks, m)
		}
	}
	if out.DefaultNetwork == nil && def.DefaultNetwork != nil {
		d := *def.DefaultNetwork
		out.DefaultNetwork = &d
	}
	if out.Storage == nil && def.Storage != nil {
		s := *def.Storage
		out.Storage = &s
	}
	if out.Graphics == "" {
		out.Graphics = def.Graphics
	}
	if out.Libvirt == nil && def.Libvirt != nil {
		l := *def.Libvirt
		out.Libvirt = &l
	}
	if out.KubeVirt == nil && def.KubeVirt != nil {
		k := *def.KubeVirt
		out.KubeVirt = &k
	}
	return out
}

var (
	// A libvirt network or storage pool name: libvirt refuses '/' and
	// leading dots; we keep to what a file name and a shell take plainly.
	libvirtNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}$`)
	// A Linux interface name: at most 15 bytes, no '/', no white space.
	bridgeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$`)
	// Kubernetes names: a DNS-1123 label, a DNS-1123 subdomain.
	dnsLabelRE     = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	dnsSubdomainRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$`)
)

// maxSourceNetwork bounds a source network's name (vSphere's are at most
// 80 characters; port groups a little more).
const maxSourceNetwork = 256

// ValidateTarget checks a target section (a manifest's pipeline.target or
// agent.yaml's target) with path as the prefix of every problem.
func ValidateTarget(path string, t *Target) Problems {
	v := validator{}
	v.target(path, t)
	return v.ps
}

func (v *validator) target(path string, t *Target) {
	if t == nil {
		return
	}
	seen := map[string]int{}
	for i, m := range t.Networks {
		p := fmt.Sprintf("%s.networks[%d]", path, i)
		switch {
		case m.Source == "":
			v.add(p+".source", `is required: the source network's name as the OVF gives it, e.g. "VM Network"`)
		case len(m.Source) > maxSourceNetwork:
			v.add(p+".source", fmt.Sprintf("is longer than %d bytes", maxSourceNetwork))
		case strings.IndexFunc(m.Source, unicode.IsControl) >= 0:
			v.add(p+".source", "must not contain control characters")
		default:
			if j, dup := seen[m.Source]; dup {
				v.add(p+".source", fmt.Sprintf("%q is already mapped by %s.networks[%d]", truncate(m.Source, 80), path, j))
			}
			seen[m.Source] = i
		}
		v.netDest(p, m.Dest())
	}
	if t.DefaultNetwork != nil {
		v.netDest(path+".default_network", *t.DefaultNetwork)
	}
	if s := t.Storage; s != nil {
		sp := path + ".storage"
		switch {
		case s.Pool != "" && s.Dir != "":
			v.add(sp, "give either pool (a libvirt storage pool) or dir (a directory), not both")
		case s.Pool == "" && s.Dir == "":
			v.add(sp, "needs pool (a libvirt storage pool) or dir (a directory)")
		case s.Pool != "":
			if !libvirtNameRE.MatchString(s.Pool) {
				v.add(sp+".pool", fmt.Sprintf("%q is not a storage pool name (letters, digits, '.', '_', ':', '+', '-'; up to 64)", truncate(s.Pool, 80)))
			}
		default:
			v.absPath(sp+".dir", s.Dir)
		}
	}
	if t.Graphics != "" {
		v.enum(path+".graphics", t.Graphics, GraphicsTypes())
	}
	if k := t.KubeVirt; k != nil {
		if k.Namespace != "" && !dnsLabelRE.MatchString(k.Namespace) {
			v.add(path+".kubevirt.namespace", fmt.Sprintf("%q is not a Kubernetes namespace (lower-case letters, digits, '-'; up to 63)", truncate(k.Namespace, 80)))
		}
		if k.StorageClass != "" && !dnsSubdomainRE.MatchString(k.StorageClass) {
			v.add(path+".kubevirt.storage_class", fmt.Sprintf("%q is not a storage class name (lower-case letters, digits, '-', '.')", truncate(k.StorageClass, 80)))
		}
	}
	if l := t.Libvirt; l != nil {
		lp := path + ".libvirt"
		if l.URI != "" {
			if err := CheckLibvirtURI(l.URI); err != nil {
				v.add(lp+".uri", err.Error())
			}
		}
		if !l.Defines() && (l.Start || l.Autostart) {
			v.add(lp, "start and autostart need define: true")
		}
	}
}

func (v *validator) netDest(path string, d NetworkDest) {
	switch {
	case d.Bridge != "" && d.Network != "":
		v.add(path, "give either bridge (a host bridge, e.g. br0) or network (a libvirt network, e.g. default), not both")
	case d.Bridge == "" && d.Network == "":
		v.add(path, "needs bridge (a host bridge, e.g. br0) or network (a libvirt network, e.g. default)")
	case d.Bridge != "" && !bridgeRE.MatchString(d.Bridge):
		v.add(path+".bridge", fmt.Sprintf("%q is not an interface name (up to 15 letters, digits, '.', '_', '-')", truncate(d.Bridge, 80)))
	case d.Network != "" && !libvirtNameRE.MatchString(d.Network):
		v.add(path+".network", fmt.Sprintf("%q is not a libvirt network name (letters, digits, '.', '_', ':', '+', '-'; up to 64)", truncate(d.Network, 80)))
	}
}

// CheckLibvirtURI accepts the local QEMU driver's URIs only: qemu:///system,
// qemu:///session, and the same with +unix and a socket= parameter. The
// agent runs as root; a manifest must not make it dial elsewhere.
func CheckLibvirtURI(s string) error {
	u, err := url.Parse(s)
	const want = "qemu:///system, qemu:///session or qemu+unix:///system?socket=PATH"
	if err != nil || (u.Scheme != "qemu" && u.Scheme != "qemu+unix") || u.Host != "" || u.User != nil || u.Opaque != "" {
		return fmt.Errorf("%q is not a local libvirt QEMU URI; use %s", truncate(s, 200), want)
	}
	if u.Path != "/system" && u.Path != "/session" {
		return fmt.Errorf("%q: the path must be /system or /session; use %s", truncate(s, 200), want)
	}
	for k, vals := range u.Query() {
		if k != "socket" || len(vals) != 1 {
			return fmt.Errorf("%q: only the socket= parameter is allowed; use %s", truncate(s, 200), want)
		}
		if p := vals[0]; !strings.HasPrefix(p, "/") || strings.Contains(p, "/../") {
			return fmt.Errorf("%q: socket= must be an absolute path", truncate(s, 200))
		}
	}
	return nil
}

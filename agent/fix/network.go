package fix

import (
	"context"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// vmwareName matches interface names a VMware guest gets and a KVM guest
// does not: ens160/ens192/ens224/ens256 (+1 for the second function) from
// vmxnet3/e1000 PCI slots, ens33-ens40 from Workstation, eno167xxxxx from
// VMware's firmware index, and vmnicN.
var vmwareName = regexp.MustCompile(`\b(ens(?:160|161|192|193|224|225|256|257|3[3-9]|40)|eno167\d{5}|vmnic\d+)\b`)

// vmwareModules are VMware drivers whose options make no sense on KVM.
var vmwareModules = regexp.MustCompile(`^\s*options\s+(vmxnet3|vmw_pvscsi|vmw_balloon|vmxnet|e1000|e1000e)\s`)

// serviceFiles name interfaces outside the network configuration
// (firewall zones and rules, DHCP server); only the full level renames
// VMware-style names there, because changing them changes what a firewall
// or server does, not whether the guest has its network.
var serviceFiles = []struct{ dir, suffix string }{
	{"/etc/firewalld/zones", ".xml"},
	{"/etc/sysconfig", "iptables"},
	{"/etc/sysconfig", "ip6tables"},
	{"/etc/iptables", ".v4"},
	{"/etc/iptables", ".v6"},
	{"/etc", "nftables.conf"},
	{"/etc/default", "isc-dhcp-server"},
	{"/etc/ufw", ".rules"},
}

// network applies a fix level:
//   - none: nothing.
//   - moderate (basic, the default): the guest keeps the network it had.
//     MAC pinning goes (ifupdown hwaddress, netplan macaddress match,
//     NetworkManager mac-address, ifcfg HWADDR/MACADDR, systemd-networkd
//     MACAddress=, the udev persistent-net rules), VMware driver matches
//     become virtio_net, and VMware-style interface names in the network
//     configuration are renamed to the names virtio NICs get on a libvirt
//     q35 machine, in PCI order (the lowest-numbered VMware name becomes
//     enp1s0, the next enp2s0, ...), so static addresses follow the NIC.
//     VMware driver options in /etc/modprobe.d are commented out.
//   - aggressive (full): also renames those names in firewall and service
//     configuration (serviceFiles).
func (f *fixer) network(ctx context.Context, level string) error {
	switch level {
	case "none":
		return nil
	case "moderate", "aggressive":
	default:
		return fmt.Errorf("unknown network fix_level %q (want none, basic, moderate, full or aggressive)", level)
	}
	files := f.networkFiles(ctx)
	rename := f.renames(ctx, files)
	if level == "aggressive" {
		for _, sf := range serviceFiles {
			ents, _ := f.s.ReadDir(ctx, sf.dir)
			sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
			for _, e := range ents {
				if e.Mode.IsRegular() && strings.HasSuffix(e.Name, sf.suffix) {
					files = append(files, netFile{sf.dir + "/" + e.Name, func(s string) string { return s }})
				}
			}
		}
	}
	for _, nf := range files {
		fn := nf.fix
		if err := f.edit(ctx, "network", nf.path, func(s string) string {
			s = fn(s)
			if len(rename) > 0 {
				s = vmwareName.ReplaceAllStringFunc(s, func(n string) string { return rename[n] })
			}
			return s
		}); err != nil {
			return err
		}
		// ifcfg files are named after the interface.
		if base := path.Base(nf.path); strings.HasPrefix(base, "ifcfg-") && rename[strings.TrimPrefix(base, "ifcfg-")] != "" {
			np := path.Join(path.Dir(nf.path), "ifcfg-"+rename[strings.TrimPrefix(base, "ifcfg-")])
			b, err := f.s.ReadFile(ctx, nf.path)
			if err != nil {
				return err
			}
			if err := f.s.WriteFile(ctx, np, b, 0o644); err != nil {
				return err
			}
			if err := f.s.Remove(ctx, nf.path); err != nil {
				return err
			}
			f.changes = append(f.changes, report.Change{Fix: "network", File: nf.path, Before: nf.path, After: np, Note: "file renamed with the interface"})
		}
	}
	// A .link file matching a MAC names one NIC; without the MAC it would
	// rename every NIC, so it goes.
	links, _ := f.s.ReadDir(ctx, "/etc/systemd/network")
	for _, e := range links {
		p := "/etc/systemd/network/" + e.Name
		if !e.Mode.IsRegular() || !strings.HasSuffix(e.Name, ".link") {
			continue
		}
		if b, err := f.s.ReadFile(ctx, p); err == nil && strings.Contains(string(b), "MACAddress=") {
			if err := f.remove(ctx, "network", p, "MAC-pinned link file removed"); err != nil {
				return err
			}
		}
	}
	for _, p := range []string{"/etc/udev/rules.d/70-persistent-net.rules", "/etc/udev/rules.d/75-persistent-net-generator.rules"} {
		if err := f.remove(ctx, "network", p, "MAC-pinned interface names removed"); err != nil {
			return err
		}
	}
	ents, _ := f.s.ReadDir(ctx, "/etc/modprobe.d")
	for _, e := range ents {
		if !e.Mode.IsRegular() || !strings.HasSuffix(e.Name, ".conf") {
			continue
		}
		if err := f.edit(ctx, "network", "/etc/modprobe.d/"+e.Name, func(s string) string {
			return mapLines(s, func(l string) string {
				if vmwareModules.MatchString(l) {
					return "# disabled by hyper2kvm (VMware driver option): " + l
				}
				return l
			})
		}); err != nil {
			return err
		}
	}
	return nil
}

type netFile struct {
	path string
	fix  func(string) string
}

func (f *fixer) networkFiles(ctx context.Context) []netFile {
	files := []netFile{{"/etc/network/interfaces", fixIfupdown}}
	if ents, _ := f.s.ReadDir(ctx, "/etc/network/interfaces.d"); ents != nil {
		for _, e := range ents {
			if e.Mode.IsRegular() {
				files = append(files, netFile{"/etc/network/interfaces.d/" + e.Name, fixIfupdown})
			}
		}
	}
	for _, d := range []struct {
		dir, prefix, suffix string
		fix                 func(string) string
	}{
		{"/etc/netplan", "", ".yaml", fixNetplan},
		{"/etc/NetworkManager/system-connections", "", "", fixKeyfile},
		{"/etc/sysconfig/network-scripts", "ifcfg-", "", fixIfcfg},
		{"/etc/sysconfig/network", "ifcfg-", "", fixIfcfg},
		{"/etc/systemd/network", "", ".network", fixNetworkd},
	} {
		ents, _ := f.s.ReadDir(ctx, d.dir)
		sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
		for _, e := range ents {
			if e.Mode.IsRegular() && strings.HasPrefix(e.Name, d.prefix) && strings.HasSuffix(e.Name, d.suffix) && e.Name != "ifcfg-lo" {
				files = append(files, netFile{d.dir + "/" + e.Name, d.fix})
			}
		}
	}
	return files
}

// renames maps each VMware-style name found in the network files to
// enpNs0, in the names' PCI slot order.
func (f *fixer) renames(ctx context.Context, files []netFile) map[string]string {
	seen := map[string]bool{}
	for _, nf := range files {
		b, err := f.s.ReadFile(ctx, nf.path)
		if err != nil {
			continue
		}
		for _, n := range vmwareName.FindAllString(string(b), -1) {
			seen[n] = true
		}
		if base := path.Base(nf.path); vmwareName.MatchString(base) {
			seen[vmwareName.FindString(base)] = true
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return nameOrder(names[i]) < nameOrder(names[j]) })
	m := map[string]string{}
	for i, n := range names {
		m[n] = "enp" + strconv.Itoa(i+1) + "s0"
	}
	return m
}

func nameOrder(n string) int64 {
	d := strings.TrimLeft(n, "abcdefghijklmnopqrstuvwxyz")
	v, _ := strconv.ParseInt(d, 10, 64)
	return v
}

func mapLines(s string, fn func(string) string) string {
	lines := strings.Split(s, "\n")
	out := lines[:0]
	for _, l := range lines {
		if r := fn(l); r != "\x00" {
			out = append(out, r)
		}
	}
	return strings.Join(out, "\n")
}

const drop = "\x00"

var ifupdownMAC = regexp.MustCompile(`^\s*(hwaddress|hwaddr)\s`)

func fixIfupdown(s string) string {
	return mapLines(s, func(l string) string {
		if ifupdownMAC.MatchString(l) {
			return drop
		}
		return l
	})
}

var (
	netplanKey    = regexp.MustCompile(`^(\s*)([^\s:#][^:]*?)\s*:\s*(#.*)?$`)
	netplanMatch  = regexp.MustCompile(`^(\s*)match\s*:\s*$`)
	netplanMAC    = regexp.MustCompile(`^\s*macaddress\s*:`)
	netplanSet    = regexp.MustCompile(`^(\s*)set-name\s*:\s*["']?([^"'\s#]+)`)
	netplanDriver = regexp.MustCompile(`^(\s*driver\s*:\s*)["']?(vmxnet3|vmxnet|e1000e?)["']?\s*$`)
)

func indentOf(l string) int { return len(l) - len(strings.TrimLeft(l, " ")) }

// fixNetplan makes each ethernet that was pinned to its VMware NIC match
// the virtio NIC instead, keeping its addresses:
//   - match: macaddress: goes; match: driver: vmxnet3/e1000 becomes virtio_net;
//   - with set-name: a VMware-style name becomes the
//     entry's match by name (the rename to enpNs0 follows), so the entry
//     configures the virtio NIC by the name it will have; any other name
//     (lan0) is kept, matched by driver: virtio_net, which is right for a
//     guest with one such NIC;
//   - a match: block left empty goes: the entry then matches by its id.
func fixNetplan(s string) string {
	lines := strings.Split(s, "\n")
	var out []string
	outAt := map[int]int{} // line index -> its index in out, for lines copied as they are
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		m := netplanMatch.FindStringSubmatch(l)
		if m == nil {
			outAt[i] = len(out)
			out = append(out, l)
			continue
		}
		ind := len(m[1])
		// The entry this match: belongs to: the nearest line above with a
		// smaller indent, and its extent below.
		key, kind := "", -1
		for k := i - 1; k >= 0; k-- {
			if strings.TrimSpace(lines[k]) != "" && indentOf(lines[k]) < ind {
				if km := netplanKey.FindStringSubmatch(lines[k]); km != nil {
					key, kind = strings.Trim(km[2], `"'`), len(km[1])
				}
				break
			}
		}
		// The match block's children.
		j := i + 1
		var kept []string
		hadMAC := false
		childInd := ind + 2
		for ; j < len(lines); j++ {
			t := lines[j]
			if strings.TrimSpace(t) != "" && indentOf(t) <= ind {
				break
			}
			if strings.TrimSpace(t) != "" {
				childInd = indentOf(t)
			}
			if netplanMAC.MatchString(t) {
				hadMAC = true
				continue
			}
			if dm := netplanDriver.FindStringSubmatch(t); dm != nil {
				t = dm[1] + "virtio_net"
			}
			kept = append(kept, t)
		}
		// set-name: a sibling of match: in the same entry.
		setName, setLine := "", -1
		for k := i - 1; k >= 0 && kind >= 0; k-- {
			if strings.TrimSpace(lines[k]) != "" && indentOf(lines[k]) <= kind {
				break
			}
			if sm := netplanSet.FindStringSubmatch(lines[k]); sm != nil && len(sm[1]) == ind {
				setName, setLine = sm[2], k
			}
		}
		for k := j; k < len(lines) && kind >= 0 && setLine < 0; k++ {
			if strings.TrimSpace(lines[k]) != "" && indentOf(lines[k]) <= kind {
				break
			}
			if sm := netplanSet.FindStringSubmatch(lines[k]); sm != nil && len(sm[1]) == ind {
				setName, setLine = sm[2], k
			}
		}
		pad := strings.Repeat(" ", childInd)
		dropSet := false
		if hadMAC && setName != "" {
			if vmwareName.MatchString(setName) {
				dropSet = true
				if setName != key {
					kept = append([]string{pad + "name: " + setName}, kept...)
				}
			} else if strings.TrimSpace(strings.Join(kept, "")) == "" {
				kept = append([]string{pad + "driver: virtio_net"}, kept...)
			}
		}
		if strings.TrimSpace(strings.Join(kept, "")) != "" {
			out = append(out, l)
			out = append(out, kept...)
		}
		if dropSet {
			if k, ok := outAt[setLine]; ok && setLine < i {
				out[k] = drop // already copied
			} else {
				lines[setLine] = drop
			}
		}
		i = j - 1
	}
	res := out[:0]
	for _, l := range out {
		if l != drop {
			res = append(res, l)
		}
	}
	return strings.Join(res, "\n")
}

var keyfileMAC = regexp.MustCompile(`^\s*(mac-address|cloned-mac-address)\s*=`)

func fixKeyfile(s string) string {
	return mapLines(s, func(l string) string {
		if keyfileMAC.MatchString(l) {
			return drop
		}
		return l
	})
}

var ifcfgMAC = regexp.MustCompile(`^\s*(HWADDR|MACADDR)\s*=`)

func fixIfcfg(s string) string {
	return mapLines(s, func(l string) string {
		if ifcfgMAC.MatchString(l) {
			return drop
		}
		return l
	})
}

var networkdMAC = regexp.MustCompile(`^\s*(MACAddress|PermanentMACAddress)\s*=`)

// fixNetworkd drops MAC matches; a [Match] section left empty would match
// nothing specific, so it gets Name= patterns for wired NICs instead.
func fixNetworkd(s string) string {
	out := mapLines(s, func(l string) string {
		if networkdMAC.MatchString(l) {
			return drop
		}
		return l
	})
	if out == s {
		return s
	}
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) != "[Match]" {
			continue
		}
		empty := true
		for _, n := range lines[i+1:] {
			t := strings.TrimSpace(n)
			if strings.HasPrefix(t, "[") {
				break
			}
			if t != "" && !strings.HasPrefix(t, "#") {
				empty = false
			}
		}
		if empty {
			lines = append(lines[:i+1], append([]string{"Name=en* eth*"}, lines[i+1:]...)...)
		}
		break
	}
	return strings.Join(lines, "\n")
}

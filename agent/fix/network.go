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

// network applies a fix level:
//   - none: nothing.
//   - moderate (basic): drop MAC pinning (ifupdown hwaddress, netplan
//     macaddress match/set, NetworkManager mac-address, ifcfg HWADDR/MACADDR,
//     systemd-networkd MACAddress=, the udev persistent-net rules) and
//     comment out VMware driver options in /etc/modprobe.d.
//   - aggressive (full): also rename VMware-style interface names to the
//     names virtio NICs get on a libvirt q35 machine, in PCI order:
//     the lowest-numbered VMware name becomes enp1s0, the next enp2s0, ...
func (f *fixer) network(ctx context.Context, level string) error {
	switch level {
	case "none":
		return nil
	case "moderate", "aggressive":
	default:
		return fmt.Errorf("unknown network fix_level %q (want none, basic, moderate, full or aggressive)", level)
	}
	files := f.networkFiles(ctx)
	rename := map[string]string{}
	if level == "aggressive" {
		rename = f.renames(ctx, files)
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

// renames maps each VMware-style name found in the files to enpNs0, in the
// names' PCI slot order.
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

var netplanMAC = regexp.MustCompile(`^(\s*)(macaddress|set-name)\s*:`)
var netplanMatch = regexp.MustCompile(`^(\s*)match\s*:\s*$`)

// fixNetplan drops macaddress: and set-name: keys, and a match: block left
// empty; an ethernet then matches by its key, the interface name.
func fixNetplan(s string) string {
	lines := strings.Split(s, "\n")
	var out []string
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if m := netplanMatch.FindStringSubmatch(l); m != nil {
			indent := len(m[1])
			var kept []string
			j := i + 1
			for ; j < len(lines); j++ {
				t := lines[j]
				if strings.TrimSpace(t) != "" && len(t)-len(strings.TrimLeft(t, " ")) <= indent {
					break
				}
				if !netplanMAC.MatchString(t) {
					kept = append(kept, t)
				}
			}
			if len(strings.TrimSpace(strings.Join(kept, ""))) > 0 {
				out = append(out, l)
				out = append(out, kept...)
			}
			i = j - 1
			continue
		}
		if netplanMAC.MatchString(l) {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
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

package manifest

import (
	"fmt"
	"path"
	"regexp"
	"strings"
)

// The rules of load for source_type "vsphere": a VM read from a source of
// the agent's registry. Whether the source exists and the submitter may
// use it is the agent's check (it reads the registry); whether the VM
// exists, hyperctl manifest validate --check-files asks the agent.

var (
	sourceNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	morefRE      = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,80}$`)
	uuidRE       = regexp.MustCompile(`^[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}$`)
)

type remoteField struct {
	name string
	set  bool
}

// remoteFields are the load fields only a remote source takes, in
// document order.
func (l *Load) remoteFields() []remoteField {
	return []remoteField{{"source", l.Source != ""}, {"vm", l.VM != ""}, {"vm_moref", l.VMMoref != ""}, {"vm_uuid", l.VMUUID != ""}, {"snapshot", l.Snapshot}}
}

func (v *validator) remote(lp string, l *Load) {
	switch {
	case l.Source == "":
		v.add(lp+".source", "is required with source_type \"vsphere\": the name of a source an admin defined in /etc/hyper2kvm/sources.d (list them with `hyperctl sources`)")
	case !sourceNameRE.MatchString(l.Source):
		v.add(lp+".source", fmt.Sprintf("%q is not a source name (lower-case letters, digits, '-' and '_'; list them with `hyperctl sources`)", truncate(l.Source, maxQuote)))
	}
	n := 0
	for _, set := range []bool{l.VM != "", l.VMMoref != "", l.VMUUID != ""} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		v.add(lp+".vm", "is required with source_type \"vsphere\": the VM's inventory path, e.g. \"/DC0/vm/web01\" (or give vm_moref or vm_uuid; browse with `hyperctl vms SOURCE`)")
	case n > 1:
		v.add(lp+".vm", "give only one of vm, vm_moref and vm_uuid")
	}
	if l.VM != "" {
		switch {
		case !strings.HasPrefix(l.VM, "/"):
			v.add(lp+".vm", fmt.Sprintf("%q is not an inventory path; write it from the root, e.g. \"/DC0/vm/%s\"", truncate(l.VM, 200), truncate(l.VM, 200)))
		case strings.ContainsRune(l.VM, 0) || strings.HasSuffix(l.VM, "/"):
			v.add(lp+".vm", fmt.Sprintf("%q is not a VM's inventory path", truncate(l.VM, 200)))
		}
	}
	if l.VMMoref != "" && !morefRE.MatchString(l.VMMoref) {
		v.add(lp+".vm_moref", fmt.Sprintf("%q is not a managed object id (like \"vm-42\")", truncate(l.VMMoref, maxQuote)))
	}
	if l.VMUUID != "" && !uuidRE.MatchString(l.VMUUID) {
		v.add(lp+".vm_uuid", fmt.Sprintf("%q is not a UUID", truncate(l.VMUUID, maxQuote)))
	}
	if l.SourcePath != "" {
		v.add(lp+".source_path", "is not used with source_type \"vsphere\": the VM is named by vm, vm_moref or vm_uuid")
	}
	if l.SHA256 != "" {
		v.add(lp+".sha256", "is not used with source_type \"vsphere\": the disks are read from the server")
	}
	if len(l.AllowReferences) > 0 {
		v.add(lp+".allow_references", "is not used with source_type \"vsphere\"")
	}
}

// defaultName is the name of a single-VM manifest without one: the source
// file's stem, or the last element of a VM's inventory path.
func defaultName(l *Load) string {
	if l.IsRemote() {
		if l.VM == "" {
			return ""
		}
		base := path.Base(l.VM)
		if !nameRE.MatchString(base) {
			return ""
		}
		return base
	}
	return nameFromSource(l.SourcePath)
}

// Sources names the sources m reads VMs from, each once, in order: what
// a caller must be allowed to use (polkit io.hyper2kvm.agent.use-source).
func (m *Manifest) Sources() []string {
	seen := map[string]bool{}
	var out []string
	add := func(p *Pipeline) {
		if p != nil && p.Load.IsRemote() && p.Load.Source != "" && !seen[p.Load.Source] {
			seen[p.Load.Source] = true
			out = append(out, p.Load.Source)
		}
	}
	add(m.Pipeline)
	for i := range m.VMs {
		add(m.VMs[i].Pipeline)
	}
	return out
}

package vsphere

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// Entry is one item of a folder listing: a folder (or datacenter) to open,
// or a VM.
type Entry struct {
	Kind       string `json:"kind"` // datacenter | folder | vm
	Name       string `json:"name"`
	Path       string `json:"path"` // inventory path, what load.vm takes
	Moref      string `json:"moref"`
	UUID       string `json:"uuid,omitempty"`
	PowerState string `json:"power_state,omitempty"` // poweredOn | poweredOff | suspended
	GuestOS    string `json:"guest_os,omitempty"`    // vSphere guest id
	CPUs       int    `json:"cpus,omitempty"`
	MemoryMB   int64  `json:"memory_mb,omitempty"`
	Disks      []Size `json:"disks,omitempty"`
	Template   bool   `json:"template,omitempty"`
}

// Size is a disk of a listed VM.
type Size struct {
	Label string `json:"label"`
	Bytes int64  `json:"bytes"`
}

// NotFoundError says a VM is not there, with the nearest names.
type NotFoundError struct {
	Source, What string
	Nearest      []string
}

func (e *NotFoundError) Error() string {
	msg := fmt.Sprintf("source %s has no VM %s", e.Source, e.What)
	if len(e.Nearest) > 0 {
		msg += "; nearest: " + strings.Join(e.Nearest, ", ")
	}
	return msg + " (list them with `hyperctl vms " + e.Source + "`)"
}

// Browse lists the folder at inventory path p ("" or "/": the datacenters
// at the root; a datacenter: its VM folder's content).
func (c *Client) Browse(ctx context.Context, p string) ([]Entry, error) {
	p = "/" + strings.Trim(p, "/")
	root := object.NewRootFolder(c.vc)
	var ref types.ManagedObjectReference
	if p == "/" {
		ref = root.Reference()
	} else {
		obj, err := object.NewSearchIndex(c.vc).FindByInventoryPath(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("cannot look up %s in source %s: %w", p, c.src.Name, err)
		}
		if obj == nil {
			return nil, &NotFoundError{Source: c.src.Name, What: p, Nearest: c.nearest(ctx, p)}
		}
		ref = obj.Reference()
	}
	switch ref.Type {
	case "Datacenter":
		var dc mo.Datacenter
		if err := property.DefaultCollector(c.vc).RetrieveOne(ctx, ref, []string{"vmFolder"}, &dc); err != nil {
			return nil, fmt.Errorf("cannot read datacenter %s: %w", p, err)
		}
		ref, p = dc.VmFolder, path.Join(p, "vm")
	case "Folder":
	case "VirtualMachine":
		es, err := c.describeVMs(ctx, path.Dir(p), []types.ManagedObjectReference{ref})
		return es, err
	default:
		return nil, fmt.Errorf("%s in source %s is a %s, not a folder or VM", p, c.src.Name, ref.Type)
	}
	var f mo.Folder
	if err := property.DefaultCollector(c.vc).RetrieveOne(ctx, ref, []string{"childEntity"}, &f); err != nil {
		return nil, fmt.Errorf("cannot list %s: %w", p, err)
	}
	var vms, others []types.ManagedObjectReference
	for _, ch := range f.ChildEntity {
		switch ch.Type {
		case "VirtualMachine":
			vms = append(vms, ch)
		case "Folder", "Datacenter":
			others = append(others, ch)
		}
	}
	var out []Entry
	if len(others) > 0 {
		var ents []mo.ManagedEntity
		if err := property.DefaultCollector(c.vc).Retrieve(ctx, others, []string{"name"}, &ents); err != nil {
			return nil, fmt.Errorf("cannot list %s: %w", p, err)
		}
		for _, e := range ents {
			kind := "folder"
			if e.Self.Type == "Datacenter" {
				kind = "datacenter"
			}
			out = append(out, Entry{Kind: kind, Name: e.Name, Path: path.Join(p, e.Name), Moref: e.Self.Value})
		}
	}
	es, err := c.describeVMs(ctx, p, vms)
	if err != nil {
		return nil, err
	}
	out = append(out, es...)
	sort.SliceStable(out, func(i, j int) bool {
		if (out[i].Kind == "vm") != (out[j].Kind == "vm") {
			return out[j].Kind == "vm"
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

var vmProps = []string{"name", "config.uuid", "config.guestId", "config.template", "config.hardware.numCPU", "config.hardware.memoryMB", "config.hardware.device", "runtime.powerState"}

func (c *Client) describeVMs(ctx context.Context, dir string, refs []types.ManagedObjectReference) ([]Entry, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	var vms []mo.VirtualMachine
	if err := property.DefaultCollector(c.vc).Retrieve(ctx, refs, vmProps, &vms); err != nil {
		return nil, fmt.Errorf("cannot read the VMs of %s: %w", dir, err)
	}
	out := make([]Entry, 0, len(vms))
	for _, vm := range vms {
		e := Entry{Kind: "vm", Name: vm.Name, Path: path.Join(dir, vm.Name), Moref: vm.Self.Value, PowerState: string(vm.Runtime.PowerState)}
		if cf := vm.Config; cf != nil {
			e.UUID, e.GuestOS, e.Template = cf.Uuid, cf.GuestId, cf.Template
			e.CPUs, e.MemoryMB = int(cf.Hardware.NumCPU), int64(cf.Hardware.MemoryMB)
			for _, d := range cf.Hardware.Device {
				if vd, ok := d.(*types.VirtualDisk); ok {
					e.Disks = append(e.Disks, Size{Label: vd.DeviceInfo.GetDescription().Label, Bytes: vd.CapacityInBytes})
				}
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// Ref names a VM one of three ways; exactly one is set.
type Ref struct {
	Path  string // inventory path, "/DC0/vm/folder/web01"
	Moref string // "vm-42"
	UUID  string // the BIOS UUID (config.uuid)
}

func (r Ref) String() string {
	switch {
	case r.Path != "":
		return r.Path
	case r.Moref != "":
		return "with moref " + r.Moref
	}
	return "with uuid " + r.UUID
}

// FindVM finds the VM r names.
func (c *Client) FindVM(ctx context.Context, r Ref) (*object.VirtualMachine, error) {
	si := object.NewSearchIndex(c.vc)
	var obj object.Reference
	var err error
	switch {
	case r.Path != "":
		obj, err = si.FindByInventoryPath(ctx, r.Path)
	case r.Moref != "":
		ref := types.ManagedObjectReference{Type: "VirtualMachine", Value: r.Moref}
		var vm mo.VirtualMachine
		if err := property.DefaultCollector(c.vc).RetrieveOne(ctx, ref, []string{"name"}, &vm); err != nil {
			return nil, &NotFoundError{Source: c.src.Name, What: r.String()}
		}
		return object.NewVirtualMachine(c.vc, ref), nil
	case r.UUID != "":
		var dc *object.Datacenter
		if _, d, ferr := c.finder(ctx); ferr == nil && c.src.Datacenter != "" {
			dc = d
		}
		obj, err = si.FindByUuid(ctx, dc, r.UUID, true, nil)
	default:
		return nil, errors.New("no VM named: give load.vm, load.vm_moref or load.vm_uuid")
	}
	if err != nil {
		return nil, fmt.Errorf("cannot look up VM %s in source %s: %w", r, c.src.Name, err)
	}
	vm, ok := obj.(*object.VirtualMachine)
	if !ok || obj == nil {
		e := &NotFoundError{Source: c.src.Name, What: r.String()}
		if r.Path != "" {
			e.Nearest = c.nearest(ctx, r.Path)
		}
		return nil, e
	}
	return vm, nil
}

// nearest are up to three names of the parent folder of p closest to its
// last element (full paths), for a "did you mean".
func (c *Client) nearest(ctx context.Context, p string) []string {
	dir, base := path.Split(strings.TrimSuffix(p, "/"))
	ents, err := c.Browse(ctx, dir)
	if err != nil {
		return nil
	}
	type cand struct {
		path string
		d    int
	}
	var cs []cand
	for _, e := range ents {
		d := distance(strings.ToLower(e.Name), strings.ToLower(base))
		if d <= max(3, len(base)/2) {
			cs = append(cs, cand{e.Path, d})
		}
	}
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].d < cs[j].d })
	var out []string
	for i := 0; i < len(cs) && i < 3; i++ {
		out = append(out, cs[i].path)
	}
	return out
}

// distance is the Levenshtein distance of a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

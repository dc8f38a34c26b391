package vsphere

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// VM is a found VM with what the export needs of it.
type VM struct {
	obj      *object.VirtualMachine
	Hardware report.Hardware
	// ToolsRunning: a snapshot can be quiesced.
	ToolsRunning bool
	// disks are the VirtualDisk devices in Hardware.Disks order, and
	// listed their positions among the disks of the device list (the
	// order a lease lists them in).
	disks  []*types.VirtualDisk
	listed []int
}

// controller kinds in boot order when the VM names none: what VMware's
// BIOS tries first.
var busOrder = map[string]int{"scsi": 0, "sata": 1, "nvme": 2, "ide": 3}

// ReadVM reads the hardware of vm from the API.
func (c *Client) ReadVM(ctx context.Context, vm *object.VirtualMachine) (*VM, error) {
	var m mo.VirtualMachine
	if err := property.DefaultCollector(c.vc).RetrieveOne(ctx, vm.Reference(), []string{"name", "config", "runtime.powerState", "guest.toolsRunningStatus"}, &m); err != nil {
		return nil, fmt.Errorf("cannot read the hardware of VM %s: %w", vm.Reference().Value, err)
	}
	if m.Config == nil {
		return nil, fmt.Errorf("VM %s (%s) has no configuration the API can read (is it inaccessible or orphaned?)", m.Name, m.Self.Value)
	}
	return fromConfig(ctx, c, vm, &m), nil
}

func fromConfig(ctx context.Context, c *Client, vm *object.VirtualMachine, m *mo.VirtualMachine) *VM {
	cf := m.Config
	hw := report.Hardware{
		Name: m.Name, Moref: m.Self.Value, UUID: cf.Uuid, GuestOS: cf.GuestId,
		CPUs: int(cf.Hardware.NumCPU), CoresPerSocket: int(cf.Hardware.NumCoresPerSocket),
		MemoryMB: int64(cf.Hardware.MemoryMB), Firmware: "bios", PowerState: string(m.Runtime.PowerState),
	}
	if cf.Firmware == string(types.GuestOsDescriptorFirmwareTypeEfi) {
		hw.Firmware = "efi"
		if bo := cf.BootOptions; bo != nil && bo.EfiSecureBootEnabled != nil && *bo.EfiSecureBootEnabled {
			hw.SecureBoot = true
		}
	}
	out := &VM{obj: vm, ToolsRunning: m.Guest != nil && m.Guest.ToolsRunningStatus == string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)}
	devs := object.VirtualDeviceList(cf.Hardware.Device)
	type ordered struct {
		d          *types.VirtualDisk
		kind       string
		bus, unit  int32
		controller string
		index      int // among the disks, in device-list order
	}
	var ds []ordered
	for _, d := range devs {
		switch dev := d.(type) {
		case *types.VirtualDisk:
			kind, bus := "disk", int32(0)
			if ctl := devs.FindByKey(dev.ControllerKey); ctl != nil {
				kind, bus = controllerKind(ctl)
			}
			unit := int32(0)
			if dev.UnitNumber != nil {
				unit = *dev.UnitNumber
			}
			ds = append(ds, ordered{dev, kind, bus, unit, fmt.Sprintf("%s%d:%d", kind, bus, unit), len(ds)})
		case types.BaseVirtualEthernetCard:
			card := dev.GetVirtualEthernetCard()
			nic := report.HardwareNIC{Label: card.DeviceInfo.GetDescription().Label, MAC: strings.ToLower(card.MacAddress), Model: nicModel(d)}
			if s, ok := card.DeviceInfo.(*types.Description); ok {
				nic.Network = s.Summary
			}
			switch b := card.Backing.(type) {
			case *types.VirtualEthernetCardNetworkBackingInfo:
				nic.Network = b.DeviceName
			case *types.VirtualEthernetCardDistributedVirtualPortBackingInfo:
				nic.Network = c.portgroupName(ctx, b.Port.PortgroupKey)
			}
			hw.NICs = append(hw.NICs, nic)
		}
	}
	sort.SliceStable(ds, func(i, j int) bool {
		a, b := ds[i], ds[j]
		if busOrder[a.kind] != busOrder[b.kind] {
			return busOrder[a.kind] < busOrder[b.kind]
		}
		if a.bus != b.bus {
			return a.bus < b.bus
		}
		return a.unit < b.unit
	})
	for i, d := range ds {
		file := ""
		if fb, ok := d.d.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
			file = fb.GetVirtualDeviceFileBackingInfo().FileName
		}
		hw.Disks = append(hw.Disks, report.HardwareDisk{
			Label: d.d.DeviceInfo.GetDescription().Label, Controller: d.controller,
			Capacity: d.d.CapacityInBytes, File: file, ID: fmt.Sprintf("disk%d", i+1),
		})
		out.disks = append(out.disks, d.d)
		out.listed = append(out.listed, d.index)
	}
	out.Hardware = hw
	return out
}

func controllerKind(ctl types.BaseVirtualDevice) (string, int32) {
	bus := int32(0)
	if c, ok := ctl.(types.BaseVirtualController); ok {
		bus = c.GetVirtualController().BusNumber
	}
	switch ctl.(type) {
	case types.BaseVirtualSCSIController:
		return "scsi", bus
	case *types.VirtualAHCIController, types.BaseVirtualSATAController:
		return "sata", bus
	case *types.VirtualNVMEController:
		return "nvme", bus
	case *types.VirtualIDEController:
		return "ide", bus
	}
	return "disk", bus
}

func nicModel(d types.BaseVirtualDevice) string {
	switch d.(type) {
	case *types.VirtualVmxnet3:
		return "vmxnet3"
	case *types.VirtualE1000e:
		return "e1000e"
	case *types.VirtualE1000:
		return "e1000"
	case *types.VirtualVmxnet2:
		return "vmxnet2"
	case *types.VirtualPCNet32:
		return "pcnet32"
	}
	return ""
}

// portgroupName names a distributed port group by its key ("" if it
// cannot be read: the NIC is still listed, with its MAC).
func (c *Client) portgroupName(ctx context.Context, key string) string {
	if key == "" {
		return ""
	}
	var pg mo.DistributedVirtualPortgroup
	ref := types.ManagedObjectReference{Type: "DistributedVirtualPortgroup", Value: key}
	if err := property.DefaultCollector(c.vc).RetrieveOne(ctx, ref, []string{"name"}, &pg); err != nil {
		return key
	}
	return pg.Name
}

// Package vspheretest runs govmomi's vCenter/ESXi simulator for tests and
// shapes its VMs over the API (disk contents, CPUs, memory, firmware,
// MACs, power): the unit tests of agent/vsphere use it in process, and
// test/vcsim serves it as a process of its own for the end-to-end tests.
// Never linked into a shipped binary.
package vspheretest

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/hyper2kvm/hyper2kvm/agent/vsphere"
)

// Server is a running simulator.
type Server struct {
	URL        string // https://127.0.0.1:PORT/sdk
	Thumbprint string // SHA-256 of its certificate
	User       string
	Password   string
	// FirstVM is the inventory path of the simulator's first VM
	// ("/DC0/vm/DC0_H0_VM0", or "/ha-datacenter/vm/ha-host_VM0" for ESXi).
	FirstVM string
	model   *simulator.Model
	srv     *simulator.Server
}

// Start serves a simulated vCenter (esx false) or standalone ESXi host on
// addr ("127.0.0.1:0" for any port) that accepts only user and password.
func Start(esx bool, addr, user, password string) (*Server, error) {
	m := simulator.VPX()
	first := "/DC0/vm/DC0_H0_VM0"
	if esx {
		m = simulator.ESX()
		first = "/ha-datacenter/vm/ha-host_VM0"
	}
	if err := m.Create(); err != nil {
		return nil, fmt.Errorf("cannot create the simulator's inventory: %w", err)
	}
	m.Service.TLS = new(tls.Config)
	m.Service.Listen = &url.URL{Host: addr, User: url.UserPassword(user, password)}
	srv := m.Service.NewServer()
	u := *srv.URL
	u.User = nil
	return &Server{URL: u.String(), Thumbprint: vsphere.Fingerprint(srv.Certificate().Raw), User: user, Password: password, FirstVM: first, model: m, srv: srv}, nil
}

// Close stops the server and removes its datastores.
func (s *Server) Close() {
	s.srv.Close()
	s.model.Remove()
}

// Admin changes a simulator's VMs over the API.
type Admin struct {
	c *govmomi.Client
}

// Dial logs in to the simulator at rawURL (any certificate).
func Dial(ctx context.Context, rawURL, user, password string) (*Admin, error) {
	u, err := soap.ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	u.User = url.UserPassword(user, password)
	c, err := govmomi.NewClient(ctx, u, true)
	if err != nil {
		return nil, fmt.Errorf("cannot log in to the simulator: %w", err)
	}
	return &Admin{c: c}, nil
}

// Hardware is what SetHardware sets; zero fields are left alone.
type Hardware struct {
	CPUs           int
	CoresPerSocket int
	MemoryMB       int64
	Firmware       string   // bios | efi
	MACs           []string // one per NIC, in device order (the first len(MACs) NICs)
}

func (a *Admin) vm(ctx context.Context, p string) (*object.VirtualMachine, error) {
	obj, err := object.NewSearchIndex(a.c.Client).FindByInventoryPath(ctx, p)
	if err != nil {
		return nil, err
	}
	vm, ok := obj.(*object.VirtualMachine)
	if !ok {
		return nil, fmt.Errorf("no VM %s in the simulator", p)
	}
	return vm, nil
}

// SetHardware reconfigures the VM at inventory path p.
func (a *Admin) SetHardware(ctx context.Context, p string, hw Hardware) error {
	vm, err := a.vm(ctx, p)
	if err != nil {
		return err
	}
	spec := types.VirtualMachineConfigSpec{NumCPUs: int32(hw.CPUs), NumCoresPerSocket: int32(hw.CoresPerSocket), MemoryMB: hw.MemoryMB, Firmware: hw.Firmware}
	if len(hw.MACs) > 0 {
		devs, err := vm.Device(ctx)
		if err != nil {
			return err
		}
		nics := devs.SelectByType((*types.VirtualEthernetCard)(nil))
		for i, mac := range hw.MACs {
			var card types.BaseVirtualDevice
			op := types.VirtualDeviceConfigSpecOperationEdit
			if i < len(nics) {
				card = nics[i]
			} else {
				b, err := object.NewNetwork(a.c.Client, types.ManagedObjectReference{}).EthernetCardBackingInfo(ctx)
				if err != nil {
					b = &types.VirtualEthernetCardNetworkBackingInfo{VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: "VM Network"}}
				}
				card, err = object.EthernetCardTypes().CreateEthernetCard("vmxnet3", b)
				if err != nil {
					return err
				}
				op = types.VirtualDeviceConfigSpecOperationAdd
			}
			e := card.(types.BaseVirtualEthernetCard).GetVirtualEthernetCard()
			e.AddressType = string(types.VirtualEthernetCardMacTypeManual)
			e.MacAddress = mac
			spec.DeviceChange = append(spec.DeviceChange, &types.VirtualDeviceConfigSpec{Operation: op, Device: card})
		}
	}
	task, err := vm.Reconfigure(ctx, spec)
	if err != nil {
		return err
	}
	return task.Wait(ctx)
}

// Power powers the VM at p on or off.
func (a *Admin) Power(ctx context.Context, p string, on bool) error {
	vm, err := a.vm(ctx, p)
	if err != nil {
		return err
	}
	state, err := vm.PowerState(ctx)
	if err != nil {
		return err
	}
	if on == (state == types.VirtualMachinePowerStatePoweredOn) {
		return nil
	}
	var task *object.Task
	if on {
		task, err = vm.PowerOn(ctx)
	} else {
		task, err = vm.PowerOff(ctx)
	}
	if err != nil {
		return err
	}
	return task.Wait(ctx)
}

// PutDisk replaces the file of the VM's first disk (its descriptor, for a
// flat disk: the extent is then left unused) with the image at src, a
// VMDK as vSphere would export it, uploaded through the datastore.
func (a *Admin) PutDisk(ctx context.Context, p, src string) error {
	vm, err := a.vm(ctx, p)
	if err != nil {
		return err
	}
	devs, err := vm.Device(ctx)
	if err != nil {
		return err
	}
	disks := devs.SelectByType((*types.VirtualDisk)(nil))
	if len(disks) == 0 {
		return fmt.Errorf("VM %s has no disk", p)
	}
	file := disks[0].(*types.VirtualDisk).Backing.(types.BaseVirtualDeviceFileBackingInfo).GetVirtualDeviceFileBackingInfo().FileName
	var dp object.DatastorePath
	dp.FromString(file)
	f := find.NewFinder(a.c.Client, false)
	dc, err := f.DefaultDatacenter(ctx)
	if err != nil {
		return err
	}
	f.SetDatacenter(dc)
	ds, err := f.Datastore(ctx, dp.Datastore)
	if err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	p2 := soap.DefaultUpload
	p2.ContentLength = st.Size()
	return ds.Upload(ctx, io.Reader(in), dp.Path, &p2)
}

// Snapshots names the VM's snapshots (sorted).
func (a *Admin) Snapshots(ctx context.Context, p string) ([]string, error) {
	vm, err := a.vm(ctx, p)
	if err != nil {
		return nil, err
	}
	var m mo.VirtualMachine
	if err := property.DefaultCollector(a.c.Client).RetrieveOne(ctx, vm.Reference(), []string{"snapshot"}, &m); err != nil {
		return nil, err
	}
	var names []string
	var walk func([]types.VirtualMachineSnapshotTree)
	walk = func(ts []types.VirtualMachineSnapshotTree) {
		for _, t := range ts {
			names = append(names, t.Name)
			walk(t.ChildSnapshotList)
		}
	}
	if m.Snapshot != nil {
		walk(m.Snapshot.RootSnapshotList)
	}
	sort.Strings(names)
	return names, nil
}

// Logout ends the admin session.
func (a *Admin) Logout(ctx context.Context) { _ = a.c.Logout(ctx) }

// HoldNFC makes the server's NFC downloads (an export lease's disks) wait
// while hold says so, or until the client goes away: a test can then act
// on a job in the middle of its export (kill its worker) without a race.
func (s *Server) HoldNFC(hold func() bool) {
	s.model.Service.ServeMux.HandleFunc("GET /nfc/", func(w http.ResponseWriter, r *http.Request) {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for hold() {
			select {
			case <-r.Context().Done():
				return
			case <-t.C:
			}
		}
		simulator.ServeNFC(w, r)
	})
}

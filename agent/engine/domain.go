package engine

// The domain XML is built from libvirt.org/go/libvirtxml, the libvirt
// project's own Go types for its schema, not from structs of our own: the
// element and attribute names, the nesting (a disk's <source file=>, a
// chardev's type= taken from its source) and the escaping are libvirt's,
// and what a user adds later (a bridge, a TPM, a video device) is a field
// to set rather than a schema to re-read.

import (
	"fmt"
	"path/filepath"

	"libvirt.org/go/libvirtxml"
)

// DomainSpec is what the libvirt domain of a converted VM is made from.
type DomainSpec struct {
	Name     string
	MemoryMB int64  // default 2048
	CPUs     int    // default 2
	Firmware string // bios (default) | efi
	Disks    []DomainDisk
	NICs     int  // default 1
	Windows  bool // Hyper-V enlightenments, local-time clock; SATA and e1000e unless VirtioDrivers
	// VirtioDrivers: the Windows guest has virtio drivers (virt-v2v put
	// them in, or it had them): virtio disks and NICs.
	VirtioDrivers bool
}

// DomainDisk is one disk of the domain, in boot order.
type DomainDisk struct {
	Path   string // absolute
	Format string // qcow2 | raw | vdi
}

// DomainXML renders a libvirt domain for spec: virtio disks and network
// (SATA and e1000e for a Windows guest without virtio drivers), a serial
// console, q35, BIOS or UEFI firmware (libvirt's firmware autoselection).
// `virsh define domain.xml` is the user's next step.
func DomainXML(spec DomainSpec) ([]byte, error) {
	if spec.Name == "" {
		return nil, fmt.Errorf("cannot write domain XML: no name")
	}
	if len(spec.Disks) == 0 {
		return nil, fmt.Errorf("cannot write domain XML for %s: no disks", spec.Name)
	}
	if len(spec.Disks) > 26 {
		return nil, fmt.Errorf("cannot write domain XML for %s: %d disks, at most 26", spec.Name, len(spec.Disks))
	}
	memory, cpus := uint(2048), uint(2)
	if spec.MemoryMB > 0 {
		memory = uint(spec.MemoryMB)
	}
	if spec.CPUs > 0 {
		cpus = uint(spec.CPUs)
	}
	clock := "utc"
	bus, prefix, nic := "virtio", "vd", "virtio"
	if spec.Windows {
		// Windows keeps its clock in local time.
		clock = "localtime"
		if !spec.VirtioDrivers {
			bus, prefix, nic = "sata", "sd", "e1000e"
		}
	}
	d := libvirtxml.Domain{
		Type:   "kvm",
		Name:   spec.Name,
		Memory: &libvirtxml.DomainMemory{Value: memory, Unit: "MiB"},
		VCPU:   &libvirtxml.DomainVCPU{Value: cpus},
		OS: &libvirtxml.DomainOS{
			Type:        &libvirtxml.DomainOSType{Arch: "x86_64", Machine: "q35", Type: "hvm"},
			BootDevices: []libvirtxml.DomainBootDevice{{Dev: "hd"}},
		},
		Features:   &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}, APIC: &libvirtxml.DomainFeatureAPIC{}},
		CPU:        &libvirtxml.DomainCPU{Mode: "host-model"},
		Clock:      &libvirtxml.DomainClock{Offset: clock},
		OnPoweroff: "destroy",
		OnReboot:   "restart",
		OnCrash:    "destroy",
		Devices:    &libvirtxml.DomainDeviceList{},
	}
	if spec.Firmware == "efi" {
		d.OS.Firmware = "efi"
	}
	if spec.Windows {
		// The enlightenments virt-v2v and virt-install give Windows: it
		// runs much faster (and its clock stays right) when it knows it
		// is a guest.
		on := func() *libvirtxml.DomainFeatureState { return &libvirtxml.DomainFeatureState{State: "on"} }
		d.Features.HyperV = &libvirtxml.DomainFeatureHyperV{
			Relaxed: on(), VAPIC: on(), VPIndex: on(), Runtime: on(), Synic: on(), Reset: on(), Frequencies: on(),
			Spinlocks: &libvirtxml.DomainFeatureHyperVSpinlocks{DomainFeatureState: libvirtxml.DomainFeatureState{State: "on"}, Retries: 8191},
			STimer:    &libvirtxml.DomainFeatureHyperVSTimer{DomainFeatureState: libvirtxml.DomainFeatureState{State: "on"}},
		}
		d.Clock.Timer = []libvirtxml.DomainTimer{
			{Name: "rtc", TickPolicy: "catchup"}, {Name: "pit", TickPolicy: "delay"},
			{Name: "hpet", Present: "no"}, {Name: "hypervclock", Present: "yes"},
		}
	}
	dev := d.Devices
	for i, disk := range spec.Disks {
		if !filepath.IsAbs(disk.Path) {
			return nil, fmt.Errorf("cannot write domain XML: disk path %q is not absolute", disk.Path)
		}
		dev.Disks = append(dev.Disks, libvirtxml.DomainDisk{
			Device: "disk",
			Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: disk.Format},
			Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: disk.Path}},
			Target: &libvirtxml.DomainDiskTarget{Dev: prefix + string(rune('a'+i)), Bus: bus},
		})
	}
	for range max(spec.NICs, 1) {
		dev.Interfaces = append(dev.Interfaces, libvirtxml.DomainInterface{
			Source: &libvirtxml.DomainInterfaceSource{Network: &libvirtxml.DomainInterfaceSourceNetwork{Network: "default"}},
			Model:  &libvirtxml.DomainInterfaceModel{Type: nic},
		})
	}
	pty := func() *libvirtxml.DomainChardevSource {
		return &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}}
	}
	dev.Serials = []libvirtxml.DomainSerial{{Source: pty()}}
	dev.Consoles = []libvirtxml.DomainConsole{{Source: pty(), Target: &libvirtxml.DomainConsoleTarget{Type: "serial"}}}
	dev.Channels = []libvirtxml.DomainChannel{{
		Source: &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{}},
		Target: &libvirtxml.DomainChannelTarget{VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: "org.qemu.guest_agent.0"}},
	}}
	dev.RNGs = []libvirtxml.DomainRNG{{
		Model:   "virtio",
		Backend: &libvirtxml.DomainRNGBackend{Random: &libvirtxml.DomainRNGBackendRandom{Device: "/dev/urandom"}},
	}}
	out, err := d.Marshal()
	if err != nil {
		return nil, fmt.Errorf("cannot write domain XML for %s: %w", spec.Name, err)
	}
	return []byte(out + "\n"), nil
}

// writeDomain writes domain.xml for the converted disks.
func (r *runner) writeDomain() error {
	spec := DomainSpec{Name: r.vm.Name, Firmware: r.firmware(), NICs: 1}
	if r.ovf != nil {
		spec.MemoryMB, spec.CPUs = r.ovf.MemoryMB, r.ovf.CPUs
		spec.NICs = max(len(r.ovf.NICs), 1)
	}
	if g := r.rep.Guest; g != nil && g.OS != nil && g.OS.Type == "windows" {
		spec.Windows = true
		// virtio only when the guest can boot from it: virt-v2v installed
		// the drivers, or they were there (viostor or vioscsi).
		spec.VirtioDrivers = r.fixed && r.backend == BackendV2V
		if w := g.Windows; w != nil {
			for _, d := range w.VirtioDrivers {
				spec.VirtioDrivers = spec.VirtioDrivers || d == "viostor"
			}
		}
	}
	for _, d := range r.disks {
		if d.converted {
			spec.Disks = append(spec.Disks, DomainDisk{Path: d.output, Format: d.outFormat})
		}
	}
	b, err := DomainXML(spec)
	if err != nil {
		return err
	}
	if err := writeNew(filepath.Join(r.outDir, DomainXMLName), b, r.owner.setFile); err != nil {
		return fmt.Errorf("cannot write domain XML: %w", err)
	}
	return nil
}

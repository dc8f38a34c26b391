package engine

// The domain XML is built from libvirt.org/go/libvirtxml, the libvirt
// project's own Go types for its schema, not from structs of our own: the
// element and attribute names, the nesting (a disk's <source file=>, a
// chardev's type= taken from its source) and the escaping are libvirt's,
// and what a user adds later (a bridge, a TPM, a video device) is a field
// to set rather than a schema to re-read.

import (
	"encoding/xml"
	"fmt"
	"path/filepath"

	"libvirt.org/go/libvirtxml"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

// DomainSpec is what the libvirt domain of a converted VM is made from.
type DomainSpec struct {
	Name     string
	UUID     string // "" lets libvirt choose one
	MemoryMB int64  // default 2048
	CPUs     int    // default 2
	Firmware string // bios (default) | efi
	// SecureBoot (efi only) boots with UEFI Secure Boot, as the source did:
	// the secure-boot OVMF build, its vars template with Microsoft's keys
	// enrolled, and SMM.
	SecureBoot bool
	// OVMF names the firmware files for efi; zero: libvirt's firmware
	// autoselection chooses (and makes the NVRAM file) itself.
	OVMF  OVMF
	Disks []DomainDisk
	// BootDisk is the index of the disk booted first (the one holding the
	// guest's boot loader); the others follow in their order.
	BootDisk int
	// Interfaces are the NICs in the source's order; when empty, NICs
	// NICs (default 1) on libvirt's network "default".
	Interfaces []DomainNIC
	NICs       int
	// Graphics is vnc or spice, listening on 127.0.0.1 only, or "" for
	// none.
	Graphics string
	Windows  bool // Hyper-V enlightenments, local-time clock; SATA and e1000e unless VirtioDrivers
	// VirtioDrivers: the Windows guest has virtio drivers (virt-v2v put
	// them in, or it had them): virtio disks and NICs.
	VirtioDrivers bool
	// Description is the domain's <description> (virsh desc); Job, when
	// set, is recorded in its <metadata> (JobMetadata), so that the job
	// that made a domain is known to it and to the administrator.
	Description string
	Job         string
	// CoresPerSocket gives the CPUs the source's topology (0: one
	// socket per CPU, libvirt's default).
	CoresPerSocket int
}

// JobMetadata is the <metadata> element naming the job that made a domain.
type JobMetadata struct {
	XMLName xml.Name `xml:"https://hyper2kvm.io/xmlns/domain/1 job"`
	ID      string   `xml:"id,attr"`
}

// DomainJob is the job id a domain's XML records in its metadata, "" for
// none.
func DomainJob(domainXML string) string {
	var d libvirtxml.Domain
	if d.Unmarshal(domainXML) != nil || d.Metadata == nil {
		return ""
	}
	var m JobMetadata
	if xml.Unmarshal([]byte(d.Metadata.XML), &m) != nil {
		return ""
	}
	return m.ID
}

// OVMF are the UEFI firmware files of a domain: the read-only code and
// the template its own NVRAM file is made from (by libvirt, at the first
// start, as /var/lib/libvirt/qemu/nvram/NAME_VARS.fd).
type OVMF struct {
	Code, VarsTemplate string
}

// DomainDisk is one disk of the domain, in the source's order.
type DomainDisk struct {
	Path   string // absolute; unused when Pool is set
	Format string // qcow2 | raw | vdi
	// Pool and Volume name the disk as a volume of a libvirt storage pool.
	Pool, Volume string
}

// DomainNIC is one network adapter: on a host bridge or a libvirt
// network, with the source's MAC address when it had one ("" lets
// libvirt choose).
type DomainNIC struct {
	MAC     string
	Bridge  string
	Network string
}

// DomainXML renders a libvirt domain for spec: virtio disks and network
// (SATA and e1000e for a Windows guest without virtio drivers), a serial
// console, q35, BIOS or UEFI firmware (libvirt's firmware autoselection).
// `virsh define NAME.xml` is the user's next step unless target.libvirt
// defines it.
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
	if spec.UUID != "" {
		d.UUID = spec.UUID
	}
	d.Description = spec.Description
	if spec.Job != "" {
		m, err := xml.Marshal(JobMetadata{ID: spec.Job})
		if err != nil {
			return nil, fmt.Errorf("cannot write domain XML for %s: %w", spec.Name, err)
		}
		d.Metadata = &libvirtxml.DomainMetadata{XML: string(m)}
	}
	if spec.Firmware == "efi" {
		setEFI(&d, spec)
	}
	if spec.BootDisk < 0 || spec.BootDisk >= len(spec.Disks) {
		return nil, fmt.Errorf("cannot write domain XML for %s: boot disk %d of %d", spec.Name, spec.BootDisk+1, len(spec.Disks))
	}
	if spec.BootDisk > 0 {
		// Per-device boot order instead of <os><boot dev=hd>: the root
		// disk first, whatever its place among the disks.
		d.OS.BootDevices = nil
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
	order := uint(2)
	for i, disk := range spec.Disks {
		dd := libvirtxml.DomainDisk{
			Device: "disk",
			Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: disk.Format},
			Target: &libvirtxml.DomainDiskTarget{Dev: prefix + string(rune('a'+i)), Bus: bus},
		}
		switch {
		case disk.Pool != "":
			dd.Source = &libvirtxml.DomainDiskSource{Volume: &libvirtxml.DomainDiskSourceVolume{Pool: disk.Pool, Volume: disk.Volume}}
		case !filepath.IsAbs(disk.Path):
			return nil, fmt.Errorf("cannot write domain XML: disk path %q is not absolute", disk.Path)
		default:
			dd.Source = &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: disk.Path}}
		}
		if spec.BootDisk > 0 {
			if i == spec.BootDisk {
				dd.Boot = &libvirtxml.DomainDeviceBoot{Order: 1}
			} else {
				dd.Boot = &libvirtxml.DomainDeviceBoot{Order: order}
				order++
			}
		}
		dev.Disks = append(dev.Disks, dd)
	}
	if c := uint(spec.CoresPerSocket); c > 1 && cpus%c == 0 {
		d.CPU.Topology = &libvirtxml.DomainCPUTopology{Sockets: int(cpus / c), Dies: 1, Cores: int(c), Threads: 1}
	}
	nics := spec.Interfaces
	if len(nics) == 0 {
		for range max(spec.NICs, 1) {
			nics = append(nics, DomainNIC{Network: "default"})
		}
	}
	for _, n := range nics {
		di := libvirtxml.DomainInterface{Model: &libvirtxml.DomainInterfaceModel{Type: nic}}
		switch {
		case n.Bridge != "":
			di.Source = &libvirtxml.DomainInterfaceSource{Bridge: &libvirtxml.DomainInterfaceSourceBridge{Bridge: n.Bridge}}
		case n.Network != "":
			di.Source = &libvirtxml.DomainInterfaceSource{Network: &libvirtxml.DomainInterfaceSourceNetwork{Network: n.Network}}
		default:
			return nil, fmt.Errorf("cannot write domain XML for %s: a NIC with neither bridge nor network", spec.Name)
		}
		if n.MAC != "" {
			di.MAC = &libvirtxml.DomainInterfaceMAC{Address: n.MAC}
		}
		dev.Interfaces = append(dev.Interfaces, di)
	}
	switch spec.Graphics {
	case "":
	case "vnc":
		dev.Graphics = []libvirtxml.DomainGraphic{{VNC: &libvirtxml.DomainGraphicVNC{
			Port: -1, AutoPort: "yes", Listeners: localListen()}}}
	case "spice":
		dev.Graphics = []libvirtxml.DomainGraphic{{Spice: &libvirtxml.DomainGraphicSpice{
			Port: -1, AutoPort: "yes", Listeners: localListen()}}}
	default:
		return nil, fmt.Errorf("cannot write domain XML for %s: graphics %q is not vnc or spice", spec.Name, spec.Graphics)
	}
	if spec.Graphics != "" {
		dev.Videos = []libvirtxml.DomainVideo{{Model: libvirtxml.DomainVideoModel{Type: "vga"}}}
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

// setEFI boots d with UEFI: the OVMF files spec names with a per-VM
// NVRAM made from the vars template (libvirt names it after the domain),
// or, without them, libvirt's firmware autoselection; Secure Boot needs
// the secure-boot build and SMM.
func setEFI(d *libvirtxml.Domain, spec DomainSpec) {
	if spec.OVMF.Code == "" {
		d.OS.Firmware = "efi"
		if spec.SecureBoot {
			d.OS.FirmwareInfo = &libvirtxml.DomainOSFirmwareInfo{Features: []libvirtxml.DomainOSFirmwareFeature{
				{Name: "secure-boot", Enabled: "yes"}, {Name: "enrolled-keys", Enabled: "yes"}}}
			d.Features.SMM = &libvirtxml.DomainFeatureSMM{State: "on"}
		}
		return
	}
	d.OS.Loader = &libvirtxml.DomainLoader{Path: spec.OVMF.Code, Readonly: "yes", Type: "pflash"}
	d.OS.NVRam = &libvirtxml.DomainNVRam{Template: spec.OVMF.VarsTemplate}
	if spec.SecureBoot {
		d.OS.Loader.Secure = "yes"
		d.Features.SMM = &libvirtxml.DomainFeatureSMM{State: "on"}
	}
}

// localListen is a display listening on the host's loopback only: a VM's
// console is not for the network unless the administrator says so.
func localListen() []libvirtxml.DomainGraphicListener {
	return []libvirtxml.DomainGraphicListener{{Address: &libvirtxml.DomainGraphicListenerAddress{Address: "127.0.0.1"}}}
}

// writeDomain writes NAME.xml for the converted disks.
func (r *runner) writeDomain() error {
	spec := r.domainSpec()
	b, err := DomainXML(spec)
	if err != nil {
		return err
	}
	if err := writeNew(filepath.Join(r.outDir, manifest.DomainXMLFile(r.vm.Name)), b, r.owner.setFile); err != nil {
		return fmt.Errorf("cannot write domain XML: %w", err)
	}
	r.rep.Target = r.targetReport(spec)
	if k := r.tgt.t.KubeVirt; k != nil {
		var sizes []int64
		for _, d := range r.disks {
			if d.converted {
				sizes = append(sizes, d.info.VirtualSize)
			}
		}
		y, err := KubeVirtYAML(spec, k, sizes)
		if err != nil {
			return err
		}
		if err := writeNew(filepath.Join(r.outDir, manifest.KubeVirtFile(r.vm.Name)), y, r.owner.setFile); err != nil {
			return fmt.Errorf("cannot write the KubeVirt objects: %w", err)
		}
		r.kubevirt = true
	}
	return nil
}

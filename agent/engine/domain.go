package engine

import (
	"encoding/xml"
	"fmt"
	"path/filepath"
)

// DomainSpec is what the libvirt domain of a converted VM is made from.
type DomainSpec struct {
	Name     string
	MemoryMB int64  // default 2048
	CPUs     int    // default 2
	Firmware string // bios (default) | efi
	Disks    []DomainDisk
	NICs     int  // default 1
	Windows  bool // SATA disks and e1000e NICs: no virtio drivers in the guest yet
}

// DomainDisk is one disk of the domain, in boot order.
type DomainDisk struct {
	Path   string // absolute
	Format string // qcow2 | raw | vdi
}

type xmlDomain struct {
	XMLName  xml.Name `xml:"domain"`
	Type     string   `xml:"type,attr"`
	Name     string   `xml:"name"`
	Memory   xmlUnit  `xml:"memory"`
	VCPU     int      `xml:"vcpu"`
	OS       xmlOS    `xml:"os"`
	Features struct {
		ACPI struct{} `xml:"acpi"`
		APIC struct{} `xml:"apic"`
	} `xml:"features"`
	CPU struct {
		Mode string `xml:"mode,attr"`
	} `xml:"cpu"`
	Clock struct {
		Offset string `xml:"offset,attr"`
	} `xml:"clock"`
	OnPoweroff string     `xml:"on_poweroff"`
	OnReboot   string     `xml:"on_reboot"`
	OnCrash    string     `xml:"on_crash"`
	Devices    xmlDevices `xml:"devices"`
}

type xmlUnit struct {
	Unit  string `xml:"unit,attr"`
	Value int64  `xml:",chardata"`
}

type xmlOS struct {
	Firmware string `xml:"firmware,attr,omitempty"`
	Type     struct {
		Arch    string `xml:"arch,attr"`
		Machine string `xml:"machine,attr"`
		Value   string `xml:",chardata"`
	} `xml:"type"`
	Boot struct {
		Dev string `xml:"dev,attr"`
	} `xml:"boot"`
}

type xmlDevices struct {
	Disks      []xmlDisk  `xml:"disk"`
	Interfaces []xmlIface `xml:"interface"`
	Serial     xmlChar    `xml:"serial"`
	Console    xmlConsole `xml:"console"`
	Channel    struct {
		Type   string `xml:"type,attr"`
		Target struct {
			Type string `xml:"type,attr"`
			Name string `xml:"name,attr"`
		} `xml:"target"`
	} `xml:"channel"`
	RNG struct {
		Model   string `xml:"model,attr"`
		Backend struct {
			Model string `xml:"model,attr"`
			Value string `xml:",chardata"`
		} `xml:"backend"`
	} `xml:"rng"`
}

type xmlDisk struct {
	Type   string `xml:"type,attr"`
	Device string `xml:"device,attr"`
	Driver struct {
		Name string `xml:"name,attr"`
		Type string `xml:"type,attr"`
	} `xml:"driver"`
	Source struct {
		File string `xml:"file,attr"`
	} `xml:"source"`
	Target struct {
		Dev string `xml:"dev,attr"`
		Bus string `xml:"bus,attr"`
	} `xml:"target"`
}

type xmlIface struct {
	Type   string `xml:"type,attr"`
	Source struct {
		Network string `xml:"network,attr"`
	} `xml:"source"`
	Model struct {
		Type string `xml:"type,attr"`
	} `xml:"model"`
}

type xmlChar struct {
	Type string `xml:"type,attr"`
}

type xmlConsole struct {
	Type   string `xml:"type,attr"`
	Target struct {
		Type string `xml:"type,attr"`
	} `xml:"target"`
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
	d := xmlDomain{Type: "kvm", Name: spec.Name, OnPoweroff: "destroy", OnReboot: "restart", OnCrash: "destroy"}
	d.Memory = xmlUnit{Unit: "MiB", Value: spec.MemoryMB}
	if d.Memory.Value <= 0 {
		d.Memory.Value = 2048
	}
	d.VCPU = max(spec.CPUs, 1)
	if spec.CPUs <= 0 {
		d.VCPU = 2
	}
	if spec.Firmware == "efi" {
		d.OS.Firmware = "efi"
	}
	d.OS.Type.Arch, d.OS.Type.Machine, d.OS.Type.Value = "x86_64", "q35", "hvm"
	d.OS.Boot.Dev = "hd"
	d.CPU.Mode = "host-model"
	d.Clock.Offset = "utc"
	if spec.Windows {
		d.Clock.Offset = "localtime"
	}
	bus, prefix, nic := "virtio", "vd", "virtio"
	if spec.Windows {
		bus, prefix, nic = "sata", "sd", "e1000e"
	}
	for i, disk := range spec.Disks {
		if !filepath.IsAbs(disk.Path) {
			return nil, fmt.Errorf("cannot write domain XML: disk path %q is not absolute", disk.Path)
		}
		var x xmlDisk
		x.Type, x.Device = "file", "disk"
		x.Driver.Name, x.Driver.Type = "qemu", disk.Format
		x.Source.File = disk.Path
		x.Target.Dev, x.Target.Bus = prefix+string(rune('a'+i)), bus
		d.Devices.Disks = append(d.Devices.Disks, x)
	}
	for range max(spec.NICs, 1) {
		var x xmlIface
		x.Type, x.Source.Network, x.Model.Type = "network", "default", nic
		d.Devices.Interfaces = append(d.Devices.Interfaces, x)
	}
	d.Devices.Serial.Type = "pty"
	d.Devices.Console.Type, d.Devices.Console.Target.Type = "pty", "serial"
	d.Devices.Channel.Type = "unix"
	d.Devices.Channel.Target.Type, d.Devices.Channel.Target.Name = "virtio", "org.qemu.guest_agent.0"
	d.Devices.RNG.Model, d.Devices.RNG.Backend.Model, d.Devices.RNG.Backend.Value = "virtio", "random", "/dev/urandom"
	b, err := xml.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("cannot write domain XML: %w", err)
	}
	return append(b, '\n'), nil
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

package imgfmt

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// maxOVF bounds the descriptor we read: real ones are tens of KiB.
const maxOVF = 8 << 20

// OVFDescriptor is what an OVF envelope says about its (first) virtual system.
type OVFDescriptor struct {
	Name     string
	OSType   string // e.g. vmw:osType "debian12_64Guest", when present
	CPUs     int
	MemoryMB int64
	Firmware string // bios | efi
	// SecureBoot is VMware's bootOptions.efiSecureBootEnabled: the guest
	// was booting with UEFI Secure Boot on.
	SecureBoot bool
	Disks      []OVFDisk
	NICs       []OVFNIC
}

// OVFDisk is one disk of the DiskSection with its file reference resolved.
type OVFDisk struct {
	ID          string // ovf:diskId
	File        string // href of the referenced file, relative to the descriptor
	FileSize    int64  // ovf:size of the file, 0 when absent
	Capacity    int64  // bytes
	Format      string // ovf:format URL, e.g. ...vmdk.html#streamOptimized
	Compression string // ovf:compression of the file (gzip is not supported)
}

// OVFNIC is a network adapter of the virtual hardware.
type OVFNIC struct {
	Name    string
	Model   string // e.g. VmxNet3, E1000
	Network string
	// MAC is the adapter's address (rasd:Address, written by exports that
	// keep MACs), lower case; "" when the OVF has none or not a unicast
	// Ethernet address.
	MAC string
}

var macAddr = regexp.MustCompile(`^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$`)

type xmlEnvelope struct {
	XMLName    xml.Name     `xml:"Envelope"`
	References []xmlFile    `xml:"References>File"`
	Disks      []xmlDisk    `xml:"DiskSection>Disk"`
	Systems    []xmlSystem  `xml:"VirtualSystem"`
	Collection *xmlCollectn `xml:"VirtualSystemCollection"`
}

type xmlCollectn struct {
	Systems []xmlSystem `xml:"VirtualSystem"`
}

type xmlFile struct {
	ID          string `xml:"id,attr"`
	Href        string `xml:"href,attr"`
	Size        string `xml:"size,attr"`
	Compression string `xml:"compression,attr"`
}

type xmlDisk struct {
	ID       string `xml:"diskId,attr"`
	FileRef  string `xml:"fileRef,attr"`
	Capacity string `xml:"capacity,attr"`
	Units    string `xml:"capacityAllocationUnits,attr"`
	Format   string `xml:"format,attr"`
}

type xmlSystem struct {
	ID       string        `xml:"id,attr"`
	Name     string        `xml:"Name"`
	OS       xmlOS         `xml:"OperatingSystemSection"`
	Hardware []xmlHardware `xml:"VirtualHardwareSection"`
}

type xmlOS struct {
	OSType string `xml:"osType,attr"`
}

type xmlHardware struct {
	Items  []xmlItem   `xml:"Item"`
	Config []xmlConfig `xml:"Config"`
}

type xmlItem struct {
	ElementName     string `xml:"ElementName"`
	ResourceType    string `xml:"ResourceType"`
	ResourceSubType string `xml:"ResourceSubType"`
	VirtualQuantity string `xml:"VirtualQuantity"`
	AllocationUnits string `xml:"AllocationUnits"`
	HostResource    string `xml:"HostResource"`
	Connection      string `xml:"Connection"`
	Address         string `xml:"Address"`
}

type xmlConfig struct {
	Key   string `xml:"key,attr"`
	Value string `xml:"value,attr"`
}

// ParseOVF parses an OVF descriptor. Errors name the element at fault.
func ParseOVF(r io.Reader) (*OVFDescriptor, error) {
	var env xmlEnvelope
	dec := xml.NewDecoder(io.LimitReader(r, maxOVF))
	if err := dec.Decode(&env); err != nil {
		return nil, fmt.Errorf("ovf: cannot parse XML: %w", err)
	}
	systems := env.Systems
	if len(systems) == 0 && env.Collection != nil {
		systems = env.Collection.Systems
	}
	if len(systems) == 0 {
		return nil, errors.New("ovf: no VirtualSystem")
	}
	vs := systems[0]
	o := &OVFDescriptor{Name: strings.TrimSpace(vs.Name), OSType: vs.OS.OSType, Firmware: "bios"}
	if o.Name == "" {
		o.Name = vs.ID
	}
	files := map[string]xmlFile{}
	for _, f := range env.References {
		files[f.ID] = f
	}
	for i, d := range env.Disks {
		f, ok := files[d.FileRef]
		if !ok {
			return nil, fmt.Errorf("ovf: Disk %q (#%d): fileRef %q is not in References", d.ID, i+1, d.FileRef)
		}
		if err := checkHref(f.Href); err != nil {
			return nil, fmt.Errorf("ovf: File %q: %w", f.ID, err)
		}
		capacity, err := parseCapacity(d.Capacity, d.Units)
		if err != nil {
			return nil, fmt.Errorf("ovf: Disk %q: capacity: %w", d.ID, err)
		}
		var size int64
		if f.Size != "" {
			size, err = strconv.ParseInt(f.Size, 10, 64)
			if err != nil || size < 0 {
				return nil, fmt.Errorf("ovf: File %q: size %q is not a byte count", f.ID, f.Size)
			}
		}
		o.Disks = append(o.Disks, OVFDisk{ID: d.ID, File: f.Href, FileSize: size, Capacity: capacity, Format: d.Format, Compression: f.Compression})
	}
	for _, hw := range vs.Hardware {
		for _, it := range hw.Items {
			switch strings.TrimSpace(it.ResourceType) {
			case "3": // processor
				n, err := strconv.Atoi(strings.TrimSpace(it.VirtualQuantity))
				if err != nil || n < 1 || n > 4096 {
					return nil, fmt.Errorf("ovf: processor Item: VirtualQuantity %q is not a CPU count", it.VirtualQuantity)
				}
				o.CPUs = n
			case "4": // memory
				mb, err := parseMemoryMB(it.VirtualQuantity, it.AllocationUnits)
				if err != nil {
					return nil, fmt.Errorf("ovf: memory Item: %w", err)
				}
				o.MemoryMB = mb
			case "10": // ethernet adapter
				o.NICs = append(o.NICs, OVFNIC{Name: strings.TrimSpace(it.ElementName), Model: strings.TrimSpace(it.ResourceSubType), Network: strings.TrimSpace(it.Connection), MAC: unicastMAC(it.Address)})
			}
		}
		for _, c := range hw.Config {
			switch {
			case c.Key == "firmware" && strings.EqualFold(c.Value, "efi"):
				o.Firmware = "efi"
			case c.Key == "bootOptions.efiSecureBootEnabled" && strings.EqualFold(c.Value, "true"):
				o.SecureBoot = true
			}
		}
	}
	return o, nil
}

// unicastMAC is s as a lower-case MAC address when it is one a NIC may
// have (six hex octets, not multicast, not all zeros), else "": a hostile
// OVF's text never reaches the domain XML unless it is a plain address.
func unicastMAC(s string) string {
	s = strings.ToLower(strings.TrimSpace(strings.ReplaceAll(s, "-", ":")))
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 || hw[0]&1 != 0 || bytes.Equal(hw, make([]byte, 6)) {
		return ""
	}
	return hw.String()
}

// checkHref refuses file references that leave the descriptor's directory
// (or the archive) or point elsewhere than a local file.
func checkHref(href string) error {
	switch {
	case href == "":
		return errors.New("href is empty")
	case strings.Contains(href, "://"):
		return fmt.Errorf("href %q: only local files are supported", href)
	case strings.HasPrefix(href, "/"), strings.Contains(href, `\`):
		return fmt.Errorf("href %q: must be relative", href)
	}
	if c := path.Clean(href); c == ".." || strings.HasPrefix(c, "../") {
		return fmt.Errorf("href %q: must not leave the descriptor's directory", href)
	}
	return nil
}

// parseUnits reads an OVF "programmatic unit", e.g. "byte * 2^30", "byte",
// "MegaBytes", into a multiplier.
func parseUnits(u string) (int64, error) {
	s := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(u), " ", ""))
	switch s {
	case "", "byte", "bytes":
		return 1, nil
	case "kilobytes", "kb":
		return 1 << 10, nil
	case "megabytes", "mb":
		return 1 << 20, nil
	case "gigabytes", "gb":
		return 1 << 30, nil
	case "terabytes", "tb":
		return 1 << 40, nil
	}
	rest, ok := strings.CutPrefix(s, "byte*")
	if !ok {
		return 0, fmt.Errorf("unknown units %q", u)
	}
	if base, exp, ok := strings.Cut(rest, "^"); ok {
		b, err1 := strconv.ParseInt(base, 10, 64)
		e, err2 := strconv.ParseInt(exp, 10, 64)
		if err1 != nil || err2 != nil || b < 2 || e < 0 || float64(e)*math.Log2(float64(b)) > 62 {
			return 0, fmt.Errorf("unknown units %q", u)
		}
		m := int64(1)
		for range e {
			m *= b
		}
		return m, nil
	}
	m, err := strconv.ParseInt(rest, 10, 64)
	if err != nil || m < 1 {
		return 0, fmt.Errorf("unknown units %q", u)
	}
	return m, nil
}

func parseCapacity(v, units string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a number", v)
	}
	m, err := parseUnits(units)
	if err != nil {
		return 0, err
	}
	if n > 0 && m > math.MaxInt64/n {
		return 0, fmt.Errorf("%s %s is too large", v, units)
	}
	return n * m, nil
}

func parseMemoryMB(v, units string) (int64, error) {
	if strings.TrimSpace(units) == "" {
		units = "byte * 2^20" // the OVF default for memory is MB in practice
	}
	b, err := parseCapacity(v, units)
	if err != nil {
		return 0, fmt.Errorf("VirtualQuantity %q AllocationUnits %q: %w", v, units, err)
	}
	return b >> 20, nil
}

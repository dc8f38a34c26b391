package report

// Windows is what INSPECT read from a Windows guest's registry (the
// SOFTWARE and SYSTEM hives) and its system volume.
type Windows struct {
	ProductName string `json:"product_name,omitempty"` // "Windows Server 2022 Standard"
	Edition     string `json:"edition,omitempty"`      // EditionID: "ServerStandard", "Professional"
	// Version is major.minor ("10.0", "6.3"), Build the build number with
	// its update revision when known ("20348.2227"), DisplayVersion the
	// marketing one ("21H2").
	Version        string `json:"version,omitempty"`
	Build          string `json:"build,omitempty"`
	DisplayVersion string `json:"display_version,omitempty"`
	Arch           string `json:"arch,omitempty"`              // x86_64 | i386 | aarch64
	Hostname       string `json:"hostname,omitempty"`          // ComputerName
	Installation   string `json:"installation_type,omitempty"` // Server | Client (InstallationType; "Server Core" is Server)
	SystemRoot     string `json:"system_root,omitempty"`       // C:\Windows
	// Volume is the filesystem holding the system root, as the source VM
	// named it (/dev/sda2), and ControlSet the SYSTEM hive's current set.
	Volume     string `json:"volume,omitempty"`
	ControlSet string `json:"control_set,omitempty"`
	// VirtioDrivers are the virtio services already installed
	// (viostor, vioscsi, netkvm, ...): with viostor or vioscsi the guest
	// can boot from a virtio disk as it is.
	VirtioDrivers []string `json:"virtio_drivers,omitempty"`
	// VMwareTools lists the evidence of VMware Tools (registry keys, services).
	VMwareTools []string `json:"vmware_tools,omitempty"`
	// NICs are the interfaces with a static address (Tcpip\Parameters\Interfaces).
	NICs []WindowsNIC `json:"static_nics,omitempty"`
	// Blockers are why the guest cannot be converted safely now; each one
	// fails INSPECT.
	Blockers []Blocker `json:"blockers,omitempty"`
	// Notes are findings that do not block (a Fast Startup setting with no
	// hibernation file, pending file renames).
	Notes []string `json:"notes,omitempty"`
}

// WindowsNIC is one interface's static IPv4 configuration.
type WindowsNIC struct {
	ID        string   `json:"id"` // the interface GUID
	Addresses []string `json:"addresses"`
	Prefix    []int    `json:"prefix_lengths,omitempty"`
	Gateways  []string `json:"gateways,omitempty"`
	DNS       []string `json:"dns,omitempty"`
}

// Blocker is something in the guest that makes conversion unsafe, with
// what the admin must do in the source VM.
type Blocker struct {
	Kind   string `json:"kind"`   // bitlocker | dynamic-disk | hibernated | fast-startup | pending-updates
	Reason string `json:"reason"` // what was found, where
	Action string `json:"action"` // what to do in the source VM
}

package hivetest

// Windows describes a Windows installation as its SOFTWARE and SYSTEM
// hives record it: the fixture of INSPECT's tests.
type Windows struct {
	ProductName      string // "Windows Server 2022 Standard"
	EditionID        string
	InstallationType string // Server | Client | Server Core
	CurrentBuild     string
	UBR              uint32
	Major, Minor     uint32 // CurrentMajorVersionNumber; 0: only CurrentVersion (CurrentVersion field)
	CurrentVersion   string // "6.3" (also written on Windows 10+)
	DisplayVersion   string
	Arch             string // PROCESSOR_ARCHITECTURE: AMD64 | x86 | ARM64
	Hostname         string
	ControlSet       uint32 // Select\Current; 1 when 0
	VMwareTools      bool
	Virtio           []string // services: viostor, vioscsi, netkvm
	HiberbootEnabled bool
	RebootPending    bool
	StaticNICs       []NIC
}

// NIC is a static interface under Tcpip\Parameters\Interfaces.
type NIC struct {
	GUID      string
	Addresses []string
	Masks     []string
	Gateways  []string
	DNS       string // NameServer: "10.0.0.53,10.0.0.54"
}

// Software is the SOFTWARE hive.
func (w Windows) Software() []byte {
	root := &Key{Name: "ROOT"}
	cv := []Value{
		SZ("ProductName", w.ProductName), SZ("EditionID", w.EditionID),
		SZ("InstallationType", w.InstallationType), SZ("CurrentBuild", w.CurrentBuild),
		SZ("CurrentBuildNumber", w.CurrentBuild), SZ("CurrentVersion", w.CurrentVersion),
		SZ("SystemRoot", `C:\Windows`), SZ("PathName", `C:\Windows`),
	}
	if w.DisplayVersion != "" {
		cv = append(cv, SZ("DisplayVersion", w.DisplayVersion))
	}
	if w.UBR != 0 {
		cv = append(cv, DWord("UBR", w.UBR))
	}
	if w.Major != 0 {
		cv = append(cv, DWord("CurrentMajorVersionNumber", w.Major), DWord("CurrentMinorVersionNumber", w.Minor))
	}
	root.Set(`Microsoft\Windows NT\CurrentVersion`, cv...)
	root.Set(`Microsoft\Windows\CurrentVersion`, SZ("ProgramFilesDir", `C:\Program Files`))
	if w.VMwareTools {
		root.Set(`VMware, Inc.\VMware Tools`, SZ("InstallPath", `C:\Program Files\VMware\VMware Tools\`))
	}
	if w.RebootPending {
		root.Path(`Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending`)
	}
	return Build(root)
}

// System is the SYSTEM hive.
func (w Windows) System() []byte {
	root := &Key{Name: "ROOT"}
	n := w.ControlSet
	if n == 0 {
		n = 1
	}
	root.Set("Select", DWord("Current", n), DWord("Default", n), DWord("LastKnownGood", n))
	cs := "ControlSet00" + string(rune('0'+n))
	root.Set(cs+`\Control\ComputerName\ComputerName`, SZ("ComputerName", w.Hostname))
	root.Set(cs+`\Control\Session Manager\Environment`, SZ("PROCESSOR_ARCHITECTURE", w.Arch), ExpandSZ("windir", `%SystemRoot%`))
	hb := uint32(0)
	if w.HiberbootEnabled {
		hb = 1
	}
	root.Set(cs+`\Control\Session Manager\Power`, DWord("HiberbootEnabled", hb))
	root.Set(cs+`\Services\Tcpip\Parameters`, SZ("Hostname", w.Hostname))
	root.Set(cs+`\Services\disk`, DWord("Start", 0))
	for _, s := range w.Virtio {
		root.Set(cs+`\Services\`+s, DWord("Start", 0), ExpandSZ("ImagePath", `system32\drivers\`+s+`.sys`))
	}
	if w.VMwareTools {
		root.Set(cs+`\Services\VMTools`, DWord("Start", 2))
		root.Set(cs+`\Services\vmxnet3ndis6`, DWord("Start", 3))
	}
	for _, nic := range w.StaticNICs {
		root.Set(cs+`\Services\Tcpip\Parameters\Interfaces\`+nic.GUID,
			DWord("EnableDHCP", 0), MultiSZ("IPAddress", nic.Addresses...), MultiSZ("SubnetMask", nic.Masks...),
			MultiSZ("DefaultGateway", nic.Gateways...), SZ("NameServer", nic.DNS))
	}
	root.Set(cs+`\Services\Tcpip\Parameters\Interfaces\{00000000-dhcp-0000-0000-000000000000}`, DWord("EnableDHCP", 1))
	return Build(root)
}

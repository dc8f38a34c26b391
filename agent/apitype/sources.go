package apitype

// Source is one entry of ListSources: a source of the agent's registry
// (/etc/hyper2kvm/sources.d), never its password.
type Source struct {
	Name               string `json:"name"`
	Type               string `json:"type"`
	URL                string `json:"url"`
	Username           string `json:"username"`
	Datacenter         string `json:"datacenter,omitempty"`
	Thumbprint         string `json:"thumbprint,omitempty"`
	Insecure           bool   `json:"insecure,omitempty"`
	MaxParallelExports int    `json:"max_parallel_exports"`
	Description        string `json:"description,omitempty"`
	PasswordSet        bool   `json:"password_set"`
	// Error is set for a source file that is not valid (the file and
	// field); such a source cannot be used.
	Error string `json:"error,omitempty"`
}

// InventoryEntry is one item of BrowseSource: a datacenter or folder to
// open, or a VM with what a picker shows of it.
type InventoryEntry struct {
	Kind       string          `json:"kind"` // datacenter | folder | vm
	Name       string          `json:"name"`
	Path       string          `json:"path"` // what a manifest's load.vm takes
	Moref      string          `json:"moref"`
	UUID       string          `json:"uuid,omitempty"`
	PowerState string          `json:"power_state,omitempty"`
	GuestOS    string          `json:"guest_os,omitempty"`
	CPUs       int             `json:"cpus,omitempty"`
	MemoryMB   int64           `json:"memory_mb,omitempty"`
	Disks      []InventoryDisk `json:"disks,omitempty"`
	Template   bool            `json:"template,omitempty"`
}

// InventoryDisk is a disk of a listed VM.
type InventoryDisk struct {
	Label string `json:"label"`
	Bytes int64  `json:"bytes"`
}

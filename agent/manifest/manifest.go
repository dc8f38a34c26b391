// Package manifest is the manifest v1.0 model shared by the agent, the worker,
// the D-Bus API, the REST bridge and hyperctl: parsing (JSON and YAML),
// defaults, strict validation with field paths, and the JSON Schema.
package manifest

// Version is the only manifest version this package accepts.
const Version = "1.0"

// Manifest is a parsed manifest: either a single VM (Name and Pipeline set) or
// a batch (Batch true and VMs set).
type Manifest struct {
	Version  string `json:"version"`
	Name     string `json:"name,omitempty"`
	Priority *int   `json:"priority,omitempty"`
	Batch    bool   `json:"batch,omitempty"`
	// Concurrency bounds how many VMs of a batch run at once (default: the
	// agent's max_concurrent_jobs).
	Concurrency int        `json:"concurrency,omitempty"`
	VMs         []VM       `json:"vms,omitempty"`
	Pipeline    *Pipeline  `json:"pipeline,omitempty"`
	Resources   *Resources `json:"resources,omitempty"`
}

// VM is one entry of a batch manifest.
type VM struct {
	Name      string     `json:"name"`
	Priority  *int       `json:"priority,omitempty"`
	Pipeline  *Pipeline  `json:"pipeline"`
	Resources *Resources `json:"resources,omitempty"`
}

// Resources are the limits put on the job's transient unit. Empty fields
// take the agent's configured defaults.
type Resources struct {
	MemoryMax     string `json:"memory_max,omitempty"`      // e.g. "4G", systemd MemoryMax=
	CPUQuota      string `json:"cpu_quota,omitempty"`       // e.g. "200%", systemd CPUQuota=
	IOWeight      int    `json:"io_weight,omitempty"`       // 1..10000, systemd IOWeight=
	TasksMax      int    `json:"tasks_max,omitempty"`       // systemd TasksMax=
	RuntimeMaxSec int    `json:"runtime_max_sec,omitempty"` // systemd RuntimeMaxSec=
}

// Pipeline is LOAD -> INSPECT -> FIX -> CONVERT -> VALIDATE.
type Pipeline struct {
	Load     Load      `json:"load"`
	Inspect  *Inspect  `json:"inspect,omitempty"`
	Fix      *Fix      `json:"fix,omitempty"`
	Convert  *Convert  `json:"convert,omitempty"`
	Validate *Validate `json:"validate,omitempty"`
}

// Load names the source image.
type Load struct {
	SourceType string `json:"source_type"` // vmdk ova ovf vhd vhdx raw qcow2 (ami: refused)
	SourcePath string `json:"source_path"` // absolute, normalised
	SHA256     string `json:"sha256,omitempty"`
}

// Inspect controls the INSPECT stage.
type Inspect struct {
	Enabled  *bool `json:"enabled,omitempty"`   // default true
	DetectOS *bool `json:"detect_os,omitempty"` // default true
}

// Fix controls the FIX stage. A nil section is treated as its defaults.
type Fix struct {
	Enabled     *bool         `json:"enabled,omitempty"` // master switch, default true
	Backend     string        `json:"backend,omitempty"` // native | guestfs; default from agent config
	Fstab       *FstabFix     `json:"fstab,omitempty"`
	Grub        *Toggle       `json:"grub,omitempty"`
	Initramfs   *InitramfsFix `json:"initramfs,omitempty"`
	Network     *NetworkFix   `json:"network,omitempty"`
	VMwareTools *Toggle       `json:"vmware_tools,omitempty"` // enabled = remove them; default false
}

// Toggle is a fix with no options.
type Toggle struct {
	Enabled *bool `json:"enabled,omitempty"`
}

// FstabFix rewrites device names in fstab and crypttab.
type FstabFix struct {
	Enabled *bool  `json:"enabled,omitempty"`
	Mode    string `json:"mode,omitempty"` // stabilize-all (default) | bypath-only | noop
}

// InitramfsFix adds virtio drivers to the guest's initramfs.
type InitramfsFix struct {
	Enabled    *bool `json:"enabled,omitempty"`
	Regenerate *bool `json:"regenerate,omitempty"` // default true
}

// NetworkFix adapts the guest's network configuration.
type NetworkFix struct {
	Enabled  *bool  `json:"enabled,omitempty"`
	FixLevel string `json:"fix_level,omitempty"` // none | basic | moderate | full | aggressive
}

// Convert controls the CONVERT stage.
type Convert struct {
	OutputFormat string `json:"output_format,omitempty"` // qcow2 (default) | raw | vdi
	Compress     bool   `json:"compress,omitempty"`
	Compression  string `json:"compression,omitempty"` // zstd (default when compress) | zlib
	OutputPath   string `json:"output_path,omitempty"` // plain file name, default NAME.FORMAT
	OutputDir    string `json:"output_dir,omitempty"`  // absolute; default <output_dir>/<date>/<job id>
}

// Validate controls the VALIDATE stage.
type Validate struct {
	Enabled     *bool  `json:"enabled,omitempty"` // default true
	BootTest    bool   `json:"boot_test,omitempty"`
	BootTimeout int    `json:"boot_timeout,omitempty"` // seconds, default 300
	BootMarker  string `json:"boot_marker,omitempty"`  // default "login:"
	Compare     *bool  `json:"compare,omitempty"`      // default true when FIX is off
}

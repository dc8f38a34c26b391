// Package manifest is the manifest v1.0 model shared by the agent, the worker,
// the D-Bus API, the REST bridge and hyperctl: parsing (JSON and YAML),
// defaults, strict validation with field paths, and the JSON Schema.
package manifest

import "time"

// Version is the only manifest version this package accepts.
const Version = "1.0"

// The allowed values of the enumerated fields. They are functions returning
// fresh slices so that no caller can change what the validator accepts.

// SourceTypes are the allowed pipeline.load.source_type values.
func SourceTypes() []string {
	return []string{"vmdk", "ova", "ovf", "vhd", "vhdx", "raw", "qcow2", SourceVSphere}
}

// SourceVSphere is the source_type of a VM read from a registered vCenter
// or ESXi source (load.source) instead of a file.
const SourceVSphere = "vsphere"

// IsRemote says whether l reads a VM from a registered source, not a file.
func (l *Load) IsRemote() bool { return l.SourceType == SourceVSphere }

// FstabModes are the allowed pipeline.fix.fstab.mode values.
func FstabModes() []string { return []string{"stabilize-all", "bypath-only", "noop"} }

// FixLevels are the allowed pipeline.fix.network.fix_level values.
func FixLevels() []string { return []string{"none", "basic", "moderate", "full", "aggressive"} }

// OutputFormats are the allowed pipeline.convert.output_format values.
func OutputFormats() []string { return []string{"qcow2", "raw", "vdi"} }

// Compressions are the allowed pipeline.convert.compression values.
func Compressions() []string { return []string{"zstd", "zlib"} }

// Preallocations are the allowed pipeline.convert.preallocation values.
func Preallocations() []string { return []string{"off", "metadata", "falloc"} }

// Backends are the allowed pipeline.fix.backend values.
func Backends() []string { return []string{"auto", "native", "guestfs", "virt-v2v"} }

// QemuFormat maps a source_type to the format name qemu-img and
// imgfmt.Detect use for it ("" for an unknown source type).
func QemuFormat(sourceType string) string {
	switch sourceType {
	case "vhd":
		return "vpc"
	case "vmdk", "vhdx", "raw", "qcow2", "ova", "ovf":
		return sourceType
	}
	return ""
}

// SourceTypeOf is the source_type of a qemu format name as imgfmt.Detect
// gives it ("" for none): the inverse of QemuFormat.
func SourceTypeOf(qemu string) string {
	for _, st := range SourceTypes() {
		if QemuFormat(st) == qemu {
			return st
		}
	}
	return ""
}

// Bool reads an optional flag; nil is false. After SetDefaults no flag of
// a manifest is nil.
func Bool(p *bool) bool { return p != nil && *p }

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
	// Schedule is the window the job (every VM of a batch) may start in.
	Schedule *Schedule `json:"schedule,omitempty"`
	// Retry runs a job again after a failure that may pass (an I/O
	// error, a source temporarily unreadable), with backoff.
	Retry *Retry `json:"retry,omitempty"`
	// Notify is a webhook the submitter chooses (its host must be in the
	// agent's notify.allowed_hosts).
	Notify *Notify `json:"notify,omitempty"`
	// Placement says which hosts of a fleet may run the job: host names
	// (any one of them) and key=value labels of agent.yaml's host.labels
	// (all of them), e.g. ["datastore=ds01"]. None: any host.
	Placement []string `json:"placement,omitempty"`
}

// Notify is a manifest's webhook.
type Notify struct {
	URL    string   `json:"url"`
	Events []string `json:"events,omitempty"` // none: all
}

// Retry says how often and how late a job is run again after a
// retryable failure.
type Retry struct {
	MaxAttempts int    `json:"max_attempts,omitempty"` // runs in all, 1..20 (1: no retry)
	Backoff     string `json:"backoff,omitempty"`      // exponential (default) | fixed
	Initial     string `json:"initial,omitempty"`      // first wait, Go duration; default 30s
	Max         string `json:"max,omitempty"`          // longest wait; default 1h
}

// Delay is how long to wait before run attempt+1 after run attempt
// (1-based) failed. Call it on a validated manifest.
func (r *Retry) Delay(attempt int) time.Duration {
	initial, maxWait := 30*time.Second, time.Hour
	if d, err := time.ParseDuration(r.Initial); err == nil && d > 0 {
		initial = d
	}
	if d, err := time.ParseDuration(r.Max); err == nil && d > 0 {
		maxWait = d
	}
	d := initial
	if r.Backoff != "fixed" {
		for i := 1; i < attempt && d < maxWait; i++ {
			d *= 2
		}
	}
	return min(d, maxWait)
}

// Schedule is a maintenance window: a job starts no earlier than
// NotBefore and fails, never started, once NotAfter passes. Both are
// RFC 3339 times; either may be empty.
type Schedule struct {
	NotBefore string `json:"not_before,omitempty"`
	NotAfter  string `json:"not_after,omitempty"`
}

// Window is the schedule as times; a zero time is no bound. Call it on
// a validated manifest.
func (s *Schedule) Window() (notBefore, notAfter time.Time) {
	if s == nil {
		return
	}
	notBefore, _ = time.Parse(time.RFC3339, s.NotBefore)
	notAfter, _ = time.Parse(time.RFC3339, s.NotAfter)
	return
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
	// Target maps networks and storage and defines the domain in
	// libvirt (target.go).
	Target *Target `json:"target,omitempty"`
	// Hooks run at the stage boundaries (hooks.go, docs/WORKFLOW.md).
	Hooks *Hooks `json:"hooks,omitempty"`
}

// Load names the source image.
type Load struct {
	SourceType string `json:"source_type"` // vmdk ova ovf vhd vhdx raw qcow2 (ami: refused)
	SourcePath string `json:"source_path"` // absolute, normalised
	SHA256     string `json:"sha256,omitempty"`
	// AllowReferences names files outside the source's directory that the
	// source may refer to (a qcow2 backing or data file, a VMDK extent or
	// parent, an OVF disk): absolute, normalised paths. Every other file an
	// image refers to must lie beside the source. The files are still opened
	// without following symbolic links and read only if the submitter could.
	AllowReferences []string `json:"allow_references,omitempty"`

	// The fields of source_type "vsphere" (docs/SOURCES.md): Source names
	// a file of /etc/hyper2kvm/sources.d, never a credential; exactly one
	// of VM (an inventory path), VMMoref and VMUUID names the VM.
	Source  string `json:"source,omitempty"`
	VM      string `json:"vm,omitempty"`
	VMMoref string `json:"vm_moref,omitempty"`
	VMUUID  string `json:"vm_uuid,omitempty"`
	// Snapshot allows a running VM: a snapshot is exported and removed.
	Snapshot bool `json:"snapshot,omitempty"`
}

// Inspect controls the INSPECT stage.
type Inspect struct {
	Enabled  *bool `json:"enabled,omitempty"`   // default true
	DetectOS *bool `json:"detect_os,omitempty"` // default true
}

// Fix controls the FIX stage. A nil section is treated as its defaults.
type Fix struct {
	Enabled     *bool         `json:"enabled,omitempty"` // master switch, default true
	Backend     string        `json:"backend,omitempty"` // auto | native | guestfs | virt-v2v; default from agent config
	Fstab       *FstabFix     `json:"fstab,omitempty"`
	Grub        *Toggle       `json:"grub,omitempty"`
	Initramfs   *InitramfsFix `json:"initramfs,omitempty"`
	Network     *NetworkFix   `json:"network,omitempty"`
	VMwareTools *Toggle       `json:"vmware_tools,omitempty"` // enabled = remove them; default false
}

// AnyEnabled says whether f switches on at least one fix; a nil f or a
// fix left out is on by default (vmware_tools is off by default). With
// none, FIX has nothing it could change.
func (f *Fix) AnyEnabled() bool {
	if f == nil {
		return true
	}
	if f.Enabled != nil && !*f.Enabled {
		return false
	}
	on := func(b *bool, def bool) bool { return b == nil && def || b != nil && *b }
	return f.Fstab == nil || on(f.Fstab.Enabled, true) ||
		f.Grub == nil || on(f.Grub.Enabled, true) ||
		f.Network == nil || on(f.Network.Enabled, true) ||
		f.Initramfs == nil || on(f.Initramfs.Enabled, true) ||
		f.VMwareTools != nil && on(f.VMwareTools.Enabled, false)
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
	// Preallocation of the output: off (default: sparse), metadata (qcow2
	// only: its tables written first) or falloc (the whole disk reserved
	// on the output file system). Not with compress.
	Preallocation string `json:"preallocation,omitempty"`
	OutputPath    string `json:"output_path,omitempty"` // plain file name, default NAME.FORMAT
	OutputDir     string `json:"output_dir,omitempty"`  // absolute; default <output_dir>/<date>/<job id>
	// Disks names or skips individual disks of an OVA/OVF that holds several
	// (see OutputFor); only allowed for those source types.
	Disks []DiskOutput `json:"disks,omitempty"`
}

// DiskOutput overrides the output of one disk of a multi-disk OVA/OVF.
type DiskOutput struct {
	ID         string `json:"id"`                    // the disk's ovf:diskId in the OVF DiskSection, e.g. "vmdisk2"
	OutputPath string `json:"output_path,omitempty"` // plain file name; default see Convert.OutputFor
	Skip       bool   `json:"skip,omitempty"`        // do not convert this disk
}

// Validate controls the VALIDATE stage.
type Validate struct {
	Enabled     *bool  `json:"enabled,omitempty"` // default true
	BootTest    bool   `json:"boot_test,omitempty"`
	BootTimeout int    `json:"boot_timeout,omitempty"` // seconds, default 300
	BootMarker  string `json:"boot_marker,omitempty"`  // default "login:"
	Compare     *bool  `json:"compare,omitempty"`      // default true when FIX is off
	Checksum    *bool  `json:"checksum,omitempty"`     // sha256 of every output; default true
}

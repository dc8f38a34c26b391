// Package report is the versioned JSON report a conversion writes: one per VM
// job, and one per batch listing its VMs. docs/REPORT.md documents it.
package report

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// Version of the report format; bump on incompatible change.
const Version = "1"

// Status is how a job's pipeline ended.
type Status string

const (
	Completed Status = "completed"
	Failed    Status = "failed"
	// Cancelled: stopped from outside (an API cancel, or the unit's
	// SIGTERM); the agent decides whether that was an interruption.
	Cancelled Status = "cancelled"
)

// Report is the result of one job's pipeline.
type Report struct {
	ReportVersion string     `json:"report_version"`
	JobID         string     `json:"job_id"`
	Name          string     `json:"name"`
	Status        Status     `json:"status"`
	StartedAt     time.Time  `json:"started_at"`
	FinishedAt    time.Time  `json:"finished_at"`
	Source        Source     `json:"source"`
	Stages        []Stage    `json:"stages"`
	Guest         *Guest     `json:"guest,omitempty"`   // INSPECT's findings
	Changes       []Change   `json:"changes,omitempty"` // every FIX applied, before/after
	Artifacts     []Artifact `json:"artifacts,omitempty"`
	Warnings      []string   `json:"warnings,omitempty"`
	Error         *Failure   `json:"error,omitempty"`
	// Target is the domain as written (and defined in libvirt when
	// pipeline.target.libvirt asked): UUID, NICs, firmware, storage.
	Target *Target `json:"target,omitempty"`
	// Preflight lists the checks run before the job wrote anything and
	// after INSPECT (docs/WORKFLOW.md); Hooks the hooks run at the stage
	// boundaries, with their output.
	Preflight []Check   `json:"preflight,omitempty"`
	Hooks     []HookRun `json:"hooks,omitempty"`
	// ReportPath is where this report was written (empty when it could not
	// be, e.g. because a report.json from an earlier run was in the way).
	ReportPath string `json:"report_path,omitempty"`
}

// Source describes the input as LOAD found it.
type Source struct {
	Path     string `json:"path"`
	Type     string `json:"type"`            // manifest's source_type
	Detected string `json:"detected_format"` // qemu-img format detected from the bytes
	Disks    []Disk `json:"disks,omitempty"` // one per disk (an OVA may have several)
	OVF      *OVF   `json:"ovf,omitempty"`
	SHA256   string `json:"sha256,omitempty"` // when verified
	// Hardware is the VM's hardware read from a remote source's API.
	Hardware *Hardware `json:"hardware,omitempty"`
}

// Disk is one source disk.
type Disk struct {
	ID          string `json:"id"`
	Path        string `json:"path"`
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtual_size"`
	ActualSize  int64  `json:"actual_size,omitempty"`
	Subformat   string `json:"subformat,omitempty"` // e.g. VMDK createType
}

// OVF is what the OVF descriptor says about the VM.
type OVF struct {
	Name     string `json:"name"`
	CPUs     int    `json:"cpus,omitempty"`
	MemoryMB int64  `json:"memory_mb,omitempty"`
	Firmware string `json:"firmware,omitempty"` // bios | efi
	// SecureBoot: the source booted with UEFI Secure Boot.
	SecureBoot bool     `json:"secure_boot,omitempty"`
	Disks      []string `json:"disks,omitempty"`
	NICs       []NIC    `json:"nics,omitempty"`
}

// NIC is a network adapter from the OVF.
type NIC struct {
	Name    string `json:"name"`
	Model   string `json:"model,omitempty"`
	Network string `json:"network,omitempty"`
	MAC     string `json:"mac,omitempty"`
}

// Target is the converted VM's domain: what the XML says and, when it was
// defined, where.
type Target struct {
	Domain     string      `json:"domain"`
	UUID       string      `json:"uuid"`
	Firmware   string      `json:"firmware"` // bios | efi
	SecureBoot bool        `json:"secure_boot,omitempty"`
	Loader     string      `json:"loader,omitempty"`         // OVMF code, efi only
	NVRAM      string      `json:"nvram_template,omitempty"` // OVMF vars template
	Graphics   string      `json:"graphics,omitempty"`       // vnc | spice
	NICs       []TargetNIC `json:"nics"`
	// Libvirt is set when the domain was defined (or its disks placed)
	// through libvirt.
	Libvirt *Libvirt `json:"libvirt,omitempty"`
}

// TargetNIC is one NIC of the domain and the source network it came from.
type TargetNIC struct {
	Source  string `json:"source_network,omitempty"`
	MAC     string `json:"mac,omitempty"` // the source's, or the one libvirt chose when defined
	Bridge  string `json:"bridge,omitempty"`
	Network string `json:"network,omitempty"`
}

// Libvirt says what the job did in libvirt.
type Libvirt struct {
	URI       string   `json:"uri"`
	Defined   bool     `json:"defined"`
	Started   bool     `json:"started,omitempty"`
	Autostart bool     `json:"autostart,omitempty"`
	Pool      string   `json:"pool,omitempty"`
	Volumes   []string `json:"volumes,omitempty"` // paths of the uploaded volumes
	// Emulated: libvirt has no KVM, so the domain was defined with type
	// qemu (TCG) rather than kvm.
	Emulated bool `json:"emulated,omitempty"`
}

// Stage is one pipeline stage's outcome.
type Stage struct {
	Name      string    `json:"name"`
	Status    string    `json:"status"` // ok | failed | skipped
	StartedAt time.Time `json:"started_at"`
	Seconds   float64   `json:"duration_seconds"`
	Result    any       `json:"result,omitempty"`
	Error     string    `json:"error,omitempty"`
	Reason    string    `json:"reason,omitempty"` // why skipped
}

// Artifact is a file the job produced.
type Artifact struct {
	Path   string `json:"path"`
	Kind   string `json:"kind"` // disk | domain-xml | console-log
	Format string `json:"format,omitempty"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"`
}

// Check is one pre-flight check: ok, warning (the job goes on, the
// report says it) or blocker (the job fails before any write).
type Check struct {
	Name    string `json:"name"`
	Status  string `json:"status"` // ok | warning | blocker | skipped
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"` // what to do about a warning or blocker
}

// HookRun is one hook run at a stage boundary.
type HookRun struct {
	Point    string  `json:"point"` // pre_load post_inspect pre_fix post_fix post_convert post_validate
	Type     string  `json:"type"`  // script | http
	Target   string  `json:"target"`
	Status   string  `json:"status"` // ok | failed
	Seconds  float64 `json:"duration_seconds"`
	Output   string  `json:"output,omitempty"` // the script's output (the end of it) or the HTTP status
	Error    string  `json:"error,omitempty"`
	Continue bool    `json:"continue_on_error,omitempty"`
}

// Failure says which stage failed and why.
type Failure struct {
	Stage   string `json:"stage"`
	Message string `json:"message"`
}

// Read loads a report.json, refusing a report_version this code does not know.
func Read(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read report: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("cannot read report %s: %w", path, err)
	}
	if r.ReportVersion != Version {
		return nil, fmt.Errorf("cannot read report %s: report_version %q, this program reads %q", path, r.ReportVersion, Version)
	}
	return &r, nil
}

// Stage returns the named stage, or nil when it did not run.
func (r *Report) Stage(name string) *Stage {
	for i := range r.Stages {
		if r.Stages[i].Name == name {
			return &r.Stages[i]
		}
	}
	return nil
}

// Disks returns the disk artifacts, in disk order.
func (r *Report) Disks() []Artifact {
	var out []Artifact
	for _, a := range r.Artifacts {
		if a.Kind == "disk" {
			out = append(out, a)
		}
	}
	return out
}

// Hardware is a VM's virtual hardware as its hypervisor's API reports it
// (load.source_type vsphere), not guessed: what domain.xml is made from.
type Hardware struct {
	Name           string         `json:"name"`
	Moref          string         `json:"moref,omitempty"`
	UUID           string         `json:"uuid,omitempty"`
	GuestOS        string         `json:"guest_os,omitempty"` // the hypervisor's guest id, e.g. "ubuntu64Guest"
	CPUs           int            `json:"cpus"`
	CoresPerSocket int            `json:"cores_per_socket,omitempty"`
	MemoryMB       int64          `json:"memory_mb"`
	Firmware       string         `json:"firmware"` // bios | efi
	SecureBoot     bool           `json:"secure_boot,omitempty"`
	PowerState     string         `json:"power_state,omitempty"`
	Disks          []HardwareDisk `json:"disks"` // in boot order: controller type, bus, unit
	NICs           []HardwareNIC  `json:"nics,omitempty"`
	// Snapshot is the snapshot the disks were exported from (a running
	// VM with load.snapshot), removed after the export.
	Snapshot string `json:"snapshot,omitempty"`
	// ExportMethod is how the disks were read: "nfc" (an HttpNfcLease)
	// or "datastore" (the datastore's /folder service).
	ExportMethod string `json:"export_method,omitempty"`
	// Overlapped says the disks were converted while they downloaded
	// (flat datastore disks, INSPECT and FIX off: docs/SOURCES.md).
	Overlapped bool `json:"overlapped,omitempty"`
}

// HardwareDisk is one virtual disk of Hardware.
type HardwareDisk struct {
	Label      string `json:"label"`
	Controller string `json:"controller"` // e.g. "scsi0:1", "sata0:0", "nvme0:0", "ide0:1"
	Capacity   int64  `json:"capacity"`   // bytes
	File       string `json:"file"`       // e.g. "[datastore1] web01/web01.vmdk"
	ID         string `json:"id"`         // the disk's id in the job (report source.disks[].id)
}

// HardwareNIC is one network adapter of Hardware.
type HardwareNIC struct {
	Label   string `json:"label"`
	MAC     string `json:"mac"`
	Network string `json:"network,omitempty"`
	Model   string `json:"model,omitempty"` // e.g. "vmxnet3", "e1000e"
}

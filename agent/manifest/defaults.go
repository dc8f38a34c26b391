package manifest

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Documented defaults (docs/MANIFEST.md).
const (
	DefaultOutputFormat = "qcow2"
	DefaultCompression  = "zstd"
	DefaultFstabMode    = "stabilize-all"
	DefaultFixLevel     = "basic"
	DefaultBootTimeout  = 300 // seconds
	DefaultBootMarker   = "login:"
)

func ptr[T any](v T) *T { return &v }

func setBool(p **bool, v bool) {
	if *p == nil {
		*p = ptr(v)
	}
}

// SetDefaults fills every absent section and optional value with its
// documented default, so that the engine can dereference everything without
// nil checks. In a batch, each VM without its own priority takes the
// batch's, and each resource limit the VM leaves empty takes the batch's.
// Values that are set are kept, valid or not; SetDefaults is idempotent.
// Fields whose default belongs to the agent's configuration stay empty:
// fix.backend, convert.output_dir and the resource limits.
func (m *Manifest) SetDefaults() {
	if m == nil {
		return
	}
	if m.Version == "" {
		m.Version = Version
	}
	if m.Priority == nil {
		m.Priority = ptr(0)
	}
	if m.Resources == nil {
		m.Resources = &Resources{}
	}
	if m.Batch {
		for i := range m.VMs {
			vm := &m.VMs[i]
			if vm.Priority == nil {
				vm.Priority = ptr(*m.Priority)
			}
			vm.Resources = inheritResources(vm.Resources, m.Resources)
			if vm.Pipeline == nil {
				vm.Pipeline = &Pipeline{}
			}
			vm.Pipeline.setDefaults(vm.Name)
		}
		return
	}
	if m.Pipeline == nil {
		m.Pipeline = &Pipeline{}
	}
	if m.Name == "" {
		m.Name = defaultName(&m.Pipeline.Load)
	}
	m.Pipeline.setDefaults(m.Name)
}

// nameFromSource is the default name of a single-VM manifest: the source
// file's name without its extension ("/data/web01.vmdk" -> "web01"), or ""
// when that is not a valid name. The original product did not require a
// name; this keeps its manifests working.
func nameFromSource(sourcePath string) string {
	base := filepath.Base(sourcePath)
	stem := strings.TrimSuffix(base, filepath.Ext(base))
	if sourcePath == "" || !nameRE.MatchString(stem) {
		return ""
	}
	return stem
}

// inheritResources returns own with every empty limit taken from batch.
func inheritResources(own, batch *Resources) *Resources {
	r := Resources{}
	if own != nil {
		r = *own
	}
	if batch != nil {
		if r.MemoryMax == "" {
			r.MemoryMax = batch.MemoryMax
		}
		if r.CPUQuota == "" {
			r.CPUQuota = batch.CPUQuota
		}
		if r.IOWeight == 0 {
			r.IOWeight = batch.IOWeight
		}
		if r.TasksMax == 0 {
			r.TasksMax = batch.TasksMax
		}
		if r.RuntimeMaxSec == 0 {
			r.RuntimeMaxSec = batch.RuntimeMaxSec
		}
	}
	return &r
}

func (p *Pipeline) setDefaults(name string) {
	if p.Inspect == nil {
		p.Inspect = &Inspect{}
	}
	setBool(&p.Inspect.Enabled, true)
	setBool(&p.Inspect.DetectOS, true)

	if p.Fix == nil {
		p.Fix = &Fix{}
	}
	f := p.Fix
	setBool(&f.Enabled, true)
	if f.Fstab == nil {
		f.Fstab = &FstabFix{}
	}
	setBool(&f.Fstab.Enabled, true)
	if f.Fstab.Mode == "" {
		f.Fstab.Mode = DefaultFstabMode
	}
	if f.Grub == nil {
		f.Grub = &Toggle{}
	}
	setBool(&f.Grub.Enabled, true)
	if f.Initramfs == nil {
		f.Initramfs = &InitramfsFix{}
	}
	setBool(&f.Initramfs.Enabled, true)
	setBool(&f.Initramfs.Regenerate, true)
	if f.Network == nil {
		f.Network = &NetworkFix{}
	}
	setBool(&f.Network.Enabled, true)
	if f.Network.FixLevel == "" {
		f.Network.FixLevel = DefaultFixLevel
	}
	if f.VMwareTools == nil {
		f.VMwareTools = &Toggle{}
	}
	setBool(&f.VMwareTools.Enabled, false)

	if p.Convert == nil {
		p.Convert = &Convert{}
	}
	c := p.Convert
	if c.OutputFormat == "" {
		c.OutputFormat = DefaultOutputFormat
	}
	if c.Compress && c.Compression == "" {
		c.Compression = DefaultCompression
	}
	if c.OutputPath == "" {
		c.OutputPath = defaultOutputPath(name, c)
	}
	// target.storage.dir is where the disks go: the output directory, so
	// that every check of convert.output_dir applies to it.
	if t := p.Target; c.OutputDir == "" && t != nil && t.Storage != nil && t.Storage.Dir != "" {
		c.OutputDir = t.Storage.Dir
	}

	if p.Validate == nil {
		p.Validate = &Validate{}
	}
	v := p.Validate
	setBool(&v.Enabled, true)
	if v.BootTimeout == 0 {
		v.BootTimeout = DefaultBootTimeout
	}
	if v.BootMarker == "" {
		v.BootMarker = DefaultBootMarker
	}
	// Comparing with the source only makes sense when nothing changed it:
	// FIX off, or on with every fix off (FIX then does not run).
	setBool(&v.Compare, !f.AnyEnabled())
	setBool(&v.Checksum, true)
}

// FormatExt is the file name extension (without the dot) written for an
// output format.
func FormatExt(format string) string {
	if format == "" {
		format = DefaultOutputFormat
	}
	return format
}

func defaultOutputPath(name string, c *Convert) string {
	if c.OutputPath != "" {
		return c.OutputPath
	}
	return name + "." + FormatExt(c.OutputFormat)
}

// OutputFor returns the output file name of the source's disk number index
// (0-based, in the order the OVF lists them; a single-disk source has only
// disk 0) whose ovf:diskId is diskID, and false when that disk is skipped.
// The first disk goes to output_path; disk N (N >= 1) goes to output_path
// with "-disk<N+1>" before its extension ("web01-disk2.qcow2"); an entry of
// disks with the same id overrides both. Call it after SetDefaults.
func (c *Convert) OutputFor(index int, diskID string) (string, bool) {
	for _, d := range c.Disks {
		if d.ID != "" && d.ID == diskID {
			if d.Skip {
				return "", false
			}
			if d.OutputPath != "" {
				return d.OutputPath, true
			}
			break
		}
	}
	if index == 0 {
		return c.OutputPath, true
	}
	ext := filepath.Ext(c.OutputPath)
	stem := strings.TrimSuffix(c.OutputPath, ext)
	return stem + "-disk" + strconv.Itoa(index+1) + ext, true
}

// Split turns a batch into one single-VM manifest per VM, in order, each
// with the batch's version and, where the VM sets none, the batch's priority
// and resource limits. The results share nothing with m. A single-VM
// manifest is returned as is (the slice holds m itself).
func (m *Manifest) Split() []*Manifest {
	if m == nil {
		return nil
	}
	if !m.Batch {
		return []*Manifest{m}
	}
	out := make([]*Manifest, 0, len(m.VMs))
	for _, vm := range m.VMs {
		one := &Manifest{Version: m.Version, Name: vm.Name}
		if m.Schedule != nil {
			sc := *m.Schedule
			one.Schedule = &sc
		}
		if m.Retry != nil {
			rt := *m.Retry
			one.Retry = &rt
		}
		one.Placement = slices.Clone(m.Placement)
		if m.Notify != nil {
			n := Notify{URL: m.Notify.URL, Events: slices.Clone(m.Notify.Events)}
			one.Notify = &n
		}
		switch {
		case vm.Priority != nil:
			one.Priority = ptr(*vm.Priority)
		case m.Priority != nil:
			one.Priority = ptr(*m.Priority)
		}
		if vm.Resources != nil || m.Resources != nil {
			one.Resources = inheritResources(vm.Resources, m.Resources)
		}
		one.Pipeline = clonePipeline(vm.Pipeline)
		out = append(out, one)
	}
	return out
}

func clonePipeline(p *Pipeline) *Pipeline {
	if p == nil {
		return nil
	}
	// The model is plain data; a JSON round trip is a faithful deep copy.
	b, err := json.Marshal(p)
	if err != nil {
		return nil
	}
	var c Pipeline
	if err := json.Unmarshal(b, &c); err != nil {
		return nil
	}
	return &c
}

// MemoryMaxBytes is memory_max in bytes for systemd's MemoryMax= property,
// given the machine's RAM for percentages; "infinity" is math.MaxUint64 and
// an empty value is 0 with ok false (use the agent's default).
func (r *Resources) MemoryMaxBytes(physical uint64) (bytes uint64, ok bool) {
	if r == nil || r.MemoryMax == "" {
		return 0, false
	}
	b, err := parseMemoryMax(r.MemoryMax, physical)
	return b, err == nil
}

// CPUQuotaPerSecUSec is cpu_quota as systemd's CPUQuotaPerSecUSec property
// (microseconds of CPU time per second: "50%" is 500000); ok is false when
// unset or invalid.
func (r *Resources) CPUQuotaPerSecUSec() (usec uint64, ok bool) {
	if r == nil || r.CPUQuota == "" {
		return 0, false
	}
	pct, err := parseCPUQuota(r.CPUQuota)
	if err != nil {
		return 0, false
	}
	return uint64(pct * 10000), true
}

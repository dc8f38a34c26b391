package manifest

import (
	"fmt"
	"github.com/hyper2kvm/hyper2kvm/agent/notify"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Problem is one thing wrong with a manifest: the field's path
// ("pipeline.fix.fstab.mode", "vms[2].pipeline.load.source_path") and what
// is wrong with it, saying what is allowed.
type Problem struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

// String reads "path: message", e.g. "pipeline.load.source_type: is required".
func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// Problems is every problem of a manifest; as an error it reads one problem
// per line. Validation always reports all of them at once.
type Problems []Problem

func (ps Problems) Error() string {
	return strings.Join(ps.Strings(), "\n")
}

// Strings returns each problem as "path: message".
func (ps Problems) Strings() []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// Err returns ps as an error, or nil when there are none (a nil Problems
// stored in an error interface would not compare equal to nil).
func (ps Problems) Err() error {
	if len(ps) == 0 {
		return nil
	}
	return ps
}

var (
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	diskIDRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	sha256RE   = regexp.MustCompile(`^[0-9A-Fa-f]{64}$`)
	memoryRE   = regexp.MustCompile(`^(?:([0-9]+(?:\.[0-9]+)?)([KMGTPE]?)|([0-9]+(?:\.[0-9]+)?)%|infinity)$`)
	cpuQuotaRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]{1,2})?)%$`)
)

// Limits checked by Validate.
const (
	MinPriority    = -100
	MaxPriority    = 100
	MaxIOWeight    = 10000
	MaxBootTimeout = 86400 // a day; anything longer is a typo for minutes
)

const nameRule = "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit (it names files and units)"

// Validate checks a manifest built in Go (the dashboard's and hyperctl's
// builders) with every rule that can be checked on the typed model: required
// fields, allowed values, paths, names, ranges and the batch/single shape.
// Parse runs it too, after the checks only the text can have (unknown
// fields, wrong types). It does not look at files (see CheckFiles) and does
// not change m. It returns nil when m is valid (and a nil m is a problem).
//
// It is a method because the package-level name Validate is the VALIDATE
// stage's type.
func (m *Manifest) Validate() Problems {
	ps, more := m.validate()
	if len(ps) == 0 {
		return nil
	}
	return capProblems(ps, more)
}

// validate is Validate with at most MaxProblems problems, and how many
// more it found.
func (m *Manifest) validate() (Problems, int) {
	v := validator{}
	if m == nil {
		v.add("", "manifest is empty")
		return v.ps, 0
	}
	switch {
	case m.Version == "":
		v.add("version", fmt.Sprintf("is required (%q)", Version))
	case m.Version != Version:
		v.add("version", fmt.Sprintf("unsupported version %q; the only manifest version is %q", truncate(m.Version, maxQuote), Version))
	}
	v.priority("priority", m.Priority)
	v.schedule("schedule", m.Schedule)
	v.retry("retry", m.Retry)
	v.placement("placement", m.Placement)
	if m.Notify != nil {
		if err := notify.CheckURL(m.Notify.URL, nil, false); err != nil {
			v.add("notify.url", err.Error())
		}
		if err := notify.CheckEvents(m.Notify.Events); err != nil {
			v.add("notify.events", err.Error())
		}
	}
	v.resources("resources", m.Resources)
	if m.Concurrency < 0 {
		v.add("concurrency", "must be 0 (the agent's max_concurrent_jobs) or more")
	}
	if m.Batch {
		v.batch(m)
	} else {
		if len(m.VMs) > 0 {
			v.add("vms", `is only allowed in a batch manifest ("batch": true)`)
		}
		if m.Concurrency != 0 {
			v.add("concurrency", `is only allowed in a batch manifest ("batch": true)`)
		}
		if m.Name != "" || m.Pipeline == nil || defaultName(&m.Pipeline.Load) == "" {
			v.name("name", m.Name, true)
		}
		if m.Pipeline == nil {
			v.add("pipeline", "is required")
		} else {
			v.pipeline("pipeline", m.Pipeline, m.Name)
		}
	}
	return v.ps, v.more
}

type validator struct {
	ps   Problems
	more int // past MaxProblems, counted only
}

func (v *validator) add(path, msg string) {
	if len(v.ps) >= MaxProblems {
		v.more++
		return
	}
	v.ps = append(v.ps, Problem{Path: path, Message: msg})
}

func (v *validator) batch(m *Manifest) {
	if m.Pipeline != nil {
		v.add("pipeline", "is not allowed in a batch manifest; give each entry of vms its own pipeline")
	}
	v.name("name", m.Name, false)
	if len(m.VMs) == 0 {
		v.add("vms", "is required: a batch manifest lists at least one VM")
	}
	firstUse := map[string]int{}
	outputs := map[string]int{} // output_dir + file -> first VM writing it
	for i, vm := range m.VMs {
		p := fmt.Sprintf("vms[%d]", i)
		v.name(p+".name", vm.Name, true)
		if vm.Name != "" {
			if j, dup := firstUse[vm.Name]; dup {
				v.add(p+".name", fmt.Sprintf("%q is already the name of vms[%d]; names in a batch must be unique", truncate(vm.Name, 80), j))
			} else {
				firstUse[vm.Name] = i
			}
		}
		v.priority(p+".priority", vm.Priority)
		v.resources(p+".resources", vm.Resources)
		if vm.Pipeline == nil {
			v.add(p+".pipeline", "is required")
			continue
		}
		v.pipeline(p+".pipeline", vm.Pipeline, vm.Name)
		// VMs may share an output_dir (their side files are named after
		// them), but not a file name: the second would fail on the
		// first's file. The default output_dir is per job and cannot.
		if c := vm.Pipeline.Convert; c != nil && c.OutputDir != "" && filepath.IsAbs(c.OutputDir) {
			dir := filepath.Clean(c.OutputDir)
			for _, f := range OutputFiles(vm.Name, vm.Pipeline) {
				key := dir + "\x00" + f
				if j, dup := outputs[key]; dup && j != i {
					v.add(p+".pipeline.convert", fmt.Sprintf("%s would write %s into %s, as vms[%d] (%s) does; give one of them another output_path or output_dir",
						truncate(vm.Name, 80), truncate(f, 200), truncate(dir, 200), j, truncate(m.VMs[j].Name, 80)))
					break
				}
				outputs[key] = i
			}
		}
	}
}

func (v *validator) name(path, name string, required bool) {
	switch {
	case name == "":
		if required {
			v.add(path, "is required")
		}
	case !nameRE.MatchString(name):
		v.add(path, fmt.Sprintf("%q is not a valid name: %s", truncate(name, 80), nameRule))
	}
}

func (v *validator) schedule(path string, s *Schedule) {
	if s == nil {
		return
	}
	var nb, na time.Time
	var err error
	if s.NotBefore != "" {
		if nb, err = time.Parse(time.RFC3339, s.NotBefore); err != nil {
			v.add(path+".not_before", fmt.Sprintf("%q is not an RFC 3339 time like 2026-12-24T02:00:00+01:00", truncate(s.NotBefore, maxQuote)))
		}
	}
	if s.NotAfter != "" {
		if na, err = time.Parse(time.RFC3339, s.NotAfter); err != nil {
			v.add(path+".not_after", fmt.Sprintf("%q is not an RFC 3339 time like 2026-12-24T06:00:00+01:00", truncate(s.NotAfter, maxQuote)))
		}
	}
	if !nb.IsZero() && !na.IsZero() && !na.After(nb) {
		v.add(path+".not_after", "must be later than not_before (the window would be empty)")
	}
}

// ValidateRetry checks a retry policy given elsewhere than in a manifest
// (agent.yaml's job.retry), its problems under path.
func ValidateRetry(path string, r *Retry) Problems {
	v := validator{}
	v.retry(path, r)
	return v.ps
}

// Backoffs are the values of retry.backoff.
func Backoffs() []string { return []string{"exponential", "fixed"} }

func (v *validator) retry(path string, r *Retry) {
	if r == nil {
		return
	}
	if r.MaxAttempts < 1 || r.MaxAttempts > 20 {
		v.add(path+".max_attempts", fmt.Sprintf("must be between 1 and 20 (runs in all), not %d", r.MaxAttempts))
	}
	if r.Backoff != "" && !slices.Contains(Backoffs(), r.Backoff) {
		v.add(path+".backoff", fmt.Sprintf("%q: want exponential or fixed", truncate(r.Backoff, maxQuote)))
	}
	for _, f := range []struct{ key, val string }{{"initial", r.Initial}, {"max", r.Max}} {
		if f.val == "" {
			continue
		}
		if d, err := time.ParseDuration(f.val); err != nil || d <= 0 {
			v.add(path+"."+f.key, fmt.Sprintf("%q is not a duration like 30s or 1h", truncate(f.val, maxQuote)))
		}
	}
}

// maxPlacement bounds a manifest's placement terms.
const maxPlacement = 16

// placement checks each term: a host name, or a key=value label as
// agent.yaml's host.labels writes them.
func (v *validator) placement(path string, terms []string) {
	if len(terms) > maxPlacement {
		v.add(path, fmt.Sprintf("at most %d terms, not %d", maxPlacement, len(terms)))
		return
	}
	word := func(s string, extra string, n int) bool {
		return s != "" && len(s) <= n && strings.IndexFunc(s, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(extra, r))
		}) < 0
	}
	for i, t := range terms {
		p := fmt.Sprintf("%s[%d]", path, i)
		k, val, isLabel := strings.Cut(t, "=")
		switch {
		case isLabel && !word(k, "._-/", 63):
			v.add(p, fmt.Sprintf("label key %q: want letters, digits, '.', '_', '-' or '/' (at most 63)", truncate(k, maxQuote)))
		case isLabel && (val == "" || len(val) > 253 || strings.ContainsAny(val, "=, \t\n")):
			v.add(p, fmt.Sprintf("label %s: value %q: want a non-empty value without '=', ',' or spaces (datastore=ds01)", truncate(k, maxQuote), truncate(val, maxQuote)))
		case !isLabel && !word(t, "._-", 253):
			v.add(p, fmt.Sprintf("%q: want a host name (host.name of a fleet host) or a label key=value like datastore=ds01", truncate(t, maxQuote)))
		}
	}
}

func (v *validator) priority(path string, p *int) {
	if p != nil && (*p < MinPriority || *p > MaxPriority) {
		v.add(path, fmt.Sprintf("must be between %d and %d (higher runs first), not %d", MinPriority, MaxPriority, *p))
	}
}

func (v *validator) resources(path string, r *Resources) {
	if r == nil {
		return
	}
	if r.MemoryMax != "" {
		if _, err := parseMemoryMax(r.MemoryMax, 1); err != nil {
			v.add(path+".memory_max", fmt.Sprintf("%q %v; use a size like \"512M\" or \"4G\" (K, M, G, T, P, E: powers of 1024), a percentage of RAM like \"50%%\", or \"infinity\"", truncate(r.MemoryMax, 40), err))
		}
	}
	if r.CPUQuota != "" {
		if _, err := parseCPUQuota(r.CPUQuota); err != nil {
			v.add(path+".cpu_quota", fmt.Sprintf("%q %v; use a percentage of one CPU like \"50%%\" or \"200%%\" (two CPUs)", truncate(r.CPUQuota, 40), err))
		}
	}
	if r.IOWeight < 0 || r.IOWeight > MaxIOWeight {
		v.add(path+".io_weight", fmt.Sprintf("must be between 1 and %d (systemd IOWeight=; 100 is the default), not %d", MaxIOWeight, r.IOWeight))
	}
	if r.TasksMax < 0 {
		v.add(path+".tasks_max", fmt.Sprintf("must be 1 or more, not %d", r.TasksMax))
	}
	if r.RuntimeMaxSec < 0 {
		v.add(path+".runtime_max_sec", fmt.Sprintf("must be 0 (no limit) or a number of seconds, not %d", r.RuntimeMaxSec))
	}
}

func (v *validator) enum(path, val string, allowed []string) bool {
	if slices.Contains(allowed, val) {
		return true
	}
	msg := fmt.Sprintf("unknown value %q; allowed: %s", truncate(val, 40), strings.Join(allowed, ", "))
	if s := suggest(val, allowed); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	v.add(path, msg)
	return false
}

func (v *validator) absPath(path, p string) {
	switch {
	case strings.ContainsRune(p, 0):
		v.add(path, "must not contain a NUL character")
	case !filepath.IsAbs(p):
		v.add(path, fmt.Sprintf("%q is not an absolute path; give the full path starting with /", truncate(p, 200)))
	case filepath.Clean(p) != p:
		v.add(path, fmt.Sprintf("%q is not a normalised path; write %q", truncate(p, 200), truncate(filepath.Clean(p), 200)))
	}
}

func (v *validator) fileName(path, f string) {
	switch {
	case strings.ContainsRune(f, 0):
		v.add(path, "must not contain a NUL character")
	case strings.Contains(f, "/") || f == "." || f == "..":
		v.add(path, fmt.Sprintf("%q is not a plain file name; give a name like \"web01.qcow2\" and set output_dir for the directory", truncate(f, 200)))
	case len(f) > 255:
		v.add(path, "is longer than 255 bytes")
	}
}

func (v *validator) pipeline(path string, p *Pipeline, name string) {
	lp := path + ".load"
	switch st := p.Load.SourceType; st {
	case "":
		v.add(lp+".source_type", "is required")
	case "ami":
		v.add(lp+".source_type", `"ami" is an AWS image id, not a disk image, and is out of scope; export the AMI's volume as a raw or vmdk disk first (allowed: `+strings.Join(SourceTypes(), ", ")+")")
	default:
		v.enum(lp+".source_type", st, SourceTypes())
	}
	if p.Load.IsRemote() {
		v.remote(lp, &p.Load)
	} else if p.Load.SourcePath == "" {
		v.add(lp+".source_path", "is required")
	} else {
		v.absPath(lp+".source_path", p.Load.SourcePath)
	}
	if !p.Load.IsRemote() {
		for _, f := range p.Load.remoteFields() {
			if f.set {
				v.add(lp+"."+f.name, `is only allowed with source_type "vsphere"`)
			}
		}
	}
	if s := p.Load.SHA256; s != "" && !sha256RE.MatchString(s) {
		msg := "must be 64 hexadecimal digits (as printed by sha256sum)"
		if strings.HasPrefix(strings.ToLower(s), "sha256:") {
			msg += `, without the "sha256:" prefix`
		}
		v.add(lp+".sha256", msg)
	}
	seenRef := map[string]bool{}
	for i, ref := range p.Load.AllowReferences {
		rp := fmt.Sprintf("%s.allow_references[%d]", lp, i)
		if ref == "" {
			v.add(rp, "must not be empty")
			continue
		}
		v.absPath(rp, ref)
		if seenRef[ref] {
			v.add(rp, fmt.Sprintf("%q is listed twice", truncate(ref, 200)))
		}
		seenRef[ref] = true
	}

	fixOn := true
	if f := p.Fix; f != nil {
		fp := path + ".fix"
		fixOn = f.AnyEnabled()
		if f.Backend != "" {
			v.enum(fp+".backend", f.Backend, Backends())
		}
		if f.Fstab != nil && f.Fstab.Mode != "" {
			v.enum(fp+".fstab.mode", f.Fstab.Mode, FstabModes())
		}
		if f.Network != nil && f.Network.FixLevel != "" {
			v.enum(fp+".network.fix_level", f.Network.FixLevel, FixLevels())
		}
	}

	if c := p.Convert; c != nil {
		cp := path + ".convert"
		format := c.OutputFormat
		switch format {
		case "":
			format = "qcow2"
		case "vmdk":
			v.add(cp+".output_format", `"vmdk" is not an output format: the agent writes qcow2, raw or vdi (KVM guests run from qcow2 or raw)`)
		default:
			v.enum(cp+".output_format", format, OutputFormats())
		}
		if c.Compress && format != "qcow2" && slices.Contains(OutputFormats(), format) {
			v.add(cp+".compress", fmt.Sprintf("only qcow2 output can be compressed, and output_format is %q", truncate(format, maxQuote)))
		}
		if c.Compression != "" {
			v.enum(cp+".compression", c.Compression, Compressions())
		}
		if c.Preallocation != "" {
			v.enum(cp+".preallocation", c.Preallocation, Preallocations())
			switch {
			case c.Preallocation == "off":
			case c.Compress && slices.Contains(Preallocations(), c.Preallocation):
				v.add(cp+".preallocation", fmt.Sprintf("%q cannot be combined with compress (compressed clusters are written as they come); set preallocation to off or compress to false", c.Preallocation))
			case c.Preallocation == "metadata" && format != "qcow2":
				v.add(cp+".preallocation", fmt.Sprintf(`"metadata" is for qcow2 output only, and output_format is %q; use "falloc" or "off"`, truncate(format, maxQuote)))
			}
		}
		if c.OutputPath != "" {
			v.fileName(cp+".output_path", c.OutputPath)
		}
		if c.OutputDir != "" {
			v.absPath(cp+".output_dir", c.OutputDir)
		}
		v.disks(cp, c, p.Load.SourceType, name)
	}

	if val := p.Validate; val != nil {
		vp := path + ".validate"
		if val.BootTimeout < 0 || val.BootTimeout > MaxBootTimeout {
			v.add(vp+".boot_timeout", fmt.Sprintf("must be between 1 and %d seconds (0 or absent: 300), not %d", MaxBootTimeout, val.BootTimeout))
		}
		if val.Compare != nil && *val.Compare && fixOn {
			v.add(vp+".compare", "cannot compare the output with the source while fix is enabled (the fixes change the disk); set fix.enabled to false or compare to false")
		}
	}
	if t := p.Target; t != nil {
		v.target(path+".target", t)
		if s, c := t.Storage, p.Convert; s != nil && s.Dir != "" && c != nil && c.OutputDir != "" && filepath.Clean(c.OutputDir) != filepath.Clean(s.Dir) {
			v.add(path+".target.storage.dir", fmt.Sprintf("%q differs from convert.output_dir %q; set one of them", truncate(s.Dir, 200), truncate(c.OutputDir, 200)))
		}
	}
	if p.Hooks != nil {
		v.hooks(path+".hooks", p.Hooks)
	}
}

func (v *validator) disks(cp string, c *Convert, sourceType, name string) {
	if len(c.Disks) == 0 {
		return
	}
	if sourceType != "ova" && sourceType != "ovf" && slices.Contains(SourceTypes(), sourceType) {
		v.add(cp+".disks", fmt.Sprintf("is only allowed for ova and ovf sources (which can hold several disks), and source_type is %q", truncate(sourceType, maxQuote)))
		return
	}
	ids := map[string]int{}
	files := map[string]string{}
	if name != "" {
		files[defaultOutputPath(name, c)] = cp + ".output_path"
	}
	for i, d := range c.Disks {
		dp := fmt.Sprintf("%s.disks[%d]", cp, i)
		switch {
		case d.ID == "":
			v.add(dp+".id", "is required (the disk's ovf:diskId, e.g. \"vmdisk2\")")
		case !diskIDRE.MatchString(d.ID):
			v.add(dp+".id", fmt.Sprintf("%q is not a valid disk id: letters, digits, '.', '_' or '-'", truncate(d.ID, 80)))
		default:
			if j, dup := ids[d.ID]; dup {
				v.add(dp+".id", fmt.Sprintf("%q is already listed in disks[%d]", truncate(d.ID, 80), j))
			}
			ids[d.ID] = i
		}
		if d.OutputPath == "" {
			continue
		}
		if d.Skip {
			v.add(dp+".output_path", "has no use on a skipped disk")
			continue
		}
		v.fileName(dp+".output_path", d.OutputPath)
		if other, dup := files[d.OutputPath]; dup {
			v.add(dp+".output_path", fmt.Sprintf("%q is already the output of %s", truncate(d.OutputPath, 200), other))
		} else {
			files[d.OutputPath] = dp
		}
	}
}

// parseMemoryMax returns the bytes a memory_max means on a machine with
// physical bytes of RAM (math.MaxUint64 for infinity).
func parseMemoryMax(s string, physical uint64) (uint64, error) {
	if s == "infinity" {
		return ^uint64(0), nil
	}
	m := memoryRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("is not a size")
	}
	if m[3] != "" {
		pct, err := strconv.ParseFloat(m[3], 64)
		if err != nil || pct <= 0 || pct > 100 {
			return 0, fmt.Errorf("is not a percentage between 0 and 100")
		}
		return uint64(float64(physical) * pct / 100), nil
	}
	f, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("is not a size")
	}
	shift := strings.Index("KMGTPE", m[2]) + 1
	if m[2] == "" {
		shift = 0
	}
	b := f * float64(uint64(1)<<(10*shift))
	if b < 1 {
		return 0, fmt.Errorf("is too small")
	}
	if b >= 1<<64 {
		return 0, fmt.Errorf("is too large")
	}
	return uint64(b), nil
}

// parseCPUQuota returns the percentage of one CPU.
func parseCPUQuota(s string) (float64, error) {
	m := cpuQuotaRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("is not a percentage")
	}
	f, err := strconv.ParseFloat(m[1], 64)
	if err != nil || f <= 0 {
		return 0, fmt.Errorf("must be more than 0%%")
	}
	if f > 1e6 {
		return 0, fmt.Errorf("is too large")
	}
	return f, nil
}

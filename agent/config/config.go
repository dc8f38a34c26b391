// Package config reads the agent's configuration, /etc/hyper2kvm/agent.yaml:
// the original product's keys (manifest_workflow_dir, output_dir,
// max_concurrent_jobs, verbose) plus the agent's own (state_dir,
// idle_timeout, queue limits) and the defaults every job unit gets.
// A missing file means all defaults; an unknown key is an error so that a
// typo does not silently fall back to a default.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/hyper2kvm/hyper2kvm/agent/gc"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/notify"
)

// DefaultPath is where the agent reads its configuration.
const DefaultPath = "/etc/hyper2kvm/agent.yaml"

// Config is the whole agent configuration.
type Config struct {
	ManifestWorkflowDir string   `yaml:"manifest_workflow_dir"`
	OutputDir           string   `yaml:"output_dir"`
	StateDir            string   `yaml:"state_dir"`
	MaxConcurrentJobs   int      `yaml:"max_concurrent_jobs"`
	Verbose             bool     `yaml:"verbose"`
	IdleTimeout         Duration `yaml:"idle_timeout"` // 0: never exit when idle
	// StableTime is how long a dropped file's size, mtime and inode must stay
	// the same before the agent takes it.
	StableTime Duration `yaml:"stable_time"`
	// StableTimeRaw replaces StableTime for dropped images whose bytes
	// are raw: nothing in them says they are whole.
	StableTimeRaw Duration `yaml:"stable_time_raw"`
	// StableTimeout is how long a dropped image that its own format says
	// is not whole (cut, or still being written) may stay unchanged
	// before it is failed with the reason.
	StableTimeout Duration `yaml:"stable_timeout"`
	// KeepFinished is how long finished jobs stay in the job store (and so
	// in ListJobs, the REST API and the metrics) after their file settled;
	// older ones are forgotten when the agent starts. 0 keeps them all.
	KeepFinished Duration `yaml:"keep_finished"`
	// MaxManifestSize refuses larger manifest files (bytes).
	MaxManifestSize int64 `yaml:"max_manifest_size"`
	// MaxQueued refuses Submit calls while this many jobs are pending.
	MaxQueued int `yaml:"max_queued"`
	// WorkerPath is the binary the job units run ("" = the agent's own).
	WorkerPath string `yaml:"worker_path"`
	Job        Job    `yaml:"job"`
	// Fix holds what FIX needs from the machine.
	Fix Fix `yaml:"fix"`
	// Limits bound what one job may ask of the machine.
	Limits Limits `yaml:"limits"`
	// DefaultPipeline is the pipeline (manifest v1.0 "pipeline" object,
	// without load) given to a disk image dropped directly into the queue.
	DefaultPipeline map[string]any `yaml:"default_pipeline"`
	// Target is every job's default pipeline.target: network mappings,
	// storage, display and libvirt definition (manifest.Target.WithDefaults).
	Target *manifest.Target `yaml:"target"`
	// LibvirtForUsers lets manifests from users other than root set
	// pipeline.target.libvirt themselves: defining (and starting) a domain
	// in qemu:///system is the host's administrator's to grant.
	LibvirtForUsers bool `yaml:"libvirt_for_users"`
	// Retain is the housekeeping of files (agent/gc).
	Retain gc.Retain `yaml:"retain"`
	// ImportDirs are the directories whose disk images the agent lists
	// (ListImages, GET /api/workflow/images) for the manifest builder to
	// pick a source from; each caller sees the images they can read.
	ImportDirs []string `yaml:"import_dirs"`
	// Store is where the job store lives.
	Store Store `yaml:"store"`
	// Host is this host as the fleet knows it.
	Host Host `yaml:"host"`
	// Notify is the webhooks the agent calls on job events.
	Notify Notify `yaml:"notify"`
}

// Notify is the agent's webhooks (docs/WORKFLOW.md).
type Notify struct {
	Webhooks []Webhook `yaml:"webhooks"`
	// AllowedHosts are the hosts a manifest's notify.url may name; none
	// means manifests may not name a webhook.
	AllowedHosts []string `yaml:"allowed_hosts"`
	// RetryInitial and RetryMax bound the exponential backoff between
	// attempts (default 30s and 1h); a delivery is given up after 24 h.
	RetryInitial Duration `yaml:"retry_initial"`
	RetryMax     Duration `yaml:"retry_max"`
}

// Webhook is one URL the agent calls.
type Webhook struct {
	URL string `yaml:"url"`
	// Events it gets; none means all (notify.Events).
	Events []string `yaml:"events"`
	// Secret signs each body (X-Hyper2kvm-Signature); "" sends none.
	Secret string `yaml:"secret"`
}

// Host names this host in a fleet sharing one job store.
type Host struct {
	// Name marks the jobs this host claims ("" is the machine's hostname).
	Name string `yaml:"name"`
	// Labels say what this host can reach (datastore=ds01): a job's
	// placement naming labels runs only on a host that has them all.
	Labels Labels `yaml:"labels"`
}

// Labels are a host's key=value labels, written in agent.yaml as a map
// (datastore: ds01) or a list (- datastore=ds01).
type Labels map[string]string

// UnmarshalYAML reads a map or a list of key=value, each checked.
func (l *Labels) UnmarshalYAML(n *yaml.Node) error {
	out := Labels{}
	put := func(k, v string, line int) error {
		if err := CheckLabel(k, v); err != nil {
			return fmt.Errorf("line %d: host.labels: %v", line, err)
		}
		if _, dup := out[k]; dup {
			return fmt.Errorf("line %d: host.labels: %q given twice", line, k)
		}
		out[k] = v
		return nil
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: host.labels: %q: want a value like ds01", v.Line, k.Value)
			}
			if err := put(k.Value, v.Value, k.Line); err != nil {
				return err
			}
		}
	case yaml.SequenceNode:
		for _, e := range n.Content {
			k, v, ok := strings.Cut(e.Value, "=")
			if e.Kind != yaml.ScalarNode || !ok {
				return fmt.Errorf("line %d: host.labels: want key=value like datastore=ds01, not %q", e.Line, e.Value)
			}
			if err := put(k, v, e.Line); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("line %d: host.labels: want a map (datastore: ds01) or a list of key=value", n.Line)
	}
	*l = out
	return nil
}

// CheckLabel checks one label: a key of letters, digits, '.', '_', '-'
// and '/', and a value without '=', ',' or spaces.
func CheckLabel(k, v string) error {
	if k == "" || len(k) > 63 || strings.IndexFunc(k, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-/", r))
	}) >= 0 {
		return fmt.Errorf("label key %q: want letters, digits, '.', '_', '-' or '/' (at most 63)", k)
	}
	if v == "" || len(v) > 253 || strings.ContainsAny(v, "=, \t\n") {
		return fmt.Errorf("label %s: value %q: want a non-empty value without '=', ',' or spaces", k, v)
	}
	return nil
}

// HostName is host.name, or the machine's hostname.
func (c *Config) HostName() string {
	if c.Host.Name != "" {
		return c.Host.Name
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "localhost"
}

// Store names the job store's database.
type Store struct {
	// URL is sqlite:///abs/path.db (one host; "" means jobs.db in
	// state_dir) or postgres://... (a fleet sharing one database).
	URL string `yaml:"url"`
	// LeaseTimeout is how long a host of a fleet may miss its heartbeat
	// before another host takes its jobs and runs them again.
	LeaseTimeout Duration `yaml:"lease_timeout"`
}

// StoreURL is store.url, or the default: jobs.db in state_dir.
func (c *Config) StoreURL() string {
	if c.Store.URL != "" {
		return c.Store.URL
	}
	return "sqlite://" + filepath.Join(c.StateDir, "jobs.db")
}

// Job holds the defaults of every job unit; a manifest's resources section
// overrides them per job.
type Job struct {
	MemoryMax     string `yaml:"memory_max"` // systemd size: "4G", "512M", "infinity"
	CPUQuota      string `yaml:"cpu_quota"`  // percent of one CPU: "200%"
	TasksMax      int    `yaml:"tasks_max"`
	IOWeight      int    `yaml:"io_weight"` // 1..10000
	RuntimeMaxSec int    `yaml:"runtime_max_sec"`
	Backend       string `yaml:"backend"` // auto | native | guestfs | virt-v2v
	Priority      int    `yaml:"priority"`
	// Retry is the retry policy of a job whose manifest has none
	// (manifest "retry"); nil: such a job runs once.
	Retry *Retry `yaml:"retry"`
}

// Retry is job.retry: the manifest's retry, as agent.yaml writes it.
type Retry struct {
	MaxAttempts int    `yaml:"max_attempts"`
	Backoff     string `yaml:"backoff"`
	Initial     string `yaml:"initial"`
	Max         string `yaml:"max"`
}

// Manifest is the policy as a manifest's retry.
func (r *Retry) Manifest() *manifest.Retry {
	if r == nil {
		return nil
	}
	return &manifest.Retry{MaxAttempts: r.MaxAttempts, Backoff: r.Backoff, Initial: r.Initial, Max: r.Max}
}

// Fix holds what FIX needs from the machine.
type Fix struct {
	// VirtioWin is the virtio-win ISO or unpacked directory virt-v2v
	// installs a Windows guest's drivers from (its VIRTIO_WIN). Without
	// it a Windows job fails before FIX, saying what to install.
	VirtioWin string `yaml:"virtio_win"`
}

// Limits bound what one job may ask of the machine.
type Limits struct {
	// MaxVirtualSize refuses, in LOAD, a source disk whose virtual size is
	// larger (systemd-style size, "16T"): a small file can claim petabytes
	// and hold a job slot for hours.
	MaxVirtualSize string `yaml:"max_virtual_size"`
	// UserMax caps the resources section of a manifest submitted or
	// dropped by anyone but root: a member of group hyper2kvm may queue
	// jobs, not take the machine. Root's manifests are not capped.
	UserMax UserMax `yaml:"user_max"`
	// DiskParallelism is how many disks of one VM a job converts at once;
	// 0 (the default): one per CPU the job unit may use (its CPUQuota).
	DiskParallelism int `yaml:"disk_parallelism"`
	// PerSource caps the jobs running at once that read from one source
	// directory (a datastore, an export): storage saturates long before
	// CPUs do. 0 leaves it to max_concurrent_jobs.
	PerSource int `yaml:"per_source"`
}

// DefaultMaxVirtualSize is limits.max_virtual_size when agent.yaml does not set it.
const DefaultMaxVirtualSize = "16T"

// MaxVirtualSizeBytes is limits.max_virtual_size in bytes (the default when
// unset or invalid; Validate reports an invalid one).
func (c *Config) MaxVirtualSizeBytes() int64 {
	n, err := ParseSize(c.Limits.MaxVirtualSize)
	if err != nil || n == 0 {
		n, _ = ParseSize(DefaultMaxVirtualSize)
	}
	return int64(n)
}

// UserMax is the most a non-root submitter's job may ask for; a zero or
// empty field leaves that resource uncapped.
type UserMax struct {
	MemoryMax     string `yaml:"memory_max"` // systemd size: "8G"; "" or "infinity": no cap
	CPUQuota      string `yaml:"cpu_quota"`  // percent of one CPU: "400%"
	TasksMax      int    `yaml:"tasks_max"`
	RuntimeMaxSec int    `yaml:"runtime_max_sec"`
}

// Duration is a time.Duration written as "90s", "5m" or a number of seconds.
type Duration time.Duration

// UnmarshalYAML accepts Go duration strings and plain seconds.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration like 5m", n.Line)
	}
	if secs, err := strconv.ParseFloat(n.Value, 64); err == nil {
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: cannot parse duration %q", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the Go duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Default returns the configuration used when agent.yaml is absent.
func Default() Config {
	return Config{
		ManifestWorkflowDir: "/var/lib/hyper2kvm/manifest-workflow",
		OutputDir:           "/var/lib/hyper2kvm/output",
		StateDir:            "/var/lib/hyper2kvm",
		Store:               Store{LeaseTimeout: Duration(2 * time.Minute)},
		MaxConcurrentJobs:   3,
		IdleTimeout:         Duration(5 * time.Minute),
		StableTime:          Duration(500 * time.Millisecond),
		StableTimeRaw:       Duration(30 * time.Second),
		StableTimeout:       Duration(10 * time.Minute),
		KeepFinished:        Duration(30 * 24 * time.Hour),
		MaxManifestSize:     1 << 20,
		MaxQueued:           1000,
		Job: Job{
			MemoryMax:     "4G",
			CPUQuota:      "200%",
			TasksMax:      512,
			IOWeight:      100,
			RuntimeMaxSec: 6 * 3600,
			Backend:       "auto",
		},
		Limits: Limits{MaxVirtualSize: DefaultMaxVirtualSize, UserMax: UserMax{
			MemoryMax:     "8G",
			CPUQuota:      "400%",
			TasksMax:      1024,
			RuntimeMaxSec: 24 * 3600,
		}},
		DefaultPipeline: map[string]any{
			"inspect":  map[string]any{"enabled": true, "detect_os": true},
			"fix":      map[string]any{"enabled": true},
			"convert":  map[string]any{"output_format": "qcow2", "compress": true},
			"validate": map[string]any{"enabled": true},
		},
	}
}

// Load reads path over the defaults. A missing file gives the defaults.
func Load(path string) (Config, error) {
	c := Default()
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return Config{}, fmt.Errorf("cannot read config: %w", err)
	}
	if err := c.parse(data); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse reads YAML data over the defaults and validates the result.
func Parse(data []byte) (Config, error) {
	c := Default()
	if err := c.parse(data); err != nil {
		return Config{}, err
	}
	return c, nil
}

func (c *Config) parse(data []byte) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return c.Validate()
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// default_pipeline replaces the default as a whole, it is not merged.
	var probe struct {
		DP yaml.Node `yaml:"default_pipeline"`
	}
	if err := yaml.Unmarshal(data, &probe); err == nil && probe.DP.Kind != 0 {
		c.DefaultPipeline = nil
	}
	if err := dec.Decode(c); err != nil {
		return explain(err)
	}
	return c.Validate()
}

// Validate checks every value and names the key of the first bad one.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, a...)))
	}
	for i, p := range c.ImportDirs {
		if !filepath.IsAbs(p) {
			bad(fmt.Sprintf("import_dirs[%d]", i), "must be an absolute path, not %q", p)
		}
	}
	for key, p := range map[string]string{
		"manifest_workflow_dir": c.ManifestWorkflowDir,
		"output_dir":            c.OutputDir,
		"state_dir":             c.StateDir,
	} {
		if !filepath.IsAbs(p) {
			bad(key, "must be an absolute path, not %q", p)
		}
	}
	if c.WorkerPath != "" && !filepath.IsAbs(c.WorkerPath) {
		bad("worker_path", "must be an absolute path, not %q", c.WorkerPath)
	}
	if c.MaxConcurrentJobs < 1 || c.MaxConcurrentJobs > 256 {
		bad("max_concurrent_jobs", "must be between 1 and 256, not %d", c.MaxConcurrentJobs)
	}
	if c.IdleTimeout < 0 {
		bad("idle_timeout", "must not be negative")
	}
	if c.StableTime < 0 {
		bad("stable_time", "must not be negative")
	}
	if c.StableTimeRaw < 0 {
		bad("stable_time_raw", "must not be negative")
	}
	if c.StableTimeout <= 0 {
		bad("stable_timeout", "must be more than 0 (an image that is not whole is failed after it)")
	}
	if c.KeepFinished < 0 {
		bad("keep_finished", "must not be negative (0 keeps every finished job)")
	}
	if c.MaxManifestSize < 1024 {
		bad("max_manifest_size", "must be at least 1024 bytes")
	}
	// The parser refuses anything larger (manifest.MaxSize) whatever this
	// says: a larger setting would only move where the refusal comes from.
	if c.MaxManifestSize > 1<<20 {
		bad("max_manifest_size", "must be at most 1048576 bytes (1 MiB), the largest manifest the parser reads")
	}
	if c.Limits.PerSource < 0 {
		bad("limits.per_source", "must be 0 (no cap) or more")
	}
	if c.Store.LeaseTimeout < Duration(time.Second) {
		bad("store.lease_timeout", "must be at least 1s")
	}
	if u := c.Store.URL; u != "" {
		switch {
		case strings.HasPrefix(u, "sqlite://"):
			if !filepath.IsAbs(strings.TrimPrefix(u, "sqlite://")) {
				bad("store.url", "a SQLite store must name an absolute path, like sqlite:///var/lib/hyper2kvm/jobs.db, not %q", u)
			}
		case strings.HasPrefix(u, "postgres://"), strings.HasPrefix(u, "postgresql://"):
		default:
			bad("store.url", "must start with sqlite:// or postgres://, not %q", u)
		}
	}
	if c.MaxQueued < 1 {
		bad("max_queued", "must be at least 1")
	}
	if _, err := ParseSize(c.Job.MemoryMax); err != nil {
		bad("job.memory_max", "%v", err)
	}
	if _, err := ParsePercent(c.Job.CPUQuota); err != nil {
		bad("job.cpu_quota", "%v", err)
	}
	if c.Job.TasksMax < 0 {
		bad("job.tasks_max", "must not be negative")
	}
	if c.Job.IOWeight != 0 && (c.Job.IOWeight < 1 || c.Job.IOWeight > 10000) {
		bad("job.io_weight", "must be between 1 and 10000, not %d", c.Job.IOWeight)
	}
	if c.Job.RuntimeMaxSec < 0 {
		bad("job.runtime_max_sec", "must not be negative")
	}
	if _, err := ParseSize(c.Limits.UserMax.MemoryMax); err != nil {
		bad("limits.user_max.memory_max", "%v", err)
	}
	if _, err := ParsePercent(c.Limits.UserMax.CPUQuota); err != nil {
		bad("limits.user_max.cpu_quota", "%v", err)
	}
	if c.Limits.DiskParallelism < 0 {
		bad("limits.disk_parallelism", "must not be negative (0: one disk per CPU the job may use)")
	}
	if c.Limits.UserMax.TasksMax < 0 {
		bad("limits.user_max.tasks_max", "must not be negative (0: no cap)")
	}
	if c.Limits.UserMax.RuntimeMaxSec < 0 {
		bad("limits.user_max.runtime_max_sec", "must not be negative (0: no cap)")
	}
	switch c.Job.Backend {
	case "auto", "native", "guestfs", "virt-v2v":
	default:
		bad("job.backend", "must be auto, native, guestfs or virt-v2v, not %q", c.Job.Backend)
	}
	if v := c.Fix.VirtioWin; v != "" && !filepath.IsAbs(v) {
		bad("fix.virtio_win", "must be an absolute path to the virtio-win ISO or its unpacked directory, not %q", v)
	}
	if n, err := ParseSize(c.Limits.MaxVirtualSize); err != nil {
		bad("limits.max_virtual_size", "%v", err)
	} else if n == 0 && strings.TrimSpace(c.Limits.MaxVirtualSize) != "" {
		bad("limits.max_virtual_size", "must be a size like 16T, not %q", c.Limits.MaxVirtualSize)
	}
	for _, p := range manifest.ValidateTarget("target", c.Target) {
		bad(p.Path, "%s", p.Message)
	}
	if _, err := c.Retain.Policy(); err != nil {
		errs = append(errs, err)
	}
	if _, ok := c.DefaultPipeline["load"]; ok {
		bad("default_pipeline.load", "is set by the agent from the dropped image; remove it")
	}
	for i, w := range c.Notify.Webhooks {
		key := fmt.Sprintf("notify.webhooks[%d]", i)
		if err := notify.CheckURL(w.URL, nil, false); err != nil {
			bad(key+".url", "%v", err)
		}
		if err := notify.CheckEvents(w.Events); err != nil {
			bad(key+".events", "%v", err)
		}
	}
	for _, p := range manifest.ValidateRetry("job.retry", c.Job.Retry.Manifest()) {
		bad(p.Path, "%s", p.Message)
	}
	for k, v := range c.Host.Labels {
		if err := CheckLabel(k, v); err != nil {
			bad("host.labels", "%v", err)
		}
	}
	if c.Notify.RetryInitial < 0 || c.Notify.RetryMax < 0 {
		bad("notify.retry_initial", "must not be negative")
	}
	return errors.Join(errs...)
}

// ParseSize reads a systemd-style size ("4G", "512M", "1024", "infinity"
// or "" for no limit) into bytes; 0 means no limit.
func ParseSize(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "infinity" {
		return 0, nil
	}
	mult := uint64(1)
	switch s[len(s)-1] {
	case 'K', 'k':
		mult = 1 << 10
	case 'M', 'm':
		mult = 1 << 20
	case 'G', 'g':
		mult = 1 << 30
	case 'T', 't':
		mult = 1 << 40
	}
	num := s
	if mult != 1 {
		num = s[:len(s)-1]
	}
	v, err := strconv.ParseUint(num, 10, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("cannot parse size %q (want e.g. 4G, 512M or infinity)", s)
	}
	if v > (1<<63)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return v * mult, nil
}

// ParsePercent reads "200%" (or "" for no quota) into percent of one CPU;
// 0 means no quota.
func ParsePercent(s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	v, err := strconv.Atoi(strings.TrimSuffix(s, "%"))
	if err != nil || !strings.HasSuffix(s, "%") || v < 1 || v > 100000 {
		return 0, fmt.Errorf("cannot parse CPU quota %q (want e.g. 200%%)", s)
	}
	return v, nil
}

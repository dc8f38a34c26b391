package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/hyper2kvm/hyper2kvm/agent/config"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
)

// SliceName is the slice every job unit runs in.
const SliceName = "hyper2kvm.slice"

func writeJobDir(dir string, spec JobSpec, vm []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cannot create job directory: %w", err)
	}
	// A job directory left from an attempt before a reboot: start clean.
	for _, f := range []string{StartedFile, ReportFile, OOMFile, SharedFile} {
		os.Remove(filepath.Join(dir, f))
	}
	// Not synced to disk: the store holds the job (saved before the unit
	// starts) and every start writes these again; after a crash of the
	// machine no worker runs that could read them.
	data, _ := json.MarshalIndent(spec, "", " ")
	if err := queue.ReplaceFile(filepath.Join(dir, JobFile), data, 0o600); err != nil {
		return fmt.Errorf("cannot write job: %w", err)
	}
	if err := queue.ReplaceFile(filepath.Join(dir, ManifestFile), vm, 0o600); err != nil {
		return fmt.Errorf("cannot write job manifest: %w", err)
	}
	return nil
}

// unitProperties are the transient unit's settings: the worker command,
// the slice, the resource limits (manifest over config) and the sandbox.
//
// The sandbox is what the native backend still allows: it mounts guest
// filesystems (loop devices, FUSE, mount(2)) in the unit's own mount
// namespace, so devices stay visible and no capability is dropped, but the
// unit has no network, a private /tmp, a read-only /usr, /boot and /etc, a
// read-only /home (sources may live there) and no new privileges.
func (a *Agent) unitProperties(r *record, res *manifest.Resources) ([]sd.Property, error) {
	lim := a.cfg.Job
	mem, err := config.ParseSize(lim.MemoryMax)
	if err != nil {
		return nil, err
	}
	if b, ok := res.MemoryMaxBytes(physicalMemory()); ok {
		mem = b
	}
	cpu := uint64(0)
	if pct, err := config.ParsePercent(lim.CPUQuota); err == nil && pct > 0 {
		cpu = uint64(pct) * 10000
	}
	if us, ok := res.CPUQuotaPerSecUSec(); ok {
		cpu = us
	}
	tasks, weight, runtime := uint64(lim.TasksMax), uint64(lim.IOWeight), uint64(lim.RuntimeMaxSec)
	if res != nil {
		if res.TasksMax > 0 {
			tasks = uint64(res.TasksMax)
		}
		if res.IOWeight > 0 {
			weight = uint64(res.IOWeight)
		}
		if res.RuntimeMaxSec > 0 {
			runtime = uint64(res.RuntimeMaxSec)
		}
	}
	p := func(name string, v any) sd.Property { return sd.Property{Name: name, Value: dbus.MakeVariant(v)} }
	stopPost := []execCommand{{Path: "/bin/sh", Args: []string{"/bin/sh", "-c", systemdEscape(oomProbe)}, IgnoreFailure: true}}
	if outputsOf(r.VM).dir != "" {
		// Only the unit's sandbox may write where the job wrote: it
		// removes what a job that did not complete left there, however
		// the worker ended (CleanOutputs).
		// The agent's own binary, not worker_path (which may be a
		// wrapper that waits for something).
		stopPost = append(stopPost, execCommand{Path: a.self, Args: []string{a.self, "worker", "--job-dir", r.JobDir, "--clean-outputs"}, IgnoreFailure: true})
	}
	props := []sd.Property{
		sd.PropDescription(fmt.Sprintf("hyper2kvm job %s: convert %s", r.ID, r.Name)),
		// Not sd.PropExecStart: its flag is systemd's "ignore failure"
		// under another name, and true made every death of the worker
		// count as success (then, for Type=notify, result "protocol").
		p("ExecStart", []execCommand{{Path: a.worker, Args: []string{a.worker, "worker", "--job-dir", r.JobDir}}}),
		p("ExecStopPost", stopPost),
		sd.PropType("notify"),
		sd.PropSlice(SliceName),
		p("CollectMode", "inactive-or-failed"),
		// Keep the finished unit until the agent has read its result.
		p("AddRef", true),
		p("NotifyAccess", "main"),
		p("LogExtraFields", [][]byte{[]byte(FieldJobID + "=" + r.ID)}),
		p("Environment", []string{"HYPER2KVM_JOB_ID=" + r.ID}),
		p("WorkingDirectory", r.JobDir),
		p("KillMode", "control-group"),
		p("TimeoutStopUSec", uint64(60*time.Second/time.Microsecond)),
		p("PrivateTmp", true),
		p("PrivateNetwork", true),
		p("PrivateMounts", true),
		p("ProtectHome", "read-only"),
		p("ProtectSystem", "full"),
		p("NoNewPrivileges", true),
		p("ProtectControlGroups", true),
		p("ProtectKernelLogs", true),
		p("RestrictRealtime", true),
		p("LockPersonality", true),
	}
	if mem > 0 {
		props = append(props, p("MemoryAccounting", true), p("MemoryMax", mem))
	}
	if cpu > 0 {
		props = append(props, p("CPUAccounting", true), p("CPUQuotaPerSecUSec", cpu))
	}
	if tasks > 0 {
		props = append(props, p("TasksAccounting", true), p("TasksMax", tasks))
	}
	if weight > 0 {
		props = append(props, p("IOAccounting", true), p("IOWeight", weight))
	}
	if runtime > 0 {
		props = append(props, p("RuntimeMaxUSec", runtime*uint64(time.Second/time.Microsecond)))
	}
	return remoteUnitProperties(props, r.VM, a.srcs.creds(), a.self, r.JobDir), nil
}

// execCommand is one entry of a unit's ExecStart=/ExecStopPost= over D-Bus,
// signature (sasb).
type execCommand struct {
	Path          string
	Args          []string
	IgnoreFailure bool // the "-" prefix of a unit file
}

// oomProbe runs as the job unit's ExecStopPost, in the unit's own cgroup
// after the worker is gone, and writes to the job directory how many
// processes of the unit the kernel's OOM killer killed: the unit's
// memory.oom_control (cgroup v1) or memory.events (v2). systemd itself
// reports Result=oom-kill only on cgroup v2; on v1 a worker killed for
// going over MemoryMax= is just "signal" without this. The cgroup is
// removed as soon as the unit stops, so only a process inside it can read
// it in time.
const oomProbe = `n=0
while IFS=: read -r _ c p; do
	case "$c" in
	memory) f=/sys/fs/cgroup/memory$p/memory.oom_control ;;
	"") f=/sys/fs/cgroup$p/memory.events; [ -r "$f" ] || f=/sys/fs/cgroup/unified$p/memory.events ;;
	*) continue ;;
	esac
	[ -r "$f" ] || continue
	while read -r k v; do [ "$k" = oom_kill ] && n=$((n + v)); done <"$f"
done </proc/self/cgroup
echo "$n" >` + OOMFile + `
`

// systemdEscape keeps systemd from expanding $ in a command argument.
func systemdEscape(s string) string { return strings.ReplaceAll(s, "$", "$$") }

// physicalMemory is the machine's RAM, for memory_max percentages.
func physicalMemory() uint64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	var kb uint64
	if _, err := fmt.Sscanf(string(data), "MemTotal: %d kB", &kb); err != nil {
		return 0
	}
	return kb << 10
}

// oomKills is what the unit's ExecStopPost found in its memory cgroup: the
// number of processes the OOM killer killed (0 when unknown).
func oomKills(dir string) int {
	data, err := os.ReadFile(filepath.Join(dir, OOMFile))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return n
}

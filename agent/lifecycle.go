package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/hyper2kvm/hyper2kvm/agent/config"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/progress"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// SliceName is the slice every job unit runs in.
const SliceName = "hyper2kvm.slice"

// schedule starts pending jobs, highest priority first and, among equal
// priorities, oldest file first (pendingBefore), while fewer than
// max_concurrent_jobs run and each batch stays within its concurrency.
// Called with a.mu held.
func (a *Agent) schedule(ctx context.Context) {
	if !a.running {
		return
	}
	a.pend.dispatch(a.st.Jobs, a.cfg.MaxConcurrentJobs, func(r *record) bool { return a.start(ctx, r) })
}

// start writes the job directory and starts the job's transient unit. The
// record is saved as running before the unit exists: if the agent dies in
// between, recovery finds no unit and no "started" file and queues the job
// again. It reports whether the job now runs.
func (a *Agent) start(ctx context.Context, r *record) bool {
	now := a.now()
	r.JobDir = filepath.Join(a.jobsDir(), r.ID)
	r.OutputDir = filepath.Join(a.cfg.OutputDir, now.Format(queue.DateLayout), r.ID)
	var vm manifest.Manifest
	if err := json.Unmarshal(r.VM, &vm); err != nil {
		a.finish(r, jobs.Failed, "start", fmt.Sprintf("cannot read job manifest: %v", err), nil)
		return false
	}
	backend := a.cfg.Job.Backend
	if vm.Pipeline != nil && vm.Pipeline.Fix != nil && vm.Pipeline.Fix.Backend != "" {
		backend = vm.Pipeline.Fix.Backend
	}
	kept := keptOutputs(r.VM)
	spec := JobSpec{ID: r.ID, Name: r.Name, Batch: r.Batch, Claim: r.Claim, OutputDir: r.OutputDir,
		WorkDir: workDirOf(r.JobDir), Backend: backend, Verbose: a.cfg.Verbose, Priority: r.Priority,
		StartedAt: now, KeptOutputs: kept}
	if r.DropperUID > 0 {
		spec.SourceUID = r.DropperUID
	}
	if c := a.st.Claims[r.Claim]; c != nil && c.Kind == kindImage {
		spec.TrustedSource = filepath.Join(a.q.Dir(queue.Processing), r.Claim)
	}
	if err := writeJobDir(r.JobDir, spec, r.VM); err != nil {
		a.finish(r, jobs.Failed, "start", err.Error(), nil)
		return false
	}
	props, err := a.unitProperties(r, vm.Resources)
	if err != nil {
		a.finish(r, jobs.Failed, "start", err.Error(), nil)
		return false
	}
	r.State, r.StartedAt, r.Stage, r.Progress = jobs.Running, now, "", jobs.ProgressUnknown
	r.KeptOutputs = kept
	a.markShared(r)
	r.Unit = jobs.UnitName(r.ID)
	r.BootID = a.bootID()
	r.Attempt++
	r.sawActive = false
	a.save()
	if err := a.units.Start(ctx, r.Unit, props); err != nil {
		var de dbus.Error
		if errors.As(err, &de) && de.Name == "org.freedesktop.systemd1.UnitExists" {
			// A unit of this job still runs (left from before a restart):
			// follow it instead of starting a second copy.
			a.log.Warnf(jobFields(r), "unit %s already exists; following it", r.Unit)
			a.units.Ref(ctx, r.Unit)
			return true
		}
		if st, ok := a.units.(systemState); ok && st.Stopping(ctx) {
			// The machine is shutting down (a job it interrupted was just
			// queued again): the job waits for the next boot.
			a.log.Infof(jobFields(r), "job %s stays queued: the system is shutting down", r.ID)
			r.State, r.StartedAt = jobs.Pending, time.Time{}
			r.Attempt--
			a.save()
			return false
		}
		a.log.Errorf(jobFields(r), "%v", err)
		a.finish(r, jobs.Failed, "start", err.Error(), nil)
		return false
	}
	a.log.Infof(jobFields(r), "job %s started as %s", r.ID, r.Unit)
	a.emit(JobChanged, r, []string{"State", "StartedAt", "Unit"})
	// Catch up with anything the signals said before we were listening.
	if info, err := a.units.Get(ctx, r.Unit); err == nil && !info.Gone() {
		a.applyUnit(ctx, r, info, nil)
	}
	return true
}

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
	return props, nil
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

// onUnitChange applies one PropertiesChanged signal. Called with a.mu held.
func (a *Agent) onUnitChange(ctx context.Context, ch UnitChange) {
	r := a.jobByUnit(ch.Info.Name)
	if r == nil || r.State != jobs.Running {
		return
	}
	a.applyUnit(ctx, r, ch.Info, ch.Has)
}

func (a *Agent) jobByUnit(unit string) *record {
	id, ok := jobs.IDFromUnit(unit)
	if !ok {
		return nil
	}
	r := a.st.Jobs[id]
	if r == nil || r.Unit != unit {
		return nil
	}
	return r
}

// applyUnit folds unit state into the job: progress from StatusText, and
// the end of the job when the unit stops. has names the fields info
// carries (nil: all of them).
func (a *Agent) applyUnit(ctx context.Context, r *record, info UnitInfo, has map[string]bool) {
	carries := func(k string) bool { return has == nil || has[k] }
	if carries("StatusText") {
		a.applyStatus(r, info.StatusText)
	}
	if carries("Result") && info.Result != "" {
		r.UnitResult = info.Result
	}
	if info.Invocation != "" {
		r.Invocation = info.Invocation
	}
	if !carries("ActiveState") {
		return
	}
	a.log.Debugf(jobFields(r), "unit %s: %s/%s result %q (signal: %v)", r.Unit, info.ActiveState, info.SubState, info.Result, has != nil)
	switch info.ActiveState {
	case "activating", "active", "deactivating", "reloading":
		r.sawActive = true
	case "inactive", "failed":
		// systemd creates a transient unit inactive and then starts it,
		// and a signal may be older than what start() already read: only
		// a unit that ran and stopped ends the job. Ask systemd for the
		// whole picture unless the signal itself says so.
		if has != nil && !(has["InactiveEnterTimestampMonotonic"] && info.InactiveEnter != 0) {
			full, err := a.units.Get(ctx, r.Unit)
			if err != nil {
				a.log.Warnf(jobFields(r), "%v", err)
				return
			}
			a.log.Debugf(jobFields(r), "unit %s now: %s load %s result %q inactive since %d", r.Unit, full.ActiveState, full.LoadState, full.Result, full.InactiveEnter)
			if full.Result == "" {
				full.Result = info.Result
			}
			// The unit may have ended before the signals of its last
			// STATUS= are handled: its last stage is the one it ended in.
			a.applyStatus(r, full.StatusText)
			info = full
		}
		if !info.Gone() && (!info.Finished() || !info.Ran()) {
			r.sawActive = r.sawActive || !info.Finished()
			return
		}
		a.unitEnded(ctx, r, info)
	}
}

// applyStatus folds the unit's StatusText into the job's stage and progress.
func (a *Agent) applyStatus(r *record, text string) {
	if text == "" || text == r.StatusText {
		return
	}
	r.StatusText = text
	changed := []string{"StatusText"}
	if u, ok := progress.Parse(text); ok {
		if u.Stage != r.Stage {
			r.Stage = u.Stage
			changed = append(changed, "Stage")
			a.log.Infof(jobFields(r), "job %s: stage %s", r.ID, u.Stage)
		}
		r.Progress, r.BytesDone, r.BytesTotal = u.Percent, u.Done, u.Total
		changed = append(changed, "Progress")
	}
	a.emit(JobChanged, r, changed)
}

func (a *Agent) workerStarted(r *record) bool {
	_, err := os.Stat(filepath.Join(r.JobDir, StartedFile))
	return err == nil
}

// readReport reads the worker's report.json, nil when there is none.
func readReport(dir string) (*report.Report, error) {
	data, err := os.ReadFile(filepath.Join(dir, ReportFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rep report.Report
	if err := json.Unmarshal(data, &rep); err != nil {
		return nil, fmt.Errorf("cannot parse %s: %w", ReportFile, err)
	}
	return &rep, nil
}

// unitEnded finishes a job whose unit stopped, from the worker's report
// and the unit's result.
func (a *Agent) unitEnded(ctx context.Context, r *record, info UnitInfo) {
	if info.Result != "" {
		r.UnitResult = info.Result
	}
	rep, err := readReport(r.JobDir)
	if err != nil {
		a.log.Warnf(jobFields(r), "%v", err)
	}
	if oomKills(r.JobDir) > 0 && !r.Cancel && (rep == nil || rep.Status != "completed") {
		// On cgroup v1 systemd says "signal" (or the worker's exit code,
		// when the kernel killed one of its children); the cgroup's own
		// counter says why.
		r.UnitResult = "oom-kill"
	}
	// Ask systemd only when the run did not end as it should have.
	stopping := false
	if st, ok := a.units.(systemState); ok && !r.Cancel && (rep == nil || rep.Status == "failed") {
		stopping = st.Stopping(ctx)
	}
	state, stage, msg := outcome(r, rep, stopping)
	if state == jobs.Failed && rep == nil && !r.Cancel {
		if full := a.stateFull(); full != "" {
			// The worker's report could not be written: say why.
			msg = full + "; " + msg
		}
	}
	if state == jobs.Pending {
		a.requeue(r, rep, "its unit was stopped by systemd, not cancelled")
	} else {
		a.finish(r, state, stage, msg, rep)
	}
	a.units.Release(ctx, r.Unit)
}

// removeNoFollow removes the file p in a directory a user may control,
// only if no symbolic link leads to it: root must not remove a file a
// swapped link points at.
func removeNoFollow(p string) {
	dir, err := unix.Openat2(unix.AT_FDCWD, filepath.Dir(p), &unix.OpenHow{
		Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS})
	if err != nil {
		return
	}
	defer unix.Close(dir)
	unix.Unlinkat(dir, filepath.Base(p), 0)
}

// interrupted reports whether systemd, not a user, stopped the job: the
// worker got SIGTERM (its report says cancelled) but nobody cancelled the
// job through the API (recorded in the store before the unit is stopped),
// and the unit did not run out of time. That is a shutdown of the machine,
// or `systemctl stop` of the job's unit or of hyper2kvm.slice.
//
// stopping says the machine is shutting down. systemd then sends SIGTERM
// to every process of the unit at once, and a helper of the engine (a
// qemu-storage-daemon, the libguestfs appliance) may die of it before the
// worker has seen its own: the report says failed, or there is none. A
// run that did not complete while the machine goes down was cut short by
// it, whatever the report says (a memory-limit kill aside).
func interrupted(r *record, rep *report.Report, stopping bool) bool {
	if r.Cancel || r.UnitResult == "timeout" {
		return false
	}
	if rep != nil && rep.Status == "cancelled" {
		return true
	}
	return stopping && r.UnitResult != "oom-kill" && (rep == nil || rep.Status != "completed")
}

// requeue makes a job whose run was cut short (by systemd, or by a
// reboot) pending again; the next run starts clean. Called with a.mu held.
func (a *Agent) requeue(r *record, rep *report.Report, why string) {
	// LOAD refuses to start over existing outputs: remove what the cut
	// run left in the directory the agent gave it, and the report the
	// engine wrote into the manifest's own convert.output_dir.
	if r.OutputDir != "" {
		if err := os.RemoveAll(r.OutputDir); err != nil {
			a.log.Warnf(jobFields(r), "cannot remove partial output: %v", err)
		}
	}
	if rep != nil && rep.JobID == r.ID && filepath.Base(rep.ReportPath) == ReportFile && (r.OutputDir == "" || !within(rep.ReportPath, r.OutputDir)) {
		removeNoFollow(rep.ReportPath)
	}
	a.removeScratch(r)
	a.cleanOutputs(r, rep)
	r.State, r.Stage, r.StatusText, r.Progress, r.UnitResult = jobs.Pending, "", "", jobs.ProgressUnknown, ""
	r.BytesDone, r.BytesTotal = 0, 0
	a.save()
	a.log.Warnf(jobFields(r), "job %s: %s; queued again (attempt %d of %d)", r.ID, why, r.Attempt+1, maxAttempts)
	a.emit(JobChanged, r, []string{"State", "Stage", "Progress"})
	a.wake()
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

// outcome decides how a job ended. The worker's report says what the
// pipeline did; the unit's result says why a worker without a report died.
func outcome(r *record, rep *report.Report, stopping bool) (jobs.State, string, string) {
	stage := r.Stage
	if rep != nil && rep.Error != nil {
		stage = rep.Error.Stage
	}
	switch {
	case r.Cancel:
		return jobs.Cancelled, stage, "cancelled"
	case rep != nil && rep.Status == "completed" && (r.UnitResult == "" || r.UnitResult == "success"):
		return jobs.Completed, "", ""
	case r.UnitResult == "timeout":
		return jobs.Failed, stage, "the job ran longer than its runtime limit (RuntimeMaxSec) and was stopped"
	case interrupted(r, rep, stopping) && r.Attempt < maxAttempts:
		return jobs.Pending, stage, "interrupted" // run again: see unitEnded
	case interrupted(r, rep, stopping):
		during := ""
		if stage != "" {
			during = " during " + stage
		}
		return jobs.Failed, stage, fmt.Sprintf("systemd stopped the job's unit (the machine shut down, or systemctl stop of the unit or of %s)%s, %d times; not run again", SliceName, during, r.Attempt)
	case r.UnitResult == "oom-kill" && rep != nil && rep.Error != nil:
		return jobs.Failed, stage, "the worker was killed for going over its memory limit (MemoryMax): " + rep.Error.Message
	case rep != nil && rep.Error != nil:
		return jobs.Failed, stage, rep.Error.Message
	}
	switch r.UnitResult {
	case "oom-kill":
		return jobs.Failed, stage, "the worker was killed for going over its memory limit (MemoryMax)"
	case "signal", "core-dump":
		return jobs.Failed, stage, "the worker was killed by a signal before writing its report"
	case "exit-code":
		return jobs.Failed, stage, "the worker failed before writing its report; see its journal"
	case "protocol":
		return jobs.Failed, stage, "the worker exited without telling systemd it had started (protocol); see its journal"
	case "resources":
		return jobs.Failed, stage, "systemd could not set up the job unit (resources); see its journal"
	case "", "success":
		return jobs.Failed, stage, "the worker ended without writing its report"
	}
	return jobs.Failed, stage, "the job unit failed with result " + r.UnitResult
}

// finish makes a job final, cleans up what a failed job left and settles
// its claim when it was the last job of it. Called with a.mu held.
func (a *Agent) finish(r *record, state jobs.State, stage, msg string, rep *report.Report) {
	r.State, r.FinishedAt = state, a.now()
	r.Error, r.ErrorStage = msg, stage
	keepReport(r, state, rep)
	if rep != nil {
		r.ReportStatus = string(rep.Status)
		r.Outputs = nil
		for _, art := range rep.Artifacts {
			r.Outputs = append(r.Outputs, art.Path)
		}
	}
	a.removeScratch(r)
	if state == jobs.Completed {
		r.Progress = 100
	} else if r.OutputDir != "" {
		// Nothing of a failed or cancelled job stays under the output
		// directory the agent gave it.
		if err := os.RemoveAll(r.OutputDir); err != nil {
			a.log.Warnf(jobFields(r), "cannot remove partial output: %v", err)
		}
		// Nor of what it wrote into its manifest's own output_dir.
		a.cleanOutputs(r, rep)
		r.Outputs = nil
	}
	if r.Unit != "" && !r.StartedAt.IsZero() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r.Cursor = a.cursor(ctx, r.Unit)
		cancel()
	}
	a.save()
	switch state {
	case jobs.Completed:
		a.log.Infof(jobFields(r), "job %s completed", r.ID)
	default:
		a.log.Warnf(jobFields(r), "job %s %s: %s", r.ID, state, msg)
	}
	a.emit(JobChanged, r, []string{"State", "Error", "FinishedAt", "Progress"})
	if c := a.st.Claims[r.Claim]; c != nil && slices.Contains(c.Jobs, r.ID) {
		a.settleClaim(c)
	}
	a.wake()
}

// settleClaim moves a claimed file whose jobs are all final to processed/
// (every job completed) or failed/, beside its report. The target is
// reserved and saved first, so a settle cut short by a crash completes
// under the same name. Called with a.mu held.
func (a *Agent) settleClaim(c *claim) {
	var recs []*record
	for _, id := range c.Jobs {
		r := a.st.Jobs[id]
		if r == nil {
			continue
		}
		if !r.State.Ready() {
			return
		}
		recs = append(recs, r)
	}
	status := "completed"
	for _, r := range recs {
		switch {
		case r.State == jobs.Failed:
			status = "failed"
		case r.State == jobs.Cancelled && status == "completed":
			status = "cancelled"
		}
	}
	if c.Error != "" {
		status = "failed"
	}
	if c.Target == nil {
		t, err := a.q.Reserve(c.Name, status == "completed", a.now())
		if err != nil {
			a.settleFailed(c, err)
			return
		}
		c.Target = &t
		a.save()
	}
	if err := a.q.Finish(a.q.Dir(queue.Processing), c.Name, *c.Target, a.settlement(c, recs, status)); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			a.settleFailed(c, err)
			return
		}
		// Someone removed the file; the report still says what happened.
		a.log.Errorf(Fields{FieldManifest: c.Name}, "%v", err)
	}
	for _, r := range recs {
		r.ReportPath = c.Target.ReportPath()
		r.Manifest = c.Target.Name
	}
	delete(a.st.Claims, c.Name)
	a.save()
	a.log.Infof(Fields{FieldManifest: c.Name}, "%s settled: %s", c.Original, c.Target.Path())
	for _, r := range recs {
		a.emit(JobChanged, r, []string{"ReportPath"})
	}
}

// Settlement is NAME.report.json in processed/ and NAME.error.json in
// failed/: the claimed file's outcome, with one entry per job (one per VM
// of a batch) and each job's own report.
type Settlement struct {
	JobID            string      `json:"job_id"`
	OriginalName     string      `json:"original_name"`
	Status           string      `json:"status"` // completed | failed | cancelled
	Batch            bool        `json:"batch,omitempty"`
	FailedAt         *time.Time  `json:"failed_at,omitempty"`
	FinishedAt       time.Time   `json:"finished_at"`
	Error            string      `json:"error,omitempty"`
	Stage            string      `json:"stage,omitempty"`
	Unit             string      `json:"unit,omitempty"`
	JournalCursor    string      `json:"journal_cursor,omitempty"`
	ValidationErrors []string    `json:"validation_errors,omitempty"`
	SubmittedBy      int64       `json:"submitted_by"`
	Jobs             []JobResult `json:"jobs"`
}

// JobResult is one job's line in a Settlement.
type JobResult struct {
	JobID         string         `json:"job_id"`
	Name          string         `json:"name"`
	Status        string         `json:"status"`
	Stage         string         `json:"stage,omitempty"`
	Error         string         `json:"error,omitempty"`
	Unit          string         `json:"unit,omitempty"`
	UnitResult    string         `json:"unit_result,omitempty"`
	InvocationID  string         `json:"invocation_id,omitempty"`
	JournalCursor string         `json:"journal_cursor,omitempty"`
	StartedAt     *time.Time     `json:"started_at,omitempty"`
	FinishedAt    time.Time      `json:"finished_at"`
	OutputDir     string         `json:"output_dir,omitempty"`
	Outputs       []string       `json:"outputs,omitempty"`
	Report        *report.Report `json:"report,omitempty"`
}

func (a *Agent) settlement(c *claim, recs []*record, status string) []byte {
	now := a.now()
	s := Settlement{OriginalName: c.Original, Status: status, Batch: c.Batch, FinishedAt: now,
		ValidationErrors: c.Validation, Error: c.Error, SubmittedBy: c.SubmittedBy}
	if status != "completed" {
		s.FailedAt = &now
	}
	for _, r := range recs {
		jr := JobResult{JobID: r.ID, Name: r.Name, Status: string(r.State), Stage: r.ErrorStage, Error: r.Error,
			UnitResult: r.UnitResult, InvocationID: r.Invocation, JournalCursor: r.Cursor, FinishedAt: r.FinishedAt}
		if !r.StartedAt.IsZero() {
			t := r.StartedAt
			jr.StartedAt, jr.Unit, jr.OutputDir, jr.Outputs = &t, r.Unit, r.OutputDir, r.Outputs
			if r.State != jobs.Completed {
				jr.OutputDir = ""
			}
		}
		if r.JobDir != "" {
			jr.Report, _ = readReport(r.JobDir)
			if jr.Report != nil && r.State != jobs.Completed {
				// Removed with the rest of what the job wrote (cleanOutputs):
				// this settlement is the failure report.
				jr.Report.ReportPath = ""
			}
		}
		s.Jobs = append(s.Jobs, jr)
		if s.JobID == "" {
			s.JobID, s.Unit, s.JournalCursor = r.ID, jr.Unit, r.Cursor
		}
		if s.Error == "" && r.State != jobs.Completed {
			s.Error, s.Stage = r.Error, r.ErrorStage
			s.Unit, s.JournalCursor = jr.Unit, r.Cursor
			if c.Batch {
				s.Error = fmt.Sprintf("%s: %s", r.Name, r.Error)
			}
		}
	}
	if c.Error != "" && s.Stage == "" {
		s.Stage = "claim"
	}
	data, _ := json.MarshalIndent(s, "", "  ")
	return append(data, '\n')
}

// journalCursor is the cursor of the unit's last journal entry, so that
// `journalctl --after-cursor`/`--cursor` finds its log.
func journalCursor(ctx context.Context, unit string) string {
	out, err := exec.CommandContext(ctx, "journalctl", "-q", "--no-pager", "-o", "json", "-n", "1", "-u", unit).Output()
	if err != nil {
		return ""
	}
	var e struct {
		Cursor string `json:"__CURSOR"`
	}
	if json.Unmarshal(out, &e) != nil {
		return ""
	}
	return e.Cursor
}

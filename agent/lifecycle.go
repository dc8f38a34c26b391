package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/progress"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// scheduleLocked starts pending jobs, highest priority first and, among equal
// priorities, oldest file first (pendingBefore), while fewer than
// max_concurrent_jobs run and each batch stays within its concurrency.
// Called with a.mu held.
func (a *Agent) scheduleLocked(ctx context.Context) {
	if !a.running || a.queueState() != queueRunning {
		return // paused or draining: running jobs go on, none starts
	}
	now := a.now()
	a.pend.dispatch(a.st.Jobs, a.cfg.MaxConcurrentJobs, func(r *record) bool {
		switch {
		case windowClosed(r, now):
			a.finishLocked(r, jobs.Failed, "schedule", fmt.Sprintf("not started before its window closed at %s (schedule.not_after)", r.NotAfter.Format(time.RFC3339)), nil)
			return false
		case r.Host == "" && !a.takeUnplacedLocked(r):
			return false // placement: no host's yet (fleetplace.go)
		case dueLater(r, now):
			a.waitNoteLocked(r, windowNote(r))
			return false // stays pending: tried again on the next pass
		case a.sourceFull(r):
			a.waitNoteLocked(r, sourceNote(r, a.cfg.Limits.PerSource))
			return false // limits.per_source: tried again when one ends
		}
		a.clearWaitNoteLocked(r)
		return a.startLocked(ctx, r)
	})
}

// startLocked writes the job directory and starts the job's transient unit. The
// record is saved as running before the unit exists: if the agent dies in
// between, recovery finds no unit and no "started" file and queues the job
// again. It reports whether the job now runs.
func (a *Agent) startLocked(ctx context.Context, r *record) bool {
	now := a.now()
	r.JobDir = filepath.Join(a.jobsDir(), r.ID)
	r.OutputDir = filepath.Join(a.cfg.OutputDir, now.Format(queue.DateLayout), r.ID)
	var vm manifest.Manifest
	if err := json.Unmarshal(r.VM, &vm); err != nil {
		a.finishLocked(r, jobs.Failed, "start", fmt.Sprintf("cannot read job manifest: %v", err), nil)
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
		a.finishLocked(r, jobs.Failed, "start", err.Error(), nil)
		return false
	}
	props, err := a.unitProperties(r, vm.Resources)
	if err != nil {
		a.finishLocked(r, jobs.Failed, "start", err.Error(), nil)
		return false
	}
	r.KeptOutputs = kept
	a.markSharedLocked(r)
	r.Unit = jobs.UnitName(r.ID)
	a.setStateLocked(r, jobs.Running, transition{bootID: a.bootID(), at: now})
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
			a.setStateLocked(r, jobs.Pending, transition{why: "not started: the system is shutting down", notRun: true})
			return false
		}
		a.log.Errorf(jobFields(r), "%v", err)
		a.finishLocked(r, jobs.Failed, "start", err.Error(), nil)
		return false
	}
	a.log.Infof(jobFields(r), "job %s started as %s", r.ID, r.Unit)
	// Catch up with anything the signals said before we were listening.
	if info, err := a.units.Get(ctx, r.Unit); err == nil && !info.Gone() {
		a.applyUnitLocked(ctx, r, info, nil)
	}
	return true
}

// onUnitChangeLocked applies one PropertiesChanged signal. Called with a.mu held.
func (a *Agent) onUnitChangeLocked(ctx context.Context, ch UnitChange) {
	r := a.jobByUnit(ch.Info.Name)
	if r == nil || r.State != jobs.Running {
		return
	}
	a.applyUnitLocked(ctx, r, ch.Info, ch.Has)
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

// applyUnitLocked folds unit state into the job: progress from StatusText, and
// the end of the job when the unit stops. has names the fields info
// carries (nil: all of them).
func (a *Agent) applyUnitLocked(ctx context.Context, r *record, info UnitInfo, has map[string]bool) {
	carries := func(k string) bool { return has == nil || has[k] }
	if carries("StatusText") {
		a.applyStatusLocked(r, info.StatusText)
	}
	if carries("Result") && info.Result != "" && info.Result != r.UnitResult {
		r.UnitResult = info.Result
		a.st.touch(r)
	}
	if info.Invocation != "" && info.Invocation != r.Invocation {
		r.Invocation = info.Invocation
		a.st.touch(r)
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
			a.applyStatusLocked(r, full.StatusText)
			info = full
		}
		if !info.Gone() && (!info.Finished() || !info.Ran()) {
			r.sawActive = r.sawActive || !info.Finished()
			return
		}
		a.unitEndedLocked(ctx, r, info)
	}
}

// applyStatusLocked folds the unit's StatusText into the job's stage and progress.
func (a *Agent) applyStatusLocked(r *record, text string) {
	if text == "" || text == r.StatusText {
		return
	}
	r.StatusText = text
	a.st.touch(r)
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
	a.emitLocked(apitype.JobChanged, r, changed)
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

// unitEndedLocked finishes a job whose unit stopped, from the worker's report
// and the unit's result.
func (a *Agent) unitEndedLocked(ctx context.Context, r *record, info UnitInfo) {
	if info.Result != "" {
		r.UnitResult = info.Result
	}
	a.st.touch(r) // the unit's result, and below how the run ended
	rep, err := readReport(r.JobDir)
	if err != nil {
		a.log.Warnf(jobFields(r), "%v", err)
	}
	if oomKills(r.JobDir) > 0 && !r.Cancel && (rep == nil || rep.Status != report.Completed) {
		// On cgroup v1 systemd says "signal" (or the worker's exit code,
		// when the kernel killed one of its children); the cgroup's own
		// counter says why.
		r.UnitResult = "oom-kill"
	}
	// Ask systemd only when the run did not end as it should have.
	stopping := false
	if st, ok := a.units.(systemState); ok && !r.Cancel && (rep == nil || rep.Status == report.Failed) {
		stopping = st.Stopping(ctx)
	}
	state, stage, msg := outcome(endingOf(r, rep, stopping))
	if state == jobs.Failed && rep == nil && !r.Cancel {
		if full := a.stateFull(); full != "" {
			// The worker's report could not be written: say why.
			msg = full + "; " + msg
		}
	}
	if state == jobs.Pending {
		a.requeueLocked(r, rep, "its unit was stopped by systemd, not cancelled")
	} else if state == jobs.Failed && !r.Cancel && a.retryLocked(r, rep, stage, msg) {
		// queued again, due after its backoff
	} else {
		a.finishLocked(r, state, stage, msg, rep)
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

// requeueLocked makes a job whose run was cut short (by systemd, or by a
// reboot) pending again; the next run starts clean. Called with a.mu held.
func (a *Agent) requeueLocked(r *record, rep *report.Report, why string) {
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
	a.cleanOutputsLocked(r, rep)
	a.setStateLocked(r, jobs.Pending, transition{why: why})
	a.wake()
}

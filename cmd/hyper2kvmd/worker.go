package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"

	"github.com/hyper2kvm/hyper2kvm/agent"
	"github.com/hyper2kvm/hyper2kvm/agent/config"
	"github.com/hyper2kvm/hyper2kvm/agent/engine"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/progress"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

func newWorkerCmd() *cobra.Command {
	var jobDir string
	var clean, snapshot bool
	cmd := &cobra.Command{
		Use:   "worker --job-dir DIR",
		Short: "Run one job (inside its transient unit hyper2kvm-job-<id>.service)",
		Long: `Run the pipeline of one job from its directory (job.json, manifest.json),
report progress to systemd with sd_notify STATUS= and write report.json.
The agent starts it; it is not meant to be run by hand.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if jobDir == "" {
				return errors.New("--job-dir is required")
			}
			if clean {
				return cleanOutputs(jobDir)
			}
			if snapshot {
				return removeSnapshot(cmd.Context(), jobDir)
			}
			return runWorker(cmd.Context(), jobDir)
		},
	}
	cmd.Flags().StringVar(&jobDir, "job-dir", "", "the job's directory, /var/lib/hyper2kvm/jobs/<id>")
	cmd.Flags().BoolVar(&snapshot, "remove-snapshot", false, "remove a source snapshot the job recorded and did not remove (the job unit's ExecStopPost for a job reading from a source)")
	cmd.Flags().BoolVar(&clean, "clean-outputs", false, "remove what the job wrote into its manifest's output_dir unless it completed (the job unit's ExecStopPost)")
	return cmd
}

// cleanOutputs is the job unit's ExecStopPost for a manifest with its own
// output_dir: after the worker, however it ended.
func cleanOutputs(dir string) error {
	removed, err := agent.CleanOutputs(dir)
	var spec agent.JobSpec
	if data, rerr := os.ReadFile(filepath.Join(dir, agent.JobFile)); rerr == nil {
		json.Unmarshal(data, &spec)
	}
	log := agent.NewLogger(os.Stderr, false)
	fields := agent.Fields{agent.FieldJobID: spec.ID, agent.FieldManifest: spec.Claim}
	if len(removed) > 0 {
		log.Infof(fields, "job %s did not complete: removed from its output directory %s", spec.ID, strings.Join(removed, ", "))
	}
	if err != nil {
		log.Errorf(fields, "%v", err)
		return &exitErr{1, err}
	}
	return nil
}

// statusEvery is the least time between two STATUS= updates of the same
// stage: progress is sent on change, rate-limited.
const statusEvery = 500 * time.Millisecond

func runWorker(ctx context.Context, dir string) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	started := time.Now()
	spec, m, err := agent.ReadJobDir(dir)
	log := agent.NewLogger(os.Stderr, spec.Verbose)
	fields := agent.Fields{agent.FieldJobID: spec.ID, agent.FieldManifest: spec.Claim}
	daemon.SdNotify(false, "READY=1\nSTATUS="+progress.Format(progress.Update{Stage: "load", Percent: -1, Text: "starting"}))
	// "started" tells a restarted agent that this job did run, so it is
	// not queued again as if it never had: it is on disk before the
	// engine touches anything. Nothing waits for it before READY=1 (the
	// agent reads it only when it recovers), so its two fsyncs do not
	// hold up the unit becoming active.
	if werr := queue.WriteFileAtomic(filepath.Join(dir, agent.StartedFile), []byte(started.Format(time.RFC3339Nano)+"\n"), 0o600); werr != nil {
		return &exitErr{1, fmt.Errorf("cannot mark job started: %w", stateFSError(dir, werr))}
	}
	if err != nil {
		rep := failedReport(spec, started, "load", err)
		writeReport(dir, rep)
		return &exitErr{1, err}
	}
	log.Infof(fields, "job %s: converting %s", spec.ID, m.Name)

	st := &statusSender{}
	var stageMu sync.Mutex
	stage := "load"
	target, forUsers := targetDefaults()
	opts := engine.Options{
		JobID:     spec.ID,
		OutputDir: spec.OutputDir,
		WorkDir:   spec.WorkDir,
		Backend:   spec.Backend,
		// The worker runs as root: it reads only what the job's user could.
		SourceUID:       spec.SourceUID,
		TrustedSource:   spec.TrustedSource,
		MaxVirtualSize:  maxVirtualSize(),
		Target:          target,
		LibvirtForUsers: forUsers,
		Remote:          remote{load: m.Pipeline.Load, jobID: spec.ID, jobDir: dir},
		VirtioWin:       virtioWin(),
		DiskParallelism: diskParallelism(),
		Progress: func(u progress.Update) {
			stageMu.Lock()
			if u.Stage != stage {
				stage = u.Stage
				log.Infof(agent.Fields{agent.FieldJobID: spec.ID, agent.FieldStage: u.Stage, agent.FieldManifest: spec.Claim}, "stage %s", u.Stage)
			}
			stageMu.Unlock()
			st.send(u)
		},
	}
	bd := &boundary{m: m, outputDir: spec.OutputDir, log: log, fields: fields, hooks: newHookRunner(spec, m, log, fields)}
	opts.Boundary = bd.at
	rep, err := engine.Run(ctx, m, opts)
	stageMu.Lock()
	last := stage
	stageMu.Unlock()
	if rep == nil {
		rep = failedReport(spec, started, last, err)
	}
	if ctx.Err() != nil {
		rep.Status = report.Cancelled
	}
	if err != nil && rep.Error == nil && rep.Status != report.Cancelled {
		rep.Error = &report.Failure{Stage: last, Message: err.Error()}
		rep.Status = report.Failed
	}
	if werr := writeReportWaiting(ctx, dir, rep, func(err error) {
		log.Errorf(fields, "cannot write report: %v; trying again every %s until there is space", err, reportRetry)
		daemon.SdNotify(false, "STATUS="+progress.Format(progress.Update{Stage: last, Percent: -1, Text: "waiting for space on the state filesystem to write the report"}))
	}); werr != nil {
		log.Errorf(fields, "cannot write report: %v", werr)
		return &exitErr{1, werr}
	}
	daemon.SdNotify(false, "STOPPING=1")
	if err != nil {
		log.Errorf(agent.Fields{agent.FieldJobID: spec.ID, agent.FieldStage: last, agent.FieldManifest: spec.Claim}, "job %s %s: %v", spec.ID, rep.Status, err)
		return &exitErr{1, err}
	}
	log.Infof(fields, "job %s completed", spec.ID)
	return nil
}

func failedReport(spec agent.JobSpec, started time.Time, stage string, err error) *report.Report {
	msg := "unknown error"
	if err != nil {
		msg = err.Error()
	}
	return &report.Report{ReportVersion: report.Version, JobID: spec.ID, Name: spec.Name, Status: report.Failed,
		StartedAt: started, FinishedAt: time.Now(), Error: &report.Failure{Stage: stage, Message: msg}}
}

// writeReport writes report.json atomically: the agent reads either
// nothing or the whole report.
func writeReport(dir string, rep *report.Report) error {
	if rep.FinishedAt.IsZero() {
		rep.FinishedAt = time.Now()
	}
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return queue.WriteFileAtomic(filepath.Join(dir, agent.ReportFile), data, 0o644)
}

// reportRetry is how often the worker tries again to write its report
// while the state filesystem is full.
const reportRetry = 2 * time.Second

// writeReportWaiting writes the report, waiting for space while the state
// filesystem is full: a job whose disks are converted must not be called
// failed because its report could not be written at that moment (nor
// leave disks behind a failure). waiting is told once. It gives up when
// ctx ends (the job is cancelled, or its unit stopped) and then tries
// once more, so that the report says cancelled if it can.
func writeReportWaiting(ctx context.Context, dir string, rep *report.Report, waiting func(error)) error {
	told := false
	for {
		err := writeReport(dir, rep)
		if err == nil || !noSpace(err) {
			return err
		}
		err = stateFSError(dir, err)
		if ctx.Err() != nil {
			return err
		}
		if !told {
			waiting(err)
			told = true
		}
		select {
		case <-ctx.Done():
			rep.Status = report.Cancelled
		case <-time.After(reportRetry):
		}
	}
}

func noSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// stateFSError names the state filesystem (the job directory is
// <state_dir>/jobs/<id>) in an error saying it is full.
func stateFSError(jobDir string, err error) error {
	if !noSpace(err) {
		return err
	}
	return fmt.Errorf("no space left on the state filesystem (%s): %w", filepath.Dir(filepath.Dir(filepath.Clean(jobDir))), err)
}

// statusSender forwards progress to systemd as STATUS=, only when the line
// changes and at most every statusEvery within a stage.
type statusSender struct {
	mu    sync.Mutex
	last  string
	stage string
	at    time.Time
}

func (s *statusSender) send(u progress.Update) {
	line := progress.Format(u)
	s.mu.Lock()
	defer s.mu.Unlock()
	if line == s.last || (u.Stage == s.stage && time.Since(s.at) < statusEvery && u.Percent != 100) {
		return
	}
	s.last, s.stage, s.at = line, u.Stage, time.Now()
	daemon.SdNotify(false, "STATUS="+strings.ReplaceAll(line, "\n", " "))
}

// maxVirtualSize is limits.max_virtual_size from the agent's configuration
// file; 0 (the engine's default, 16 TiB) when it cannot be read.
func maxVirtualSize() int64 {
	cfg, err := config.Load(config.DefaultPath)
	if err != nil {
		return 0
	}
	return cfg.MaxVirtualSizeBytes()
}

// targetDefaults are agent.yaml's target and libvirt_for_users, for the
// engine's Options (none when the file cannot be read: the agent refuses
// to run jobs then anyway).
func targetDefaults() (*manifest.Target, bool) {
	cfg, err := config.Load(config.DefaultPath)
	if err != nil {
		return nil, false
	}
	return cfg.Target, cfg.LibvirtForUsers
}

// virtioWin is agent.yaml's fix.virtio_win ("" when unset or unreadable:
// a Windows job then fails before FIX saying what to set).
func virtioWin() string {
	cfg, err := config.Load(config.DefaultPath)
	if err != nil {
		return ""
	}
	return cfg.Fix.VirtioWin
}

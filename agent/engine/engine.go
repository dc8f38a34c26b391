// Package engine runs one VM's pipeline, LOAD -> INSPECT -> FIX -> CONVERT ->
// VALIDATE, with real tools, and writes the report. The worker (hyper2kvmd
// worker, inside a job's transient unit) and hyper2kvmd convert both call Run.
// The agent never imports it.
package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/noreplace"
	"github.com/hyper2kvm/hyper2kvm/agent/progress"
	"github.com/hyper2kvm/hyper2kvm/agent/qemuimg"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// Options are what the caller decides beyond the manifest.
type Options struct {
	JobID     string
	OutputDir string // where the outputs go unless the manifest's convert.output_dir says otherwise
	WorkDir   string // scratch space (overlays, FUSE mount points); removed by Run
	Backend   string // default guest-access backend when the manifest names none
	// VirtioWin is the virtio-win ISO or directory virt-v2v installs a
	// Windows guest's drivers from (agent.yaml fix.virtio_win).
	VirtioWin string
	Progress  func(progress.Update)
	// SourceUID, when above 0, is the unprivileged user a root caller (the
	// worker) converts for: every file the job reads (the source, OVF
	// disks, VMDK extents) must be reachable by a path without symbolic
	// links and readable by that user, checked on the opened file, which
	// qemu then gets (see userFiles). 0: the caller's own access applies.
	SourceUID int64
	// TrustedSource is a source path exempt from the SourceUID check: the
	// image the agent claimed into its own processing/ directory.
	TrustedSource string
	// MaxVirtualSize refuses, in LOAD, a disk whose virtual size is larger
	// (agent.yaml limits.max_virtual_size); 0 means DefaultMaxVirtualSize.
	MaxVirtualSize int64
	// Target is agent.yaml's target: the defaults of the manifest's
	// pipeline.target (manifest.Target.WithDefaults).
	Target *manifest.Target
	// LibvirtForUsers lets a job of SourceUID set pipeline.target.libvirt
	// itself (agent.yaml libvirt_for_users).
	LibvirtForUsers bool
	// Remote fetches the VM of a load that names a source
	// (source_type vsphere; remote.go). nil: such a manifest fails.
	Remote Remote
	// Boundary, when set, is called at each stage boundary (the Points)
	// with the report so far; an error fails the job at that stage. The
	// worker runs the pre-flight checks and the manifest's hooks there
	// (docs/WORKFLOW.md); the engine knows neither.
	Boundary func(ctx context.Context, point string, rep *report.Report) error
	// DiskParallelism is how many disks of the VM CONVERT writes at
	// once (agent.yaml limits.disk_parallelism); 0 means one per CPU the
	// process may use (runtime.GOMAXPROCS, which follows the job unit's
	// CPUQuota).
	DiskParallelism int
}

// Points are the stage boundaries Options.Boundary is called at, in
// order, each with the stage a failure there is counted against.
var Points = [][2]string{
	{"pre_load", "load"}, {"post_inspect", "inspect"}, {"pre_fix", "fix"},
	{"post_fix", "fix"}, {"post_convert", "convert"}, {"post_validate", "validate"},
}

// DefaultMaxVirtualSize is the virtual size limit when Options gives none:
// 16 TiB, agent.yaml's default.
const DefaultMaxVirtualSize = 16 << 40

// The files beside the disks are named after the VM
// (manifest.DomainXMLFile, ReportFile, ConsoleFile): NAME.xml,
// NAME.report.json, NAME.boot-console.log.

// bands are the overall-percent ranges of the stages: Progress reports one
// percentage for the whole job, like systemd-importd's phase bands.
var bands = map[string][2]int{
	"load":     {0, 5},
	"inspect":  {5, 10},
	"fix":      {10, 30},
	"convert":  {30, 90},
	"validate": {90, 100},
	// define (only for a target in libvirt) reports its upload's bytes in
	// the status text; the percentage stays at VALIDATE's end.
	"define": {100, 100},
}

// disk is one source disk on its way through the pipeline.
type disk struct {
	id        string // ovf:diskId, or "disk1" for a single image
	display   string // the path a user recognises (file, or archive member)
	path      string // what qemu opens: a file or a json: spec
	format    string // qemu format of path
	subformat string
	info      *qemuimg.ImageInfo
	src       string // what CONVERT reads: path, or the FIX overlay
	srcFormat string
	output    string // absolute output path as the user gave it, "" when skipped
	target    string // the path written: output, or below the opened output directory
	outFormat string
	converted bool
	refs      bool // the image refers to other files (pinned in path)
	// downloaded, for a disk read while it downloads (StreamingRemote),
	// waits for the download to be whole.
	downloaded func() error
}

type runner struct {
	ctx     context.Context
	vm      *manifest.Manifest
	p       *manifest.Pipeline
	o       Options
	rep     *report.Report
	outDir  string   // where outputs are written (a /proc/<pid>/fd/<n> name for a job of SourceUID)
	outShow string   // outDir as the user named it
	outFile *os.File // the output directory held open for a job of SourceUID
	workDir string
	disks   []*disk
	ovf     *imgfmt.OVFDescriptor
	fixed   bool
	backend string
	lastPct int
	// ovaManifest says what the OVA's .mf check found, for LOAD's result.
	ovaManifest string
	converted   bool                   // CONVERT wrote every output and the domain XML
	hashes      chan []report.Artifact // the artifacts with their sha256, from VALIDATE
	// files holds every file the job reads, opened once (for
	// Options.SourceUID, or for the caller when it is 0).
	files *userFiles
	// refs are the files the sources refer to, as resolved and checked.
	refs []string
	// owner is who the outputs belong to.
	owner outputOwner
	// tgt is the job's target (target.go), settled in LOAD.
	tgt targetPlan
	// kubevirt: CONVERT wrote NAME.kubevirt.yaml.
	kubevirt bool
	// stopStream ends a StreamingRemote's downloads; overlap is LOAD's
	// word on whether they ran beside CONVERT.
	stopStream func(cause error) error
	overlap    string
}

// Run converts one VM. vm must be a validated single-VM manifest (a batch is
// split by the agent first). The report is returned even when err is non-nil.
//
// The outputs (disks, NAME.xml, NAME.report.json) go to the manifest's
// convert.output_dir or else o.OutputDir, which must not already hold any of
// them: nothing is ever overwritten. The source is only ever opened for
// reading; FIX works on a qcow2 overlay in the work directory.
func Run(ctx context.Context, vm *manifest.Manifest, o Options) (*report.Report, error) {
	// The job's own context: cancelled too when a file it reads is
	// opened for writing (lease.go), ctx staying the caller's.
	jobCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	r := &runner{ctx: jobCtx, vm: vm, o: o, lastPct: -1}
	r.rep = &report.Report{
		ReportVersion: report.Version,
		JobID:         o.JobID,
		Name:          vm.Name,
		StartedAt:     now(),
	}
	var err error
	r.files, err = newUserFiles(o.SourceUID, o.TrustedSource)
	if err != nil {
		err = r.fail("load", err)
	} else {
		r.owner = ownerFor(r.files, o.SourceUID)
		stop := r.files.watchLeases(jobCtx, cancel)
		err = r.run()
		if r.stopStream != nil {
			// Before the work directory goes; a download's error says
			// more than qemu's failed read.
			if serr := r.stopStream(err); serr != nil && err != nil && !errors.Is(serr, err) {
				err = serr
				if r.rep.Error != nil {
					r.rep.Error.Message = serr.Error()
				}
			} else if serr != nil && err == nil {
				err = r.fail("convert", serr)
			}
		}
		stop()
		if cause := context.Cause(jobCtx); err != nil && isSourceChange(cause) {
			err = cause
		}
	}
	if isSourceChange(err) {
		r.discard(err)
	} else if r.files != nil {
		for _, p := range r.files.unleased() {
			r.warn("%s could not be held against writers while the job read it (its file system takes no lease); a change would only be found after the conversion", p)
		}
	}
	if r.files != nil {
		// Every process that read the sources has ended by now.
		r.files.close()
	}
	r.rep.FinishedAt = now()
	switch {
	case err == nil:
		r.rep.Status = report.Completed
	case ctx.Err() != nil, errors.Is(err, qemuimg.ErrTerminated):
		// Stopped from outside (qemu-img got the unit's SIGTERM before
		// the worker did) is an interruption like a cancel: the agent
		// runs the job again unless it cancelled it itself.
		r.rep.Status = report.Cancelled
	default:
		r.rep.Status = report.Failed
	}
	if r.workDir != "" {
		os.RemoveAll(r.workDir)
	}
	if r.outDir == "" && r.p != nil {
		// LOAD failed before settling the outputs: the report still goes
		// where the user will look for it.
		if dir := r.plannedDir(); dir != "" {
			if real, err := r.openOutDir(dir); err == nil {
				r.outDir, r.outShow = real, dir
			}
		}
	}
	if r.outDir != "" {
		if werr := r.writeReport(); werr != nil {
			r.rep.Warnings = append(r.rep.Warnings, werr.Error())
			if err == nil {
				err = werr
				r.rep.Status = report.Failed
			}
		}
	}
	if r.outFile != nil {
		r.outFile.Close()
	}
	return r.rep, err
}

// discard removes what a job whose files changed under it produced: every
// output it wrote, and from the report whatever was read of the files
// (INSPECT's findings, FIX's changes, the stages' results), which may hold
// another file's bytes.
func (r *runner) discard(err error) {
	for _, d := range r.disks {
		if d.converted {
			os.Remove(d.target)
			d.converted = false
		}
	}
	if r.converted {
		os.Remove(filepath.Join(r.outDir, manifest.DomainXMLFile(r.vm.Name)))
		r.converted = false
	}
	if r.kubevirt {
		os.Remove(filepath.Join(r.outDir, manifest.KubeVirtFile(r.vm.Name)))
		r.kubevirt = false
	}
	r.rep.Guest, r.rep.Changes, r.rep.Artifacts, r.rep.Warnings = nil, nil, nil, nil
	for i := range r.rep.Stages {
		if r.rep.Stages[i].Name != "load" {
			r.rep.Stages[i].Result = nil
		}
		if r.rep.Stages[i].Error != "" {
			r.rep.Stages[i].Error = err.Error()
		}
	}
	stage := "load"
	if r.rep.Error != nil {
		stage = r.rep.Error.Stage
	}
	r.rep.Error = &report.Failure{Stage: stage, Message: err.Error()}
}

func now() time.Time { return time.Now().Round(time.Millisecond) }

func (r *runner) run() error {
	if r.vm == nil || r.vm.Batch || r.vm.Pipeline == nil {
		return r.fail("load", errors.New("cannot run: the engine takes one VM's manifest with a pipeline (split batches first)"))
	}
	r.vm.SetDefaults()
	r.p = r.vm.Pipeline
	r.rep.Source = report.Source{Path: r.p.Load.SourcePath, Type: r.p.Load.SourceType}

	if err := r.at("pre_load", "load"); err != nil {
		return err
	}
	if err := r.stage("load", r.load); err != nil {
		return err
	}
	if err := r.stage("inspect", r.inspect); err != nil {
		return err
	}
	if err := r.at("post_inspect", "inspect"); err != nil {
		return err
	}
	if err := r.at("pre_fix", "fix"); err != nil {
		return err
	}
	if err := r.stage("fix", r.fix); err != nil {
		return err
	}
	if err := r.at("post_fix", "fix"); err != nil {
		return err
	}
	if err := r.stage("convert", r.convert); err != nil {
		return err
	}
	if err := r.at("post_convert", "convert"); err != nil {
		return err
	}
	err := r.stage("validate", r.validate)
	switch {
	case r.hashes != nil:
		r.rep.Artifacts = append(<-r.hashes, r.rep.Artifacts...)
	case r.converted:
		r.rep.Artifacts = append(r.artifacts(false), r.rep.Artifacts...)
	}
	if err == nil {
		err = r.at("post_validate", "validate")
	}
	if err != nil || !r.tgt.libvirt() {
		return err
	}
	// Only a job whose target asks for libvirt has this stage.
	return r.stage("define", r.define)
}

// at calls the caller's Boundary at point; its error fails the job,
// counted against stage.
func (r *runner) at(point, stage string) error {
	if r.o.Boundary == nil {
		return nil
	}
	if err := r.ctx.Err(); err != nil {
		return err
	}
	if err := r.o.Boundary(r.ctx, point, r.rep); err != nil {
		r.rep.Error = &report.Failure{Stage: stage, Message: err.Error()}
		return err
	}
	return nil
}

// errSkip is returned by a stage that decided not to run; its text is the reason.
type errSkip struct{ reason string }

func (e errSkip) Error() string { return e.reason }

func skip(format string, a ...any) error { return errSkip{fmt.Sprintf(format, a...)} }

// softFail marks a stage failed in the report without stopping the pipeline.
type softFail struct{ err error }

func (e softFail) Error() string { return e.err.Error() }

// stage runs fn as the named stage and records its outcome. fn returns the
// stage's result through set.
func (r *runner) stage(name string, fn func(set func(any)) error) error {
	st := report.Stage{Name: name, StartedAt: now()}
	start := time.Now()
	r.progress(name, 0, 0, 0, "")
	err := r.ctx.Err()
	if err == nil {
		err = fn(func(v any) { st.Result = v })
	}
	st.Seconds = time.Since(start).Seconds()
	var sk errSkip
	var sf softFail
	switch {
	case err == nil:
		st.Status = "ok"
	case errors.As(err, &sk):
		st.Status, st.Reason, err = "skipped", sk.reason, nil
	case errors.As(err, &sf):
		st.Status, st.Error, err = "failed", sf.err.Error(), nil
	default:
		err = r.files.explain(err)
		if cause := context.Cause(r.ctx); isSourceChange(cause) {
			err = cause
		} else if r.ctx.Err() != nil || errors.Is(err, qemuimg.ErrTerminated) {
			err = fmt.Errorf("cancelled during %s: %w", name, err)
		}
		st.Status, st.Error = "failed", err.Error()
		r.rep.Error = &report.Failure{Stage: name, Message: err.Error()}
	}
	r.rep.Stages = append(r.rep.Stages, st)
	if err == nil {
		r.progress(name, 100, 0, 0, "")
	}
	return err
}

// fail records a failure that happened before any stage could start.
func (r *runner) fail(stage string, err error) error {
	r.rep.Stages = append(r.rep.Stages, report.Stage{Name: stage, Status: "failed", StartedAt: now(), Error: err.Error()})
	r.rep.Error = &report.Failure{Stage: stage, Message: err.Error()}
	return err
}

// progress reports pct (0-100) of stage as the job's overall percentage.
func (r *runner) progress(stage string, pct int, done, total int64, text string) {
	if r.o.Progress == nil {
		return
	}
	b := bands[stage]
	overall := b[0] + (b[1]-b[0])*min(max(pct, 0), 100)/100
	if overall < r.lastPct {
		overall = r.lastPct
	}
	r.lastPct = overall
	r.o.Progress(progress.Update{Stage: stage, Percent: overall, Done: done, Total: total, Text: text})
}

func (r *runner) warn(format string, a ...any) {
	r.rep.Warnings = append(r.rep.Warnings, fmt.Sprintf(format, a...))
}

// writeReport writes NAME.report.json into the output directory, never over an
// existing file.
func (r *runner) writeReport() error {
	p := filepath.Join(r.outDir, manifest.ReportFile(r.vm.Name))
	r.rep.ReportPath = filepath.Join(r.outShow, manifest.ReportFile(r.vm.Name))
	b, err := json.MarshalIndent(r.rep, "", "  ")
	if err != nil {
		r.rep.ReportPath = ""
		return fmt.Errorf("cannot encode report: %w", err)
	}
	if err := writeNew(p, append(b, '\n'), r.owner.setFile); err != nil {
		r.rep.ReportPath = ""
		return fmt.Errorf("cannot write report: %w", r.files.explain(err))
	}
	return nil
}

// writeNew writes data to a new file at p through p.part, never replacing
// an existing file. Neither name is ever followed as a symbolic link
// (O_EXCL|O_NOFOLLOW, renameat2 RENAME_NOREPLACE), so only the directory
// part of p decides where the data goes.
//
// prep gives the new file its owner and mode before any data is written.
func writeNew(p string, data []byte, prep func(*os.File) error) error {
	if _, err := os.Lstat(p); err == nil {
		return fmt.Errorf("%s exists; not overwriting", p)
	}
	tmp := p + ".part"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	err = prep(f)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = noreplace.Rename(tmp, p)
		if errors.Is(err, fs.ErrExist) {
			err = fmt.Errorf("%s exists; not overwriting", p)
		}
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

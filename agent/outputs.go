package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// partSuffix ends the name of a file still being written. The names the
// engine writes beside the disks are manifest.SideFiles of the VM's name.
const partSuffix = ".part"

// outputNames says which file names of a manifest's own
// convert.output_dir a job may write: its disks (output_path, the
// "-diskN" names of further disks, the names convert.disks gives),
// NAME.xml, NAME.report.json and NAME.boot-console.log, each also as
// FILE.part.
type outputNames struct {
	dir    string // the output_dir, cleaned; "" when the job uses the agent's own
	report string // the engine's report, NAME.report.json
	exact  map[string]bool
	stem   string // output_path without its extension, for stem-diskN.ext
	ext    string
}

// outputsOf reads the output names from a job's single-VM manifest.
func outputsOf(vmJSON []byte) outputNames {
	var vm manifest.Manifest
	if json.Unmarshal(vmJSON, &vm) != nil || vm.Pipeline == nil || vm.Pipeline.Convert == nil || vm.Pipeline.Convert.OutputDir == "" {
		return outputNames{}
	}
	vm.SetDefaults()
	c := vm.Pipeline.Convert
	if !filepath.IsAbs(c.OutputDir) {
		return outputNames{}
	}
	o := outputNames{dir: filepath.Clean(c.OutputDir), report: manifest.ReportFile(vm.Name), exact: map[string]bool{}}
	for _, n := range manifest.SideFiles(vm.Name) {
		o.exact[n] = true
	}
	if c.OutputPath != "" {
		o.exact[c.OutputPath] = true
		o.ext = filepath.Ext(c.OutputPath)
		o.stem = strings.TrimSuffix(c.OutputPath, o.ext)
	}
	for _, d := range c.Disks {
		if d.OutputPath != "" {
			o.exact[d.OutputPath] = true
		}
	}
	return o
}

// matches reports whether name (without .part) is one the job may write.
func (o outputNames) matches(name string) bool {
	if o.exact[name] {
		return true
	}
	if o.stem == "" || !strings.HasPrefix(name, o.stem+"-disk") || !strings.HasSuffix(name, o.ext) {
		return false
	}
	n := strings.TrimSuffix(strings.TrimPrefix(name, o.stem+"-disk"), o.ext)
	i, err := strconv.Atoi(n)
	return err == nil && i >= 2 && strconv.Itoa(i) == n
}

// keptOutputs lists the names in the job's own output_dir that it may
// write and that exist before it starts: they are someone else's and never
// removed by cleanOutputsLocked.
func keptOutputs(vmJSON []byte) []string {
	o := outputsOf(vmJSON)
	if o.dir == "" {
		return nil
	}
	names, _ := listNoFollow(o.dir)
	var kept []string
	for _, n := range names {
		if o.matches(strings.TrimSuffix(n, partSuffix)) {
			kept = append(kept, n)
		}
	}
	return kept
}

// listNoFollow lists dir, reached without following a symbolic link on
// the way (the directory is the user's; root must not list, or later
// unlink in, a directory a swapped link leads to).
func listNoFollow(dir string) ([]string, error) {
	fd, err := unix.Openat2(unix.AT_FDCWD, dir, &unix.OpenHow{
		Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS})
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), dir)
	defer f.Close()
	return f.Readdirnames(-1)
}

// SharedFile in a job's directory says that another job wrote into the
// same convert.output_dir while this one ran: the agent touches it when
// it starts the second. Files there are then told apart by the report
// only.
const SharedFile = "shared-output"

// CleanOutputs removes what the job in jobDir wrote into its manifest's
// own convert.output_dir when it did not complete (the agent's own
// per-job directory is removed whole by the agent): partial disks
// (FILE.part), and disks, NAME.xml, NAME.boot-console.log and the engine's
// NAME.report.json, so that a failed job leaves nothing that looks like a
// result and a job after it into the same directory does not fail on its
// leftovers. The failure report stays in failed/ beside the manifest. It
// returns the names removed.
//
// The job unit runs it as its ExecStopPost (hyper2kvmd worker
// --clean-outputs), after the worker is gone however it ended (a kill -9
// included): only the unit's sandbox may write where the job wrote; the
// agent's own (ProtectSystem=strict) may not.
//
// A file is the job's when the worker's report names it; otherwise, unless
// another job used that directory meanwhile (SharedFile), when it has a
// name the job writes, is a regular file changed since the job started
// and was not there before (JobSpec.KeptOutputs), and, for NAME.part, no
// conversion holds its lock. A NAME.report.json must also name this job.
// Symbolic links are never followed.
func CleanOutputs(jobDir string) ([]string, error) {
	data, err := os.ReadFile(filepath.Join(jobDir, JobFile))
	if err != nil {
		return nil, fmt.Errorf("cannot read job: %w", err)
	}
	var spec JobSpec
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, fmt.Errorf("cannot parse %s: %w", JobFile, err)
	}
	vm, err := os.ReadFile(filepath.Join(jobDir, ManifestFile))
	if err != nil {
		return nil, fmt.Errorf("cannot read job manifest: %w", err)
	}
	rep, _ := readReport(jobDir)
	if rep != nil && rep.Status == report.Completed {
		return nil, nil
	}
	_, serr := os.Lstat(filepath.Join(jobDir, SharedFile))
	return cleanOutputDir(outputsOf(vm), spec.ID, spec.StartedAt, spec.KeptOutputs, rep, serr == nil)
}

func cleanOutputDir(o outputNames, id string, started time.Time, keptNames []string, rep *report.Report, shared bool) ([]string, error) {
	if o.dir == "" || started.IsZero() {
		return nil, nil
	}
	dfd, err := unix.Openat2(unix.AT_FDCWD, o.dir, &unix.OpenHow{
		Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot open output directory %s: %w", o.dir, err)
	}
	dir := os.NewFile(uintptr(dfd), o.dir)
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("cannot list output directory %s: %w", o.dir, err)
	}
	ours := reportedOutputs(rep, id, o.dir)
	kept := map[string]bool{}
	for _, n := range keptNames {
		kept[n] = true
	}
	since := started.Add(-time.Second) // mtimes may be coarser than the clock
	var removed []string
	var errs []error
	for _, n := range names {
		base := strings.TrimSuffix(n, partSuffix)
		part := base != n
		if !o.matches(base) || kept[n] {
			continue
		}
		var st unix.Stat_t
		if unix.Fstatat(dfd, n, &st, unix.AT_SYMLINK_NOFOLLOW) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			continue
		}
		mine := ours[n]
		if !mine && !shared && time.Unix(st.Mtim.Unix()).After(since) {
			switch {
			case part:
				mine = unlocked(dfd, n)
			case base == o.report:
				mine = reportOf(dfd, n) == id
			default:
				mine = true
			}
		}
		if !mine {
			continue
		}
		if err := unix.Unlinkat(dfd, n, 0); err != nil {
			errs = append(errs, fmt.Errorf("cannot remove %s: %w", filepath.Join(o.dir, n), err))
			continue
		}
		removed = append(removed, n)
	}
	return removed, errors.Join(errs...)
}

// cleanOutputsLocked is CleanOutputs from the agent, for a job that did not
// complete, in case the unit's ExecStopPost could not (the machine
// stopped). The agent's sandbox usually cannot write there; a failure is
// only logged at debug level. Called with a.mu held.
func (a *Agent) cleanOutputsLocked(r *record, rep *report.Report) {
	o := outputsOf(r.VM)
	if o.dir == "" || r.StartedAt.IsZero() {
		return
	}
	_, serr := os.Lstat(filepath.Join(r.JobDir, SharedFile))
	removed, err := cleanOutputDir(o, r.ID, r.StartedAt, r.KeptOutputs, rep, serr == nil || a.sharesOutputDir(r, o.dir))
	if err != nil {
		a.log.Debugf(jobFields(r), "%v", err)
	}
	if len(removed) > 0 {
		a.log.Infof(jobFields(r), "job %s did not complete: removed what it wrote into %s: %s", r.ID, o.dir, strings.Join(removed, ", "))
	}
}

// markSharedLocked touches SharedFile in the job directory of every running job
// writing into the same output_dir as r, and in r's when there is one.
// Called with a.mu held, before r's unit starts.
func (a *Agent) markSharedLocked(r *record) {
	o := outputsOf(r.VM)
	if o.dir == "" {
		return
	}
	mark := func(dir string) {
		if f, err := os.OpenFile(filepath.Join(dir, SharedFile), os.O_CREATE|os.O_WRONLY|unix.O_NOFOLLOW, 0o600); err == nil {
			f.Close()
		}
	}
	for _, other := range a.st.live {
		if other == r || other.State != jobs.Running || other.JobDir == "" || outputsOf(other.VM).dir != o.dir {
			continue
		}
		mark(other.JobDir)
		mark(r.JobDir)
	}
}

// reportedOutputs are the file names in dir the worker's report says the
// job wrote: its artifacts, the disks CONVERT finished and the engine's
// NAME.report.json.
func reportedOutputs(rep *report.Report, id, dir string) map[string]bool {
	out := map[string]bool{}
	if rep == nil || rep.JobID != "" && rep.JobID != id {
		return out
	}
	add := func(p string) {
		if p != "" && filepath.Dir(filepath.Clean(p)) == dir {
			out[filepath.Base(p)] = true
		}
	}
	for _, art := range rep.Artifacts {
		add(art.Path)
	}
	add(rep.ReportPath)
	for _, st := range rep.Stages {
		if st.Name != "convert" {
			continue
		}
		if list, ok := st.Result.([]any); ok {
			for _, e := range list {
				if m, ok := e.(map[string]any); ok {
					if p, ok := m["output"].(string); ok {
						add(p)
					}
				}
			}
		}
	}
	return out
}

// sharesOutputDir reports whether another job ran with the same
// output_dir while r ran: its files are then told apart only by r's report.
func (a *Agent) sharesOutputDir(r *record, dir string) bool {
	for _, o := range a.st.Jobs {
		if o == r || o.StartedAt.IsZero() {
			continue
		}
		if o.State != jobs.Running && o.FinishedAt.Before(r.StartedAt) {
			continue
		}
		if outputsOf(o.VM).dir == dir {
			return true
		}
	}
	return false
}

// unlocked reports whether no process holds the flock qemuimg.Convert
// keeps on a NAME.part while it writes it: one nobody holds is a leftover.
func unlocked(dfd int, name string) bool {
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return false
	}
	unix.Flock(fd, unix.LOCK_UN)
	return true
}

// reportOf is the job_id of the engine report name in dfd ("" when it
// cannot be read as one).
func reportOf(dfd int, name string) string {
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return ""
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 16<<20))
	if err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	var rep struct {
		JobID string `json:"job_id"`
	}
	if json.Unmarshal(data, &rep) != nil {
		return ""
	}
	return rep.JobID
}

// Package apitest is an in-memory stand-in for the agent behind the bridge's
// api.Client interface, for the bridge's fast unit tests and for browser
// tests of the dashboard that run without the real-systemd box. It checks
// manifests only the way the original product did (required fields), so it
// is never proof of the agent's behaviour: the end-to-end tests in test/
// run the bridge against the real agent.
package apitest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/progress"
)

// Fake is a fake agent. The zero value is not usable; use New.
type Fake struct {
	// Step is how long a simulated job spends on each progress step; 0
	// leaves submitted jobs pending until the test moves them with Set.
	Step time.Duration

	mu      sync.Mutex
	err     error
	jobs    map[string]jobs.Job
	order   []string
	next    int
	subs    map[int]chan apitype.Event
	nextSub int
	started time.Time
	// Submitted holds every manifest body Submit accepted.
	submitted [][]byte
	// pathState and pathResult are GetStatus' path_unit_state and
	// path_unit_result ("" and "": an agent that does not say).
	pathState, pathResult string
	// retryErr, when set, is what Retry answers (polkit refusing).
	retryErr error
	// logs are JobLog's lines by format; logErr what it answers instead.
	logs   map[string][]string
	logErr error
	// logCalls records every JobLog job id; logFunc, when set, answers.
	logCalls  []string
	logFunc   func(id, format string) []string
	reports   map[string][]byte // JobReport's answers by job id
	images    []apitype.Image   // ListImages's answer
	imageDirs []string
	// queue is SetQueue's state, queueErr what it answers instead
	// (fleet.go); schedules is Schedules' answer.
	queue     string
	queueErr  error
	schedules []apitype.Schedule
}

// SetLog makes JobLog answer lines for format ("short" or "json"), or err.
func (f *Fake) SetLog(format string, lines []string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.logs == nil {
		f.logs = map[string][]string{}
	}
	f.logs[format], f.logErr = lines, err
}

// SetLogFunc makes JobLog answer f(id, format), the whole log, every time.
func (f *Fake) SetLogFunc(fn func(id, format string) []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logFunc = fn
}

// LogCalls is the job ids JobLog was asked for.
func (f *Fake) LogCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.logCalls...)
}

// JobLog answers the lines SetLog gave, the last lines of them, and
// cursor "end" (after "end", nothing).
func (f *Fake) JobLog(ctx context.Context, id string, lines int, after, format string, interactive bool) ([]string, string, error) {
	if err := f.failing(); err != nil {
		return nil, "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.jobs[id]; !ok {
		return nil, "", apierr.New(apierr.NoSuchJob, "cannot find job %s", id)
	}
	f.logCalls = append(f.logCalls, id)
	if f.logErr != nil {
		return nil, "", f.logErr
	}
	if after == "end" {
		return []string{}, "end", nil
	}
	all := f.logs[format]
	if f.logFunc != nil {
		all = f.logFunc(id, format)
	}
	if lines > 0 && len(all) > lines {
		all = all[len(all)-lines:]
	}
	return append([]string{}, all...), "end", nil
}

// DenyRetry makes Retry answer err (nil: retry works), as an agent whose
// polkit refuses the caller the right to retry.
func (f *Fake) DenyRetry(err error) {
	f.mu.Lock()
	f.retryErr = err
	f.mu.Unlock()
}

// SetPathUnit sets what GetStatus says of hyper2kvmd.path.
func (f *Fake) SetPathUnit(state, result string) {
	f.mu.Lock()
	f.pathState, f.pathResult = state, result
	f.mu.Unlock()
}

// New returns an empty fake agent.
func New() *Fake {
	return &Fake{jobs: map[string]jobs.Job{}, subs: map[int]chan apitype.Event{}, started: time.Now()}
}

// FailWith makes every call return err (nil restores normal answers), e.g.
// dbusapi.ErrNoBus to play an unreachable agent.
func (f *Fake) FailWith(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

// Submitted returns the manifests Submit accepted.
func (f *Fake) Submitted() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.submitted...)
}

// Set stores j (adding it when new) and announces the change to watchers.
func (f *Fake) Set(j jobs.Job) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setLocked(j)
}

func (f *Fake) setLocked(j jobs.Job) {
	kind := apitype.JobChanged
	if _, ok := f.jobs[j.ID]; !ok {
		kind = apitype.JobNew
		f.order = append(f.order, j.ID)
	}
	if j.Unit == "" {
		j.Unit = jobs.UnitName(j.ID)
	}
	f.jobs[j.ID] = j
	ev := apitype.Event{Kind: kind, Job: j, At: time.Now()}
	for _, ch := range f.subs {
		select {
		case ch <- ev:
		default: // a slow watcher loses events, as a bus client would
		}
	}
}

func (f *Fake) failing() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// GetStatus counts the jobs.
func (f *Fake) GetStatus(ctx context.Context) (apitype.Status, error) {
	if err := f.failing(); err != nil {
		return apitype.Status{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	st := apitype.Status{Mode: "manifest", Running: true, MaxWorkers: 3, Version: "fake",
		UptimeSeconds: time.Since(f.started).Seconds(), PathUnitState: f.pathState, PathUnitResult: f.pathResult,
		Host: "fake-a", Queue: f.queueState()}
	today := time.Now().Format(time.DateOnly)
	for _, j := range f.jobs {
		switch {
		case j.State == jobs.Pending:
			st.QueueDepth++
		case j.State == jobs.Running:
			st.ActiveJobs++
		case j.State == jobs.Completed && j.FinishedAt.Format(time.DateOnly) == today:
			st.ProcessedToday++
		case j.State == jobs.Failed && j.FinishedAt.Format(time.DateOnly) == today:
			st.FailedToday++
		case j.State == jobs.Cancelled && j.FinishedAt.Format(time.DateOnly) == today:
			st.CancelledToday++
		}
	}
	return st, nil
}

// GetMetrics counts the jobs as the agent does.
func (f *Fake) GetMetrics(ctx context.Context) (apitype.Metrics, error) {
	if err := f.failing(); err != nil {
		return apitype.Metrics{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var c apitype.MetricsCounter
	for _, id := range f.order {
		j := f.jobs[id]
		c.Add(&j)
	}
	return c.Metrics(), nil
}

// ListJobs returns the jobs matching f, oldest first.
func (f *Fake) ListJobs(ctx context.Context, flt apitype.Filter) ([]jobs.Job, error) {
	if err := f.failing(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []jobs.Job{}
	for _, id := range f.order {
		j := f.jobs[id]
		if len(flt.States) > 0 && !hasState(flt.States, j.State) {
			continue
		}
		if flt.Batch != "" && j.Batch != flt.Batch {
			continue
		}
		out = append(out, j)
	}
	return out, nil
}

// ListJobsPage pages ListJobs as the agent does (newest first unless
// p.OldestFirst; jobs are taken to be created in the order they were added).
func (f *Fake) ListJobsPage(ctx context.Context, flt apitype.Filter, p apitype.Page) ([]jobs.Job, int, error) {
	list, err := f.ListJobs(ctx, flt)
	if err != nil {
		return nil, 0, err
	}
	page, total := p.Slice(list)
	return page, total, nil
}

func hasState(l []jobs.State, s jobs.State) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// GetJob returns job id or a no-such-job error.
func (f *Fake) GetJob(ctx context.Context, id string) (jobs.Job, error) {
	if err := f.failing(); err != nil {
		return jobs.Job{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.jobs[id]
	if !ok {
		return jobs.Job{}, apierr.New(apierr.NoSuchJob, "cannot find job %s", id)
	}
	return j, nil
}

// doc is the part of a manifest the fake looks at.
type doc struct {
	Version  string `yaml:"version"`
	Name     string `yaml:"name"`
	Batch    bool   `yaml:"batch"`
	Pipeline *struct {
		Load struct {
			SourceType string `yaml:"source_type"`
			SourcePath string `yaml:"source_path"`
		} `yaml:"load"`
	} `yaml:"pipeline"`
	VMs []struct {
		Name     string `yaml:"name"`
		Pipeline *struct {
			Load struct {
				SourceType string `yaml:"source_type"`
				SourcePath string `yaml:"source_path"`
			} `yaml:"load"`
		} `yaml:"pipeline"`
	} `yaml:"vms"`
}

// vm is one VM of a checked manifest.
type vm struct{ name, source string }

func check(manifest []byte) ([]vm, []string) {
	var d doc
	if err := yaml.Unmarshal(manifest, &d); err != nil {
		return nil, []string{"manifest: " + err.Error()}
	}
	var problems []string
	if d.Version != "1.0" {
		problems = append(problems, fmt.Sprintf("version: must be \"1.0\", not %q", d.Version))
	}
	types := map[string]bool{"vmdk": true, "ova": true, "ovf": true, "vhd": true, "vhdx": true, "raw": true, "qcow2": true}
	load := func(prefix, typ, path string) {
		if typ == "" {
			problems = append(problems, prefix+"pipeline.load.source_type: is required")
		} else if !types[typ] {
			problems = append(problems, prefix+"pipeline.load.source_type: must be one of vmdk, ova, ovf, vhd, vhdx, raw, qcow2")
		}
		if path == "" {
			problems = append(problems, prefix+"pipeline.load.source_path: is required")
		} else if !strings.HasPrefix(path, "/") {
			problems = append(problems, prefix+"pipeline.load.source_path: must be an absolute path")
		}
	}
	var vms []vm
	if d.Batch {
		if len(d.VMs) == 0 {
			problems = append(problems, "vms: a batch needs at least one VM")
		}
		for i, v := range d.VMs {
			p := fmt.Sprintf("vms[%d].", i)
			if v.Name == "" {
				problems = append(problems, p+"name: is required")
			}
			if v.Pipeline == nil {
				problems = append(problems, p+"pipeline: is required")
				continue
			}
			load(p, v.Pipeline.Load.SourceType, v.Pipeline.Load.SourcePath)
			vms = append(vms, vm{v.Name, v.Pipeline.Load.SourcePath})
		}
	} else {
		if d.Name == "" {
			problems = append(problems, "name: is required")
		}
		if d.Pipeline == nil {
			problems = append(problems, "pipeline: is required")
		} else {
			load("", d.Pipeline.Load.SourceType, d.Pipeline.Load.SourcePath)
			vms = append(vms, vm{d.Name, d.Pipeline.Load.SourcePath})
		}
	}
	return vms, problems
}

// Validate checks the required fields.
func (f *Fake) Validate(ctx context.Context, manifest []byte) (bool, []string, error) {
	if err := f.failing(); err != nil {
		return false, nil, err
	}
	_, problems := check(manifest)
	return len(problems) == 0, problems, nil
}

// Submit queues one job per VM; with Step > 0 the jobs then run through the
// stages and complete (or fail when the source path contains "fail").
func (f *Fake) Submit(ctx context.Context, manifest []byte, o apitype.SubmitOptions, interactive bool) ([]jobs.Job, error) {
	if err := f.failing(); err != nil {
		return nil, err
	}
	vms, problems := check(manifest)
	// Like an agent whose validation does not look at the files: a source
	// under /missing/ passes Validate and is refused here.
	for i, v := range vms {
		if strings.HasPrefix(v.source, "/missing/") {
			p := "pipeline.load.source_path"
			if len(vms) > 1 {
				p = fmt.Sprintf("vms[%d].%s", i, p)
			}
			problems = append(problems, fmt.Sprintf("%s: cannot read %s: no such file or directory", p, v.source))
		}
	}
	if len(problems) > 0 {
		return nil, &apierr.Error{Kind: apierr.InvalidManifest, Message: "cannot accept the manifest: it is invalid", Details: problems}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.submitted = append(f.submitted, append([]byte(nil), manifest...))
	batch := ""
	if len(vms) > 1 {
		batch = fmt.Sprintf("batch-%d", f.next+1)
	}
	name := o.Name
	if name == "" {
		name = vms[0].name + ".json"
	}
	var out []jobs.Job
	for _, v := range vms {
		f.next++
		j := jobs.Job{
			ID: fmt.Sprintf("job-%d", f.next), Name: v.name, Batch: batch, Manifest: name,
			State: jobs.Pending, Progress: 0, SubmittedBy: 0, CreatedAt: time.Now(),
		}
		f.setLocked(j)
		out = append(out, f.jobs[j.ID])
		if f.Step > 0 {
			go f.simulate(j.ID, strings.Contains(v.source, "fail"))
		}
	}
	return out, nil
}

// simulate moves a job through the pipeline unless it is cancelled.
func (f *Fake) simulate(id string, fail bool) {
	step := func(mut func(j *jobs.Job)) bool {
		time.Sleep(f.Step)
		f.mu.Lock()
		defer f.mu.Unlock()
		j := f.jobs[id]
		if j.State.Ready() {
			return false
		}
		mut(&j)
		f.setLocked(j)
		return !j.State.Ready()
	}
	if !step(func(j *jobs.Job) { j.State, j.StartedAt = jobs.Running, time.Now() }) {
		return
	}
	for _, stage := range progress.Stages {
		for pct := 0; pct <= 100; pct += 50 {
			ok := step(func(j *jobs.Job) {
				j.Stage, j.Progress = stage, pct
				j.StatusText = progress.Format(progress.Update{Stage: stage, Percent: pct})
				if stage == "convert" {
					j.BytesTotal, j.BytesDone = 1<<20, int64(pct)<<20/100
				}
				if fail && stage == "convert" && pct == 50 {
					j.State, j.Error, j.ErrorStage, j.FinishedAt = jobs.Failed, "cannot convert: simulated failure", stage, time.Now()
				}
			})
			if !ok {
				return
			}
		}
	}
	step(func(j *jobs.Job) {
		j.State, j.FinishedAt = jobs.Completed, time.Now()
		j.Outputs = []string{"/var/lib/hyper2kvm/output/" + time.Now().Format(time.DateOnly) + "/" + j.ID + "/" + j.Name + ".qcow2"}
	})
}

// Cancel ends a pending or running job.
func (f *Fake) Cancel(ctx context.Context, id string, interactive bool) error {
	if err := f.failing(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.jobs[id]
	if !ok {
		return apierr.New(apierr.NoSuchJob, "cannot find job %s", id)
	}
	if j.State.Ready() {
		return apierr.New(apierr.InvalidState, "cannot cancel job %s: it is %s", id, j.State)
	}
	j.State, j.FinishedAt = jobs.Cancelled, time.Now()
	f.setLocked(j)
	return nil
}

// Retry queues a failed or cancelled job again as a new job.
func (f *Fake) Retry(ctx context.Context, id string, interactive bool) (jobs.Job, error) {
	if err := f.failing(); err != nil {
		return jobs.Job{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.retryErr != nil {
		return jobs.Job{}, f.retryErr
	}
	j, ok := f.jobs[id]
	if !ok {
		return jobs.Job{}, apierr.New(apierr.NoSuchJob, "cannot find job %s", id)
	}
	if j.State != jobs.Failed && j.State != jobs.Cancelled {
		return jobs.Job{}, apierr.New(apierr.InvalidState, "cannot retry job %s: it is %s", id, j.State)
	}
	f.next++
	n := jobs.Job{ID: fmt.Sprintf("job-%d", f.next), Name: j.Name, Batch: j.Batch, Manifest: j.Manifest,
		State: jobs.Pending, CreatedAt: time.Now()}
	f.setLocked(n)
	if f.Step > 0 {
		go f.simulate(n.ID, false)
	}
	return f.jobs[n.ID], nil
}

// Watch delivers job changes until ctx ends.
func (f *Fake) Watch(ctx context.Context) (<-chan apitype.Event, error) {
	if err := f.failing(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan apitype.Event, 256)
	f.nextSub++
	id := f.nextSub
	f.subs[id] = ch
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		delete(f.subs, id)
		close(ch)
		f.mu.Unlock()
	}()
	return ch, nil
}

// Watchers is the number of open Watch subscriptions.
func (f *Fake) Watchers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

// IDs lists the job ids, oldest first.
func (f *Fake) IDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.order...)
}

// SetReport makes JobReport answer rep (JSON) for job id.
func (f *Fake) SetReport(id string, rep []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.reports == nil {
		f.reports = map[string][]byte{}
	}
	f.reports[id] = rep
}

// JobReport answers what SetReport gave for id, nothing for a job
// without, NoSuchJob for no job.
func (f *Fake) JobReport(ctx context.Context, id string, interactive bool) ([]byte, error) {
	if err := f.failing(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.jobs[id]; !ok {
		return nil, apierr.New(apierr.NoSuchJob, "cannot find job %s", id)
	}
	return f.reports[id], nil
}

// SetImages makes ListImages answer imgs found in dirs.
func (f *Fake) SetImages(imgs []apitype.Image, dirs []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images, f.imageDirs = imgs, dirs
}

// ListImages answers what SetImages gave.
func (f *Fake) ListImages(ctx context.Context) ([]apitype.Image, []string, error) {
	if err := f.failing(); err != nil {
		return nil, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]apitype.Image{}, f.images...), append([]string{}, f.imageDirs...), nil
}

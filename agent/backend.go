package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/analytics"
	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
	"github.com/hyper2kvm/hyper2kvm/agent/templates"
)

// Status answers GetStatus: counts from the job store and the queue.
func (a *Agent) Status() apitype.Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	pending, running := a.counts()
	s := apitype.Status{Mode: "manifest", Running: a.running, QueueDepth: pending + a.waiting, ActiveJobs: running,
		Host: a.host, Queue: a.queueState(),
		MaxWorkers: a.cfg.MaxConcurrentJobs, UptimeSeconds: a.now().Sub(a.started).Seconds(), Version: a.version}
	// Today as two instants: comparing each job's end with them is far
	// cheaper than its calendar date, which counts at 100,000 jobs.
	now := a.now()
	y, m, d := now.Date()
	from := time.Date(y, m, d, 0, 0, 0, 0, now.Location())
	to := from.AddDate(0, 0, 1)
	for _, r := range a.st.ordered() {
		if r.FinishedAt.Before(from) || !r.FinishedAt.Before(to) {
			continue
		}
		switch r.State {
		case jobs.Completed:
			s.ProcessedToday++
		case jobs.Failed:
			s.FailedToday++
		case jobs.Cancelled:
			s.CancelledToday++
		}
	}
	return s
}

// Jobs lists every job f selects, oldest first.
func (a *Agent) Jobs(f apitype.Filter) []jobs.Job {
	list, _ := a.JobPage(f, apitype.Page{OldestFirst: true})
	return list
}

// Analytics summarises the jobs that finished in [since, until)
// (GetAnalytics; agent/analytics): from the records themselves, which
// keep what D-Bus job properties do not (converted bytes, stage times).
func (a *Agent) Analytics(since, until time.Time) analytics.Summary {
	host, _ := os.Hostname()
	return analytics.Compute(a.Jobs(apitype.Filter{}), host, since, until)
}

// Templates lists the manifest templates as the agent sees them
// (ListTemplates): the same files hyperctl and the bridge read.
func (a *Agent) Templates() ([]*templates.Template, error) {
	return templates.Default().List()
}

// JobPage lists page p of the jobs f selects, and how many f selects. It
// walks the store's creation-ordered index and copies only the page's
// jobs: a list of 100 among 10,000 finished jobs costs one pass over
// pointers, and none at all when nothing is filtered.
func (a *Agent) JobPage(f apitype.Filter, p apitype.Page) ([]jobs.Job, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fleet != nil && len(a.fleet.order) > 0 {
		return a.fleetPageLocked(f, p) // this host's jobs and the fleet's
	}
	order := a.st.ordered()
	n := len(order)
	at := func(i int) *record { // i-th in the page's order
		if p.OldestFirst {
			return order[i]
		}
		return order[n-1-i]
	}
	if len(f.States) == 0 && f.Batch == "" {
		from, to := p.Bounds(n)
		out := make([]jobs.Job, 0, to-from)
		for i := from; i < to; i++ {
			out = append(out, at(i).Job)
		}
		return out, n
	}
	var out []jobs.Job
	total := 0
	for i := range n {
		r := at(i)
		if len(f.States) > 0 && !slices.Contains(f.States, r.State) || f.Batch != "" && r.Batch != f.Batch {
			continue
		}
		if total >= p.Offset && (p.Limit <= 0 || len(out) < p.Limit) {
			out = append(out, r.Job)
		}
		total++
	}
	if out == nil {
		out = []jobs.Job{}
	}
	return out, total
}

// Job returns one job.
func (a *Agent) Job(id string) (jobs.Job, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.st.Jobs[id]
	if r == nil {
		r = a.fleetJobLocked(id) // another host's (fleetview.go)
	}
	if r == nil {
		return jobs.Job{}, apierr.New(apierr.NoSuchJob, "no job %q", id)
	}
	return r.Job, nil
}

// Validate parses and validates a manifest without queuing it.
// Validate answers whether Submit would accept data from uid: the same
// parse and the same checks of files and limits, so that "valid" means it
// will be accepted (short of a queue that fills up in between).
func (a *Agent) Validate(data []byte, uid int64) (bool, []string) {
	a.mu.Lock()
	a.touch()
	a.mu.Unlock()
	m, problems := parseForSubmit(data)
	if len(problems) == 0 {
		problems = a.checkManifest(m, kindSubmitted, uid)
	}
	return len(problems) == 0, problems
}

// Submit queues a manifest for uid. It is claimed directly: written
// atomically into processing/ (owned by uid, so a restart still knows
// whose it is) and turned into jobs before Submit returns.
func (a *Agent) Submit(ctx context.Context, data []byte, o apitype.SubmitOptions, uid int64) ([]jobs.Job, error) {
	return a.submit(ctx, data, o, uid)
}

// Cancel stops a job: a pending one never starts, a running one's unit is
// stopped (the job ends as cancelled when the unit is down).
func (a *Agent) Cancel(ctx context.Context, id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.touch()
	r := a.st.Jobs[id]
	if o := a.fleetJobLocked(id); r == nil && o != nil {
		return apierr.New(apierr.InvalidState, "%s", fleetElsewhere(o))
	}
	if r == nil {
		return apierr.New(apierr.NoSuchJob, "no job %q", id)
	}
	switch r.State {
	case jobs.Pending:
		r.Cancel = true
		a.finishLocked(r, jobs.Cancelled, "", "cancelled before it started", nil)
		return nil
	case jobs.Running:
		if !r.Cancel {
			r.Cancel = true
			a.st.touch(r)
			a.save()
		}
		a.log.Infof(jobFields(r), "cancelling job %s: stopping %s", r.ID, r.Unit)
		if err := a.units.Stop(ctx, r.Unit); err != nil {
			return apierr.New(apierr.Internal, "cannot cancel job %s: %v", id, err)
		}
		return nil
	}
	return apierr.New(apierr.InvalidState, "cannot cancel job %s: it is already %s", id, r.State)
}

// Retry queues a failed or cancelled job again as a new job: its VM's
// manifest (or, for a dropped image, the image itself, moved back from
// failed/) is claimed anew. The settled files stay where they are.
//
// The new job keeps the original job's submitter and dropper, whoever
// retries it (uid, an administrator allowed to manage the agent): it
// passes that user's checks again, here and in the worker, which reads
// only what that user could. Retrying with the caller's rights would let
// an administrator's click run a user's refused job as root.
func (a *Agent) Retry(ctx context.Context, id string, uid int64) (jobs.Job, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.touch()
	r := a.st.Jobs[id]
	if r == nil {
		return jobs.Job{}, apierr.New(apierr.NoSuchJob, "no job %q", id)
	}
	if r.State != jobs.Failed && r.State != jobs.Cancelled {
		return jobs.Job{}, apierr.New(apierr.InvalidState, "cannot retry job %s: it is %s; only failed or cancelled jobs are retried", id, r.State)
	}
	if len(r.VM) == 0 {
		return jobs.Job{}, apierr.New(apierr.InvalidState, "cannot retry job %s: its manifest was invalid; correct it and submit it again", id)
	}
	dropper, submitter := r.DropperUID, r.SubmittedBy
	var recs []*record
	if k, ok := queue.KindOf(r.Manifest); ok && k == queue.Image && r.ReportPath != "" {
		settled := filepath.Join(filepath.Dir(r.ReportPath), r.Manifest)
		claimed, err := a.q.PutFile(settled)
		if err != nil {
			return jobs.Job{}, apierr.New(apierr.InvalidState, "cannot retry job %s: %v", id, err)
		}
		recs = a.ingestLocked(ctx, claimed, r.Manifest, kindImage, a.now(), dropper, submitter)
	} else {
		vm, problems := parseForSubmit(r.VM)
		if len(problems) > 0 {
			return jobs.Job{}, &apierr.Error{Kind: apierr.InvalidManifest, Message: "cannot retry: invalid manifest", Details: problems}
		}
		if problems := a.checkManifest(vm, kindSubmitted, dropper); len(problems) > 0 {
			return jobs.Job{}, &apierr.Error{Kind: apierr.InvalidManifest, Message: fmt.Sprintf("cannot retry job %s: invalid manifest for its submitter (uid %d)", id, dropper), Details: problems}
		}
		claimed, err := a.q.Put(nameFromFile(r.Name)+".retry.json", r.VM)
		if err != nil {
			return jobs.Job{}, apierr.New(apierr.Internal, "%v", err)
		}
		if dropper >= 0 {
			// A restart queues the file again for its owner (recoverLocked).
			os.Lchown(filepath.Join(a.q.Dir(queue.Processing), claimed), int(dropper), -1)
		}
		recs = a.ingestLocked(ctx, claimed, r.Manifest, kindSubmitted, a.now(), dropper, submitter)
	}
	if len(recs) == 0 {
		return jobs.Job{}, apierr.New(apierr.InvalidManifest, "cannot retry job %s: the manifest was refused; see failed/", id)
	}
	if uid != submitter {
		a.log.Infof(jobFields(recs[0]), "job %s retried by uid %d as job %s of uid %d", id, uid, recs[0].ID, dropper)
	}
	return recs[0].Job, nil
}

// JobLog is GetJobLog: the last lines (at most MaxLogLines; 0 means
// MaxLogLines) of the journal of job id, after the journal cursor after
// when it is not empty, and the cursor to continue from (after itself when
// nothing new was logged). format is "short" (journalctl -o short-iso) or
// "json" (one journal entry per line). The agent reads the journal as root,
// so the caller's access is decided by whoever calls this (dbusapi).
func (a *Agent) JobLog(ctx context.Context, id string, lines int, after, format string) ([]string, string, error) {
	j, err := a.Job(id)
	if err != nil {
		return nil, "", err
	}
	args, err := jobLogArgs(j.ID, lines, after, format)
	if err != nil {
		return nil, "", err
	}
	cmd := exec.CommandContext(ctx, "journalctl", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, "", apierr.New(apierr.Internal, "cannot read the journal of job %s: %v: %s", j.ID, err, strings.TrimSpace(stderr.String()))
	}
	got, cursor := splitCursor(out)
	if cursor == "" {
		cursor = after
	}
	return got, cursor, nil
}

// maxReportSize bounds a report read for GetJobReport.
const maxReportSize = 8 << 20

// JobReport is GetJobReport: the engine's report of job id as JSON, from
// the settlement in processed/ or failed/ once the job has one, else from
// its job directory; nil while it has none.
func (a *Agent) JobReport(id string) ([]byte, error) {
	a.mu.Lock()
	r, ok := a.st.Jobs[id]
	var jobDir, settled string
	if ok {
		jobDir, settled = r.JobDir, r.ReportPath
	}
	a.mu.Unlock()
	if !ok {
		return nil, apierr.New(apierr.NoSuchJob, "cannot find job %s", id)
	}
	if settled != "" {
		if data, err := readBounded(settled); err == nil {
			var s Settlement
			if json.Unmarshal(data, &s) == nil {
				for _, jr := range s.Jobs {
					if jr.JobID == id && jr.Report != nil {
						return json.Marshal(jr.Report)
					}
				}
			}
		}
	}
	if jobDir != "" {
		rep, err := readReport(jobDir)
		if err != nil {
			return nil, apierr.New(apierr.Internal, "cannot read the report of job %s: %v", id, err)
		}
		if rep != nil && rep.JobID == id {
			return json.Marshal(rep)
		}
	}
	return nil, nil
}

func readBounded(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxReportSize))
}

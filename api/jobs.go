package api

import (
	"math"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/dbusapi"
)

// Job is a job as the REST API shows it: the original product's fields
// (id, name, stage, progress, started_at, elapsed_seconds, status) with true
// values, plus what the original lacked.
type Job struct {
	ID             string     `json:"id"`
	Name           string     `json:"name"`
	Stage          string     `json:"stage"`
	Progress       *int       `json:"progress"` // 0-100; null while the stage cannot tell
	StartedAt      *time.Time `json:"started_at"`
	ElapsedSeconds float64    `json:"elapsed_seconds"`
	Status         jobs.State `json:"status"`
	State          jobs.State `json:"state"` // the same as status, as hyperctl -o json named it; for one release
	Error          string     `json:"error,omitempty"`
	ErrorStage     string     `json:"error_stage,omitempty"`
	FinishedAt     *time.Time `json:"finished_at,omitempty"`
	Outputs        []string   `json:"outputs"`
	ReportPath     string     `json:"report_path,omitempty"`
	Unit           string     `json:"unit"`
	Batch          string     `json:"batch,omitempty"`
	Manifest       string     `json:"manifest"`
	StatusText     string     `json:"status_text"`
	SubmittedBy    int64      `json:"submitted_by"`
	Priority       int        `json:"priority"`
	CreatedAt      time.Time  `json:"created_at"`
	BytesDone      int64      `json:"bytes_done"`
	BytesTotal     int64      `json:"bytes_total"`
	// Warnings are the report's warnings, kept by the agent when the job
	// ended (at most 50; the report has them all), and how many. Left out
	// of job lists: the agent's list rows do not carry them, and a count
	// of 0 there would be a lie.
	Warnings     []string `json:"warnings,omitzero"`
	WarningCount *int     `json:"warning_count,omitempty"`
	// DetailsHidden says that paths, error and warnings were left out: a
	// list or event stream read without the token over TCP shows jobs
	// as any local user may see them.
	DetailsHidden bool `json:"details_hidden,omitempty"`
	// Host is the name of the machine the agent (and so the job) runs on:
	// the bridge runs beside the agent, so it is the bridge's host name.
	Host string `json:"host"`
	// Attempts are the runs that failed and were retried (manifest
	// retry), oldest first, each with the host it ran on and its error: a
	// detail, and like warnings left out of job lists, whose rows do not
	// carry them.
	Attempts []Attempt `json:"attempts,omitzero"`
}

// Attempt is one failed run of a job that was run again.
type Attempt struct {
	Attempt int       `json:"attempt"`
	Host    string    `json:"host"`
	Stage   string    `json:"stage,omitempty"`
	Error   string    `json:"error"`
	EndedAt time.Time `json:"ended_at"`
	RetryAt time.Time `json:"retry_at"`
}

// jobJSON converts the agent's record at time now, on host.
func jobJSON(j jobs.Job, now time.Time, host string) Job {
	out := Job{Host: host,
		ID: j.ID, Name: j.Name, Stage: j.Stage, Status: j.State, State: j.State,
		Error: j.Error, ErrorStage: j.ErrorStage, Outputs: j.Outputs, ReportPath: j.ReportPath,
		Unit: j.Unit, Batch: j.Batch, Manifest: j.Manifest, StatusText: j.StatusText,
		SubmittedBy: j.SubmittedBy, Priority: j.Priority, CreatedAt: j.CreatedAt,
		BytesDone: j.BytesDone, BytesTotal: j.BytesTotal,
	}
	if j.Host != "" { // the host that claimed it, in a fleet sharing one store
		out.Host = j.Host
	}
	if out.Outputs == nil {
		out.Outputs = []string{}
	}
	out.Warnings = j.Warnings
	if out.Warnings == nil {
		out.Warnings = []string{}
	}
	n := len(out.Warnings)
	out.WarningCount = &n
	out.Attempts = []Attempt{}
	for _, a := range j.Attempts {
		out.Attempts = append(out.Attempts, Attempt{Attempt: a.Attempt, Host: a.Host, Stage: a.Stage, Error: a.Error, EndedAt: a.EndedAt, RetryAt: a.RetryAt})
	}
	if out.Unit == "" {
		out.Unit = jobs.UnitName(j.ID)
	}
	if j.Progress >= 0 {
		p := min(j.Progress, 100)
		out.Progress = &p
	}
	if j.State == jobs.Completed {
		// done is all done, whatever the last stage last said
		p := 100
		out.Progress = &p
	}
	if !j.StartedAt.IsZero() {
		t := j.StartedAt
		out.StartedAt = &t
		end := now
		if !j.FinishedAt.IsZero() {
			end = j.FinishedAt
		}
		if d := end.Sub(t).Seconds(); d > 0 {
			out.ElapsedSeconds = math.Round(d*10) / 10
		}
	}
	if !j.FinishedAt.IsZero() {
		t := j.FinishedAt
		out.FinishedAt = &t
	}
	return out
}

// jobList is the answer of the list endpoints: one page of jobs, and
// total, how many jobs match (the original's field; with paging it is
// not len(jobs)).
type jobList struct {
	Jobs   []Job `json:"jobs"`
	Total  int   `json:"total"`
	Limit  int   `json:"limit"` // 0: no limit
	Offset int   `json:"offset"`
}

// maxOffset keeps ?limit= and ?offset= inside int everywhere.
const maxOffset = 1 << 30

// parsePage reads ?limit= (default apitype.DefaultPageLimit, 0 for all),
// ?offset= and ?order=newest|oldest.
func parsePage(q url.Values) (apitype.Page, error) {
	p := apitype.Page{Limit: apitype.DefaultPageLimit}
	for _, k := range []string{"limit", "offset"} {
		v := strings.TrimSpace(q.Get(k))
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > maxOffset {
			return p, apierr.New(apierr.InvalidArgs, "cannot use %s %q: want a whole number from 0 (limit 0: all jobs)", k, v)
		}
		if k == "limit" {
			p.Limit = n
		} else {
			p.Offset = n
		}
	}
	switch o := strings.ToLower(strings.TrimSpace(q.Get("order"))); o {
	case "", "newest":
	case "oldest":
		p.OldestFirst = true
	default:
		return p, apierr.New(apierr.InvalidArgs, "cannot use order %q: use newest or oldest", o)
	}
	return p, nil
}

// statusFilter maps the ?status= words (the original's and ours) to states.
var statusFilter = map[string][]jobs.State{
	"pending":    {jobs.Pending},
	"processing": {jobs.Running},
	"active":     {jobs.Running},
	"running":    {jobs.Running},
	"completed":  {jobs.Completed},
	"failed":     {jobs.Failed},
	"cancelled":  {jobs.Cancelled},
	"canceled":   {jobs.Cancelled},
	"finished":   {jobs.Completed, jobs.Failed, jobs.Cancelled},
}

// parseStatus reads a comma-separated ?status= list; empty means all.
func parseStatus(v string) ([]jobs.State, error) {
	var out []jobs.State
	for _, w := range strings.Split(v, ",") {
		w = strings.ToLower(strings.TrimSpace(w))
		if w == "" || w == "all" {
			continue
		}
		st, ok := statusFilter[w]
		if !ok {
			return nil, apierr.New(apierr.InvalidArgs,
				"cannot filter by status %q: use pending, processing (= active, running), completed, failed, cancelled or finished", w)
		}
		for _, s := range st {
			if !containsState(out, s) {
				out = append(out, s)
			}
		}
	}
	return out, nil
}

func containsState(l []jobs.State, s jobs.State) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func (s *Server) writeJobs(w http.ResponseWriter, r *http.Request, f apitype.Filter) {
	p, err := parsePage(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, apierr.InvalidArgs, err.Error(), nil)
		return
	}
	list, total, err := s.client(r).ListJobsPage(r.Context(), f, p)
	if err != nil {
		fail(w, r, "list jobs", err)
		return
	}
	now := s.cfg.Now()
	out := jobList{Jobs: make([]Job, 0, len(list)), Total: total, Limit: p.Limit, Offset: p.Offset}
	details := s.mayReadDetails(r)
	for _, j := range list {
		jj := s.jobView(j, now, details)
		jj.Warnings, jj.WarningCount, jj.Attempts = nil, nil, nil
		out.Jobs = append(out.Jobs, jj)
	}
	writeJSON(w, http.StatusOK, out)
}

// jobView is j as the request may read it: with its details (paths,
// error, warnings) or, for a request without the right to them, without.
func (s *Server) jobView(j jobs.Job, now time.Time, details bool) Job {
	if details {
		return jobJSON(j, now, s.cfg.Hostname)
	}
	out := jobJSON(dbusapi.Redacted(j), now, s.cfg.Hostname)
	out.DetailsHidden = true
	return out
}

// listJobs: GET /api/workflow/jobs?status=...&batch=...&limit=&offset=&order=
func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	states, err := parseStatus(r.URL.Query().Get("status"))
	if err != nil {
		writeError(w, http.StatusBadRequest, apierr.InvalidArgs, err.Error(), nil)
		return
	}
	s.writeJobs(w, r, apitype.Filter{States: states, Batch: r.URL.Query().Get("batch")})
}

// listActiveJobs: GET /api/workflow/jobs/active, the running jobs.
func (s *Server) listActiveJobs(w http.ResponseWriter, r *http.Request) {
	s.writeJobs(w, r, apitype.Filter{States: []jobs.State{jobs.Running}})
}

// validID keeps job ids to the characters the agent uses, so an id can go
// into a unit name and a journalctl argument without surprises.
var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$`)

// jobID returns the {id} of the path, answering 404 for ids no job can have.
func jobID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := mux.Vars(r)["id"]
	if !validID.MatchString(id) {
		writeError(w, http.StatusNotFound, apierr.NoSuchJob, "cannot find job "+id+": not a job id", nil)
		return "", false
	}
	return id, true
}

// getJob: GET /api/workflow/jobs/{id}
func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	id, ok := jobID(w, r)
	if !ok {
		return
	}
	j, err := s.client(r).GetJob(r.Context(), id)
	if err != nil {
		fail(w, r, "get job "+id, err)
		return
	}
	writeJSON(w, http.StatusOK, jobJSON(j, s.cfg.Now(), s.cfg.Hostname))
}

// actionAnswer is the answer of cancel and retry.
type actionAnswer struct {
	Success bool   `json:"success"`
	JobID   string `json:"job_id"`
	Job     *Job   `json:"job,omitempty"`
}

// cancelJob: POST /api/workflow/jobs/{id}/cancel. The agent stops the job's
// unit; the job reaches "cancelled" shortly after, so the answer is 202.
func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request) {
	id, ok := jobID(w, r)
	if !ok {
		return
	}
	if err := s.client(r).Cancel(r.Context(), id, false); err != nil {
		fail(w, r, "cancel job "+id, err)
		return
	}
	ans := actionAnswer{Success: true, JobID: id}
	if j, err := s.client(r).GetJob(r.Context(), id); err == nil {
		jj := jobJSON(j, s.cfg.Now(), s.cfg.Hostname)
		ans.Job = &jj
	}
	writeJSON(w, http.StatusAccepted, ans)
}

// retryJob: POST /api/workflow/jobs/{id}/retry. The answer names the new job.
func (s *Server) retryJob(w http.ResponseWriter, r *http.Request) {
	id, ok := jobID(w, r)
	if !ok {
		return
	}
	j, err := s.client(r).Retry(r.Context(), id, false)
	if err != nil {
		fail(w, r, "retry job "+id, err)
		return
	}
	jj := jobJSON(j, s.cfg.Now(), s.cfg.Hostname)
	w.Header().Set("Location", "/api/workflow/jobs/"+j.ID)
	writeJSON(w, http.StatusAccepted, actionAnswer{Success: true, JobID: j.ID, Job: &jj})
}

// manifestPath is where the job's manifest file is: the agent's value when
// it is a path, else the file in the queue folder matching the job's state
// (a finished job's manifest sits beside its report in processed/<date>/ or
// failed/<date>/).
func (s *Server) manifestPath(j jobs.Job) string {
	if j.Manifest == "" || filepath.IsAbs(j.Manifest) {
		return j.Manifest
	}
	switch {
	case j.State == jobs.Pending:
		return filepath.Join(s.cfg.WorkflowDir, "to_be_processed", j.Manifest)
	case j.State == jobs.Running:
		return filepath.Join(s.cfg.WorkflowDir, "processing", j.Manifest)
	case filepath.IsAbs(j.ReportPath):
		return filepath.Join(filepath.Dir(j.ReportPath), j.Manifest)
	}
	return j.Manifest
}

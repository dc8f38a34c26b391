package agent

import (
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// Metrics is the manager's GetMetrics answer: totals over every job in the
// store (so over the retained history, not since the agent started; the
// agent exits when idle and must not reset them). GET /metrics prints it.
type Metrics struct {
	// Jobs counts the jobs by state; every state has an entry.
	Jobs map[jobs.State]int
	// JobSeconds is the run time (start to end) of finished jobs that
	// started, by final state; every final state has an entry.
	JobSeconds map[jobs.State]Summary
	// StageSeconds is the time spent in each pipeline stage that ran
	// (not skipped), from the reports of the jobs that recorded them.
	StageSeconds map[string]Summary
	// ConvertedBytes is the size of the converted disks of the completed
	// jobs: from the report, else the job's last progress byte count.
	ConvertedBytes int64
	// JobsWithStageTimes counts the finished jobs that recorded stage
	// times (jobs that ended before agents kept them have none).
	JobsWithStageTimes int
}

// Summary is a count and a sum of seconds (a Prometheus summary without
// quantiles).
type Summary struct {
	Count   int
	Seconds float64
}

// NewMetrics is an empty Metrics with an entry for every state.
func NewMetrics() Metrics {
	m := Metrics{Jobs: map[jobs.State]int{}, JobSeconds: map[jobs.State]Summary{}, StageSeconds: map[string]Summary{}}
	for _, s := range []jobs.State{jobs.Pending, jobs.Running, jobs.Completed, jobs.Failed, jobs.Cancelled} {
		m.Jobs[s] = 0
		if s.Ready() {
			m.JobSeconds[s] = Summary{}
		}
	}
	return m
}

// Add counts one job into m.
func (m *Metrics) Add(j *jobs.Job) {
	m.Jobs[j.State]++
	if !j.State.Ready() {
		return
	}
	if !j.StartedAt.IsZero() && j.FinishedAt.After(j.StartedAt) {
		s := m.JobSeconds[j.State]
		s.Count++
		// Wall clock (Round(0) drops the monotonic reading), as the store
		// keeps it: the same sum before and after a restart.
		s.Seconds += j.FinishedAt.Round(0).Sub(j.StartedAt.Round(0)).Seconds()
		m.JobSeconds[j.State] = s
	}
	if j.State == jobs.Completed {
		if j.ConvertedBytes > 0 {
			m.ConvertedBytes += j.ConvertedBytes
		} else {
			m.ConvertedBytes += j.BytesDone
		}
	}
	if len(j.StageTimes) > 0 {
		m.JobsWithStageTimes++
	}
	for _, st := range j.StageTimes {
		s := m.StageSeconds[st.Stage]
		s.Count++
		s.Seconds += st.Seconds
		m.StageSeconds[st.Stage] = s
	}
}

// MetricsOf counts list (for backends that hold a plain list).
func MetricsOf(list []jobs.Job) Metrics {
	m := NewMetrics()
	for i := range list {
		m.Add(&list[i])
	}
	return m
}

// Metrics answers GetMetrics from the jobs in memory: one walk over the
// store's records (well under a millisecond for 10,000 jobs), no file read.
func (a *Agent) Metrics() Metrics {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := NewMetrics()
	for _, r := range a.st.Jobs {
		m.Add(&r.Job)
	}
	return m
}

// keepReport records on a finishing job what the metrics need from its
// worker's report, so that no scrape reads report files: the time of each
// stage that ran and, for a completed job, the size of its converted disks
// (the last progress byte count when the report names none).
func keepReport(r *record, state jobs.State, rep *report.Report) {
	r.StageTimes, r.ConvertedBytes = nil, 0
	if rep != nil {
		for _, st := range rep.Stages {
			if st.Name == "" || st.Status == "skipped" {
				continue
			}
			r.StageTimes = append(r.StageTimes, jobs.StageTime{Stage: st.Name, Seconds: max(st.Seconds, 0)})
		}
	}
	if state != jobs.Completed {
		return
	}
	if rep != nil {
		for _, d := range rep.Disks() {
			r.ConvertedBytes += d.Size
		}
	}
	if r.ConvertedBytes <= 0 {
		r.ConvertedBytes = r.BytesDone
	}
}

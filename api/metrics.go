package api

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/progress"
)

// metrics: GET /metrics in the Prometheus text format (0.0.4): jobs by
// state, the agent's counters, stage and job durations, bytes converted.
// The bridge keeps no state (it exits when idle): every number comes from
// the agent, in two calls (GetStatus, GetMetrics) whose cost does not grow
// with the history. The agent keeps what the metrics need from each
// worker's report when the job ends, so no report file is read here.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	st, err := s.cfg.Client.GetStatus(r.Context())
	if err != nil {
		fail(w, r, "get the agent's status", err)
		return
	}
	m, err := s.cfg.Client.GetMetrics(r.Context())
	if err != nil {
		fail(w, r, "get the agent's metrics", err)
		return
	}
	var b bytes.Buffer
	gauge := func(name, help string, v float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s %s\n", name, help, name, name, num(v))
	}
	gauge("hyper2kvm_up", "Whether the bridge reached the agent (1) for this scrape.", 1)
	gauge("hyper2kvm_agent_running", "Whether the agent's queue is being served.", boolNum(st.Running))
	gauge("hyper2kvm_queue_depth", "Manifests waiting in the queue.", float64(st.QueueDepth))
	gauge("hyper2kvm_active_jobs", "Jobs running now.", float64(st.ActiveJobs))
	gauge("hyper2kvm_max_workers", "Jobs the agent runs at once.", float64(st.MaxWorkers))
	gauge("hyper2kvm_processed_today", "Jobs completed today (agent's local day).", float64(st.ProcessedToday))
	gauge("hyper2kvm_failed_today", "Jobs failed today (agent's local day).", float64(st.FailedToday))
	gauge("hyper2kvm_agent_uptime_seconds", "Seconds since the agent started.", st.UptimeSeconds)
	fmt.Fprintf(&b, "# HELP hyper2kvm_agent_info The agent's version.\n# TYPE hyper2kvm_agent_info gauge\nhyper2kvm_agent_info{version=%q} 1\n", st.Version)

	fmt.Fprint(&b, "# HELP hyper2kvm_jobs Jobs the agent knows, by state.\n# TYPE hyper2kvm_jobs gauge\n")
	for _, s := range []jobs.State{jobs.Pending, jobs.Running, jobs.Completed, jobs.Failed, jobs.Cancelled} {
		fmt.Fprintf(&b, "hyper2kvm_jobs{state=%q} %d\n", s, m.Jobs[s])
	}
	fmt.Fprintf(&b, "# HELP hyper2kvm_converted_bytes_total Bytes of converted disks written by the completed jobs the agent knows.\n"+
		"# TYPE hyper2kvm_converted_bytes_total counter\nhyper2kvm_converted_bytes_total %d\n", m.ConvertedBytes)
	fmt.Fprint(&b, "# HELP hyper2kvm_job_duration_seconds Run time of finished jobs, by final state.\n# TYPE hyper2kvm_job_duration_seconds summary\n")
	for _, s := range []jobs.State{jobs.Completed, jobs.Failed, jobs.Cancelled} {
		fmt.Fprintf(&b, "hyper2kvm_job_duration_seconds_sum{state=%q} %s\n", s, num(m.JobSeconds[s].Seconds))
		fmt.Fprintf(&b, "hyper2kvm_job_duration_seconds_count{state=%q} %d\n", s, m.JobSeconds[s].Count)
	}

	fmt.Fprint(&b, "# HELP hyper2kvm_stage_duration_seconds Time spent in each pipeline stage by the finished jobs the agent knows, "+
		"from their workers' reports (jobs that ended before agents recorded stage times count none; see hyper2kvm_jobs_with_stage_times).\n"+
		"# TYPE hyper2kvm_stage_duration_seconds summary\n")
	for _, stage := range stageOrder(m.StageSeconds) {
		fmt.Fprintf(&b, "hyper2kvm_stage_duration_seconds_sum{stage=%q} %s\n", stage, num(m.StageSeconds[stage].Seconds))
		fmt.Fprintf(&b, "hyper2kvm_stage_duration_seconds_count{stage=%q} %d\n", stage, m.StageSeconds[stage].Count)
	}
	gauge("hyper2kvm_jobs_with_stage_times", "Finished jobs whose stage times hyper2kvm_stage_duration_seconds counts.", float64(m.JobsWithStageTimes))

	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b.Bytes())
}

// GetMetrics is Client.GetMetrics through the lazy connection.
func (l *Lazy) GetMetrics(ctx context.Context) (apitype.Metrics, error) {
	c, err := l.get(ctx)
	if err != nil {
		return apitype.Metrics{}, err
	}
	m, err := c.GetMetrics(ctx)
	return m, l.check(c, err)
}

// stageOrder lists the pipeline's stages first (always, so the series
// exist from the first scrape), then any other stage names sorted.
func stageOrder(sums map[string]apitype.Summary) []string {
	out := append([]string(nil), progress.Stages...)
	var extra []string
	for k := range sums {
		known := false
		for _, s := range progress.Stages {
			known = known || s == k
		}
		if !known {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	return append(out, extra...)
}

func boolNum(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func num(v float64) string { return strings.TrimSuffix(fmt.Sprintf("%.3f", v), ".000") }

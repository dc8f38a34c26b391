package api

import (
	"context"
	"net/http"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/progress"
)

// metrics: GET /metrics in the Prometheus exposition format, written by
// client_golang (text 0.0.4 unless the scraper asks for another): jobs by
// state, the agent's counters, stage and job durations, bytes converted,
// plus the bridge's own Go and process collectors. The bridge keeps no
// state (it exits when idle): every hyper2kvm_ number comes from the agent,
// in two calls (GetStatus, GetMetrics) whose cost does not grow with the
// history. The agent keeps what the metrics need from each worker's report
// when the job ends, so no report file is read here.
//
// The two calls are made before anything is written, so that an agent that
// cannot be reached is a 503 agent-unreachable like every other endpoint,
// not a half-written exposition; the registry is built per scrape around
// their answers.
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
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(
		agentCollector{st: st, m: m},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	w.Header().Set("Cache-Control", "no-store")
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}).ServeHTTP(w, r)
}

// The agent's metrics. Names, help and types are those of the hand-written
// exposition they replace (dashboards and alerts depend on them).
var (
	descUp       = prometheus.NewDesc("hyper2kvm_up", "Whether the bridge reached the agent (1) for this scrape.", nil, nil)
	descRunning  = prometheus.NewDesc("hyper2kvm_agent_running", "Whether the agent's queue is being served.", nil, nil)
	descQueue    = prometheus.NewDesc("hyper2kvm_queue_depth", "Manifests waiting in the queue.", nil, nil)
	descActive   = prometheus.NewDesc("hyper2kvm_active_jobs", "Jobs running now.", nil, nil)
	descWorkers  = prometheus.NewDesc("hyper2kvm_max_workers", "Jobs the agent runs at once.", nil, nil)
	descDone     = prometheus.NewDesc("hyper2kvm_processed_today", "Jobs completed today (agent's local day).", nil, nil)
	descFailed   = prometheus.NewDesc("hyper2kvm_failed_today", "Jobs failed today (agent's local day).", nil, nil)
	descUptime   = prometheus.NewDesc("hyper2kvm_agent_uptime_seconds", "Seconds since the agent started.", nil, nil)
	descInfo     = prometheus.NewDesc("hyper2kvm_agent_info", "The agent's version.", []string{"version"}, nil)
	descJobs     = prometheus.NewDesc("hyper2kvm_jobs", "Jobs the agent knows, by state.", []string{"state"}, nil)
	descBytes    = prometheus.NewDesc("hyper2kvm_converted_bytes_total", "Bytes of converted disks written by the completed jobs the agent knows.", nil, nil)
	descJobSecs  = prometheus.NewDesc("hyper2kvm_job_duration_seconds", "Run time of finished jobs, by final state.", []string{"state"}, nil)
	descStageSec = prometheus.NewDesc("hyper2kvm_stage_duration_seconds", "Time spent in each pipeline stage by the finished jobs the agent knows, "+
		"from their workers' reports (jobs that ended before agents recorded stage times count none; see hyper2kvm_jobs_with_stage_times).",
		[]string{"stage"}, nil)
	descWithStages = prometheus.NewDesc("hyper2kvm_jobs_with_stage_times", "Finished jobs whose stage times hyper2kvm_stage_duration_seconds counts.", nil, nil)
)

// agentCollector exposes one GetStatus and one GetMetrics answer.
type agentCollector struct {
	st apitype.Status
	m  apitype.Metrics
}

func (c agentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descRunning, descQueue, descActive, descWorkers, descDone, descFailed, descUptime,
		descInfo, descJobs, descBytes, descJobSecs, descStageSec, descWithStages} {
		ch <- d
	}
}

func (c agentCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	summary := func(d *prometheus.Desc, s apitype.Summary, label string) {
		ch <- prometheus.MustNewConstSummary(d, uint64(max(s.Count, 0)), s.Seconds, nil, label)
	}
	st, m := c.st, c.m
	gauge(descUp, 1)
	gauge(descRunning, boolNum(st.Running))
	gauge(descQueue, float64(st.QueueDepth))
	gauge(descActive, float64(st.ActiveJobs))
	gauge(descWorkers, float64(st.MaxWorkers))
	gauge(descDone, float64(st.ProcessedToday))
	gauge(descFailed, float64(st.FailedToday))
	gauge(descUptime, st.UptimeSeconds)
	gauge(descInfo, 1, st.Version)
	for _, s := range []jobs.State{jobs.Pending, jobs.Running, jobs.Completed, jobs.Failed, jobs.Cancelled} {
		gauge(descJobs, float64(m.Jobs[s]), string(s))
	}
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(m.ConvertedBytes))
	for _, s := range []jobs.State{jobs.Completed, jobs.Failed, jobs.Cancelled} {
		summary(descJobSecs, m.JobSeconds[s], string(s))
	}
	for _, stage := range stageNames(m.StageSeconds) {
		summary(descStageSec, m.StageSeconds[stage], stage)
	}
	gauge(descWithStages, float64(m.JobsWithStageTimes))
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

// stageNames lists the pipeline's stages (always, so the series exist from
// the first scrape) and any other stage the agent recorded.
func stageNames(sums map[string]apitype.Summary) []string {
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

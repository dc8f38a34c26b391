package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/progress"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// maxReportsRead bounds how many finished jobs' reports one scrape reads for
// the stage durations (the newest ones).
const maxReportsRead = 500

// maxReportSize skips report files larger than this.
const maxReportSize = 4 << 20

// metrics: GET /metrics in the Prometheus text format (0.0.4): jobs by
// state, the agent's counters, stage and job durations, bytes converted.
// The bridge keeps no state (it exits when idle), so every number is read
// from the agent, and stage durations from the finished jobs' reports.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	st, err := s.cfg.Client.GetStatus(r.Context())
	if err != nil {
		fail(w, r, "get the agent's status", err)
		return
	}
	list, err := s.cfg.Client.ListJobs(r.Context(), agent.Filter{})
	if err != nil {
		fail(w, r, "list jobs", err)
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

	reports := readReports(list)
	byState := map[jobs.State]int{}
	var converted int64
	durCount := map[jobs.State]int{}
	durSums := map[jobs.State]float64{}
	for _, j := range list {
		byState[j.State]++
		if j.State == jobs.Completed {
			converted += convertedBytes(j, reports[j.ID])
		}
		if j.State.Ready() && !j.StartedAt.IsZero() && j.FinishedAt.After(j.StartedAt) {
			d := j.FinishedAt.Sub(j.StartedAt).Seconds()
			durSums[j.State] += d
			durCount[j.State]++
		}
	}
	fmt.Fprint(&b, "# HELP hyper2kvm_jobs Jobs the agent knows, by state.\n# TYPE hyper2kvm_jobs gauge\n")
	for _, s := range []jobs.State{jobs.Pending, jobs.Running, jobs.Completed, jobs.Failed, jobs.Cancelled} {
		fmt.Fprintf(&b, "hyper2kvm_jobs{state=%q} %d\n", s, byState[s])
	}
	fmt.Fprintf(&b, "# HELP hyper2kvm_converted_bytes_total Bytes of converted disks written by the completed jobs the agent knows.\n"+
		"# TYPE hyper2kvm_converted_bytes_total counter\nhyper2kvm_converted_bytes_total %d\n", converted)
	fmt.Fprint(&b, "# HELP hyper2kvm_job_duration_seconds Run time of finished jobs, by final state.\n# TYPE hyper2kvm_job_duration_seconds summary\n")
	for _, s := range []jobs.State{jobs.Completed, jobs.Failed, jobs.Cancelled} {
		fmt.Fprintf(&b, "hyper2kvm_job_duration_seconds_sum{state=%q} %s\n", s, num(durSums[s]))
		fmt.Fprintf(&b, "hyper2kvm_job_duration_seconds_count{state=%q} %d\n", s, durCount[s])
	}

	sums, counts := stageDurations(reports)
	fmt.Fprint(&b, "# HELP hyper2kvm_stage_duration_seconds Time spent in each pipeline stage, from the reports of finished jobs.\n# TYPE hyper2kvm_stage_duration_seconds summary\n")
	for _, stage := range stageOrder(sums) {
		fmt.Fprintf(&b, "hyper2kvm_stage_duration_seconds_sum{stage=%q} %s\n", stage, num(sums[stage]))
		fmt.Fprintf(&b, "hyper2kvm_stage_duration_seconds_count{stage=%q} %d\n", stage, counts[stage])
	}
	gauge("hyper2kvm_reports_read", "Finished jobs whose report this scrape could read.", float64(len(reports)))

	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b.Bytes())
}

// settlementFile is the part of the agent's NAME.report.json (processed/)
// or NAME.error.json (failed/) the metrics use: one entry per job of the
// manifest, each with the worker's report.
type settlementFile struct {
	Jobs []struct {
		JobID  string         `json:"job_id"`
		Report *report.Report `json:"report"`
	} `json:"jobs"`
}

// readReports returns the worker reports of the newest finished jobs whose
// settlement file the bridge may read (group hyper2kvm), by job id. Only
// .json files named by the agent are opened, and only numbers from them are
// published. A file that is itself a worker report is accepted too.
func readReports(list []jobs.Job) map[string]*report.Report {
	finished := make([]jobs.Job, 0, len(list))
	for _, j := range list {
		if j.State.Ready() && filepath.IsAbs(j.ReportPath) && strings.HasSuffix(j.ReportPath, ".json") {
			finished = append(finished, j)
		}
	}
	sort.Slice(finished, func(a, b int) bool { return finished[a].FinishedAt.After(finished[b].FinishedAt) })
	out := map[string]*report.Report{}
	files := map[string]*settlementFile{} // a batch's jobs share one file
	for _, j := range finished[:min(len(finished), maxReportsRead)] {
		sf, seen := files[j.ReportPath]
		if !seen {
			sf = readSettlement(j.ReportPath)
			files[j.ReportPath] = sf
		}
		if sf == nil {
			continue
		}
		for _, e := range sf.Jobs {
			if e.JobID == j.ID && e.Report != nil {
				out[j.ID] = e.Report
			}
		}
	}
	return out
}

func readSettlement(path string) *settlementFile {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() > maxReportSize {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var sf settlementFile
	if json.Unmarshal(data, &sf) == nil && len(sf.Jobs) > 0 {
		return &sf
	}
	var rep report.Report
	if json.Unmarshal(data, &rep) == nil && rep.JobID != "" {
		sf.Jobs = append(sf.Jobs, struct {
			JobID  string         `json:"job_id"`
			Report *report.Report `json:"report"`
		}{rep.JobID, &rep})
		return &sf
	}
	return nil
}

// convertedBytes is the size of a completed job's converted disks: from its
// report when readable, else the byte count of its last progress line.
func convertedBytes(j jobs.Job, rep *report.Report) int64 {
	if rep != nil {
		var n int64
		for _, a := range rep.Disks() {
			n += a.Size
		}
		if n > 0 {
			return n
		}
	}
	return j.BytesDone
}

// stageDurations sums the stage durations of the reports.
func stageDurations(reports map[string]*report.Report) (sums map[string]float64, counts map[string]int) {
	sums, counts = map[string]float64{}, map[string]int{}
	for _, rep := range reports {
		for _, st := range rep.Stages {
			if st.Status == "skipped" || st.Name == "" {
				continue
			}
			sums[st.Name] += st.Seconds
			counts[st.Name]++
		}
	}
	return sums, counts
}

// stageOrder lists the pipeline's stages first (always, so the series
// exist from the first scrape), then any other stage names sorted.
func stageOrder(sums map[string]float64) []string {
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

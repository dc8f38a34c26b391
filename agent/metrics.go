package agent

import (
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// Metrics answers GetMetrics from the jobs in memory: one walk over the
// store's records, no file read.
func (a *Agent) Metrics() apitype.Metrics {
	a.mu.Lock()
	defer a.mu.Unlock()
	var c apitype.MetricsCounter
	for _, r := range a.st.Jobs {
		c.Add(&r.Job)
	}
	return c.Metrics()
}

// keepReport records on a finishing job what the metrics need from its
// worker's report, so that no scrape reads report files: the time of each
// stage that ran and, for a completed job, the size of its converted disks
// (the last progress byte count when the report names none).
func keepReport(r *record, state jobs.State, rep *report.Report) {
	r.StageTimes, r.ConvertedBytes, r.Warnings = nil, 0, nil
	if rep != nil {
		r.Warnings = jobs.KeepWarnings(rep.Warnings)
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

package apitype

import (
	"reflect"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

func TestMetricsOf(t *testing.T) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	empty := NewMetrics()
	with := func(f func(m *Metrics)) Metrics {
		m := NewMetrics()
		f(&m)
		return m
	}
	for _, tc := range []struct {
		name string
		list []jobs.Job
		want Metrics
	}{
		{"no jobs: every state present, zero", nil, empty},
		{"live jobs count by state only", []jobs.Job{
			{State: jobs.Pending}, {State: jobs.Pending},
			{State: jobs.Running, StartedAt: t0, BytesDone: 500, StageTimes: []jobs.StageTime{{Stage: "load", Seconds: 1}}},
		}, with(func(m *Metrics) { m.Jobs[jobs.Pending], m.Jobs[jobs.Running] = 2, 1 })},
		{"completed: run time, recorded bytes and stages", []jobs.Job{
			{State: jobs.Completed, StartedAt: t0, FinishedAt: t0.Add(20 * time.Second), ConvertedBytes: 1000, BytesDone: 3,
				StageTimes: []jobs.StageTime{{Stage: "load", Seconds: 1.5}, {Stage: "convert", Seconds: 10}}},
		}, with(func(m *Metrics) {
			m.Jobs[jobs.Completed] = 1
			m.JobSeconds[jobs.Completed] = Summary{1, 20}
			m.ConvertedBytes = 1000
			m.StageSeconds = map[string]Summary{"load": {1, 1.5}, "convert": {1, 10}}
			m.JobsWithStageTimes = 1
		})},
		{"completed before stage times were kept: progress bytes, no stages", []jobs.Job{
			{State: jobs.Completed, StartedAt: t0, FinishedAt: t0.Add(10 * time.Second), BytesDone: 24},
		}, with(func(m *Metrics) {
			m.Jobs[jobs.Completed] = 1
			m.JobSeconds[jobs.Completed] = Summary{1, 10}
			m.ConvertedBytes = 24
		})},
		{"failed and cancelled: stages count, bytes do not", []jobs.Job{
			{State: jobs.Failed, StartedAt: t0, FinishedAt: t0.Add(2 * time.Second), BytesDone: 7,
				StageTimes: []jobs.StageTime{{Stage: "load", Seconds: 0.5}, {Stage: "inspect", Seconds: 1}}},
			{State: jobs.Cancelled, StartedAt: t0, FinishedAt: t0.Add(time.Second), StageTimes: []jobs.StageTime{{Stage: "load", Seconds: 0.25}}},
		}, with(func(m *Metrics) {
			m.Jobs[jobs.Failed], m.Jobs[jobs.Cancelled] = 1, 1
			m.JobSeconds[jobs.Failed] = Summary{1, 2}
			m.JobSeconds[jobs.Cancelled] = Summary{1, 1}
			m.StageSeconds = map[string]Summary{"load": {2, 0.75}, "inspect": {1, 1}}
			m.JobsWithStageTimes = 2
		})},
		{"never started, or a clock that went back: no run time", []jobs.Job{
			{State: jobs.Cancelled, FinishedAt: t0},
			{State: jobs.Failed, StartedAt: t0, FinishedAt: t0.Add(-time.Second)},
		}, with(func(m *Metrics) { m.Jobs[jobs.Cancelled], m.Jobs[jobs.Failed] = 1, 1 })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := MetricsOf(tc.list); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("MetricsOf = %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// BenchmarkMetrics is GetMetrics' walk over 10,000 finished jobs, each
// with the five stage times a full pipeline records.
func BenchmarkMetrics(b *testing.B) {
	t0 := time.Now()
	list := make([]jobs.Job, 10000)
	for i := range list {
		list[i] = jobs.Job{State: jobs.Completed, StartedAt: t0, FinishedAt: t0.Add(15 * time.Second), ConvertedBytes: 1 << 30,
			StageTimes: []jobs.StageTime{{Stage: "load", Seconds: 0.2}, {Stage: "inspect", Seconds: 1.5},
				{Stage: "fix", Seconds: 3}, {Stage: "convert", Seconds: 9}, {Stage: "validate", Seconds: 0.5}}}
		if i%10 == 9 {
			list[i].State = jobs.Failed
		}
	}
	for b.Loop() {
		MetricsOf(list)
	}
}

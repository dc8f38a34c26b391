package apitype

import "github.com/hyper2kvm/hyper2kvm/agent/jobs"

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
	var c MetricsCounter
	return c.Metrics()
}

// metricsStates indexes MetricsCounter's arrays; final states last.
var metricsStates = [...]jobs.State{jobs.Pending, jobs.Running, jobs.Completed, jobs.Failed, jobs.Cancelled}

// MetricsCounter sums jobs into a Metrics. It counts in arrays, not maps:
// GetMetrics walks every job the agent keeps, and a map update per job and
// per stage made that walk three times as long (BenchmarkMetrics).
type MetricsCounter struct {
	jobs       [len(metricsStates)]int
	seconds    [len(metricsStates)]Summary
	stages     []string // in the order first seen; a handful
	stageSums  []Summary
	converted  int64
	withStages int
}

// Add counts one job.
func (c *MetricsCounter) Add(j *jobs.Job) {
	i := stateIndex(j.State)
	if i < 0 {
		return // not a state of this agent's
	}
	c.jobs[i]++
	if !j.State.Ready() {
		return
	}
	if !j.StartedAt.IsZero() && j.FinishedAt.After(j.StartedAt) {
		c.seconds[i].Count++
		// Wall clock (Round(0) drops the monotonic reading), as the store
		// keeps it: the same sum before and after a restart.
		c.seconds[i].Seconds += j.FinishedAt.Round(0).Sub(j.StartedAt.Round(0)).Seconds()
	}
	if j.State == jobs.Completed {
		if j.ConvertedBytes > 0 {
			c.converted += j.ConvertedBytes
		} else {
			c.converted += j.BytesDone
		}
	}
	if len(j.StageTimes) > 0 {
		c.withStages++
	}
	for _, st := range j.StageTimes {
		k := 0
		for k < len(c.stages) && c.stages[k] != st.Stage {
			k++
		}
		if k == len(c.stages) {
			c.stages = append(c.stages, st.Stage)
			c.stageSums = append(c.stageSums, Summary{})
		}
		c.stageSums[k].Count++
		c.stageSums[k].Seconds += st.Seconds
	}
}

func stateIndex(s jobs.State) int {
	switch s {
	case jobs.Pending:
		return 0
	case jobs.Running:
		return 1
	case jobs.Completed:
		return 2
	case jobs.Failed:
		return 3
	case jobs.Cancelled:
		return 4
	}
	return -1
}

// Metrics is what was counted, with an entry for every state.
func (c *MetricsCounter) Metrics() Metrics {
	m := Metrics{Jobs: make(map[jobs.State]int, len(metricsStates)), JobSeconds: make(map[jobs.State]Summary, 3),
		StageSeconds: make(map[string]Summary, len(c.stages)), ConvertedBytes: c.converted, JobsWithStageTimes: c.withStages}
	for i, s := range metricsStates {
		m.Jobs[s] = c.jobs[i]
		if s.Ready() {
			m.JobSeconds[s] = c.seconds[i]
		}
	}
	for k, name := range c.stages {
		m.StageSeconds[name] = c.stageSums[k]
	}
	return m
}

// MetricsOf counts list (for backends that hold a plain list).
func MetricsOf(list []jobs.Job) Metrics {
	var c MetricsCounter
	for i := range list {
		c.Add(&list[i])
	}
	return c.Metrics()
}

// Package analytics computes the workflow's numbers from the job records
// the agent already exposes (ListJobs): jobs per day by outcome, bytes
// converted, throughput, time per stage (p50/p95), failures grouped by
// stage and reason, per host. hyperctl report, the REST bridge's
// /api/workflow/analytics and the dashboard's Reports view all show the
// same Summary. It is a leaf over agent/jobs.
package analytics

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// Summary is every number of a report.
type Summary struct {
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
	// Totals over the finished jobs in the window.
	Jobs      int     `json:"jobs"`
	Completed int     `json:"completed"`
	Failed    int     `json:"failed"`
	Cancelled int     `json:"cancelled"`
	Bytes     int64   `json:"bytes_converted"`
	GiBPerH   float64 `json:"throughput_gib_per_hour"` // bytes of completed jobs over their run time
	Days      []Day   `json:"days"`
	Stages    []Stage `json:"stages"`
	Failures  []Cause `json:"failures"`
	Hosts     []Host  `json:"hosts"`
}

// Day is one calendar day (of the jobs' finish, local time).
type Day struct {
	Day       string  `json:"day"` // YYYY-MM-DD
	Completed int     `json:"completed"`
	Failed    int     `json:"failed"`
	Cancelled int     `json:"cancelled"`
	Bytes     int64   `json:"bytes_converted"`
	GiBPerH   float64 `json:"throughput_gib_per_hour"`
}

// Stage is how long one stage took over the jobs that ran it.
type Stage struct {
	Stage string  `json:"stage"`
	Count int     `json:"count"`
	P50   float64 `json:"p50_seconds"`
	P95   float64 `json:"p95_seconds"`
}

// Cause is a group of failures: same stage, same reason once the job's
// own names and numbers are taken out.
type Cause struct {
	Stage   string `json:"stage"`
	Reason  string `json:"reason"`
	Count   int    `json:"count"`
	Example string `json:"example"` // one job's id
}

// Host is one machine's share.
type Host struct {
	Host      string  `json:"host"`
	Jobs      int     `json:"jobs"`
	Completed int     `json:"completed"`
	Failed    int     `json:"failed"`
	Bytes     int64   `json:"bytes_converted"`
	GiBPerH   float64 `json:"throughput_gib_per_hour"`
}

var stageOrder = []string{"load", "inspect", "fix", "convert", "validate"}

// Compute summarises the jobs of host that finished in [since, until).
// Jobs still pending or running are not counted.
func Compute(list []jobs.Job, host string, since, until time.Time) Summary {
	s := Summary{Since: since, Until: until, Days: []Day{}, Stages: []Stage{}, Failures: []Cause{}, Hosts: []Host{}}
	days := map[string]*Day{}
	dayRun := map[string]float64{}
	stageSecs := map[string][]float64{}
	causes := map[[2]string]*Cause{}
	var runSecs float64
	for _, j := range list {
		if !j.State.Ready() || j.FinishedAt.Before(since) || !j.FinishedAt.Before(until) {
			continue
		}
		key := j.FinishedAt.Local().Format("2006-01-02")
		d := days[key]
		if d == nil {
			d = &Day{Day: key}
			days[key] = d
		}
		s.Jobs++
		switch j.State {
		case jobs.Completed:
			s.Completed++
			d.Completed++
			s.Bytes += j.ConvertedBytes
			d.Bytes += j.ConvertedBytes
			if !j.StartedAt.IsZero() && j.FinishedAt.After(j.StartedAt) {
				secs := j.FinishedAt.Sub(j.StartedAt).Seconds()
				runSecs += secs
				dayRun[key] += secs
			}
		case jobs.Failed:
			s.Failed++
			d.Failed++
			stage := j.ErrorStage
			if stage == "" {
				stage = "claim"
			}
			k := [2]string{stage, Reason(j.Error)}
			c := causes[k]
			if c == nil {
				c = &Cause{Stage: k[0], Reason: k[1], Example: j.ID}
				causes[k] = c
			}
			c.Count++
		case jobs.Cancelled:
			s.Cancelled++
			d.Cancelled++
		}
		for _, st := range j.StageTimes {
			stageSecs[st.Stage] = append(stageSecs[st.Stage], st.Seconds)
		}
	}
	s.GiBPerH = rate(s.Bytes, runSecs)
	for _, d := range days {
		d.GiBPerH = rate(d.Bytes, dayRun[d.Day])
		s.Days = append(s.Days, *d)
	}
	sort.Slice(s.Days, func(i, j int) bool { return s.Days[i].Day < s.Days[j].Day })
	for name, secs := range stageSecs {
		sort.Float64s(secs)
		s.Stages = append(s.Stages, Stage{Stage: name, Count: len(secs), P50: percentile(secs, 50), P95: percentile(secs, 95)})
	}
	sort.Slice(s.Stages, func(i, j int) bool { return stageRank(s.Stages[i].Stage) < stageRank(s.Stages[j].Stage) })
	for _, c := range causes {
		s.Failures = append(s.Failures, *c)
	}
	sort.Slice(s.Failures, func(i, j int) bool {
		a, b := s.Failures[i], s.Failures[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		return a.Stage+a.Reason < b.Stage+b.Reason
	})
	if s.Jobs > 0 {
		s.Hosts = append(s.Hosts, Host{Host: host, Jobs: s.Jobs, Completed: s.Completed, Failed: s.Failed, Bytes: s.Bytes, GiBPerH: s.GiBPerH})
	}
	return s
}

func stageRank(s string) int {
	for i, x := range stageOrder {
		if x == s {
			return i
		}
	}
	return len(stageOrder)
}

func rate(bytes int64, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return math.Round(float64(bytes)/(1<<30)/(secs/3600)*100) / 100
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []float64, p int) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(float64(p) / 100 * float64(len(sorted))))
	return math.Round(sorted[max(rank, 1)-1]*1000) / 1000
}

var (
	pathRE   = regexp.MustCompile(`(/[^\s:,;"')]+)+`)
	numberRE = regexp.MustCompile(`\b[0-9][0-9.]*\b`)
	quoteRE  = regexp.MustCompile(`"[^"]*"`)
)

// Reason is an error message with what differs from job to job taken
// out (paths, numbers, quoted names), cut to one line: errors of the same
// cause group together.
func Reason(msg string) string {
	msg, _, _ = strings.Cut(msg, "\n")
	msg = pathRE.ReplaceAllString(msg, "PATH")
	msg = quoteRE.ReplaceAllString(msg, `"…"`)
	msg = numberRE.ReplaceAllString(msg, "N")
	if len(msg) > 160 {
		msg = msg[:160] + "…"
	}
	if msg == "" {
		msg = "(no message)"
	}
	return msg
}

// ParseSince reads --since: "7d", "2w", "36h" or a date (YYYY-MM-DD).
func ParseSince(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.ParseInLocation("2006-01-02", s, time.Local); err == nil {
		return t, nil
	}
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			v, err := strconv.Atoi(n)
			if err == nil && v > 0 {
				return now.Add(-time.Duration(v) * unit), nil
			}
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("cannot read %q: want 7d, 2w, 36h or a date like 2026-01-31", s)
}

// CSV is the summary's days as CSV rows, with a header, for spreadsheets.
func (s Summary) CSV() [][]string {
	rows := [][]string{{"day", "completed", "failed", "cancelled", "bytes_converted", "throughput_gib_per_hour"}}
	for _, d := range s.Days {
		rows = append(rows, []string{d.Day, strconv.Itoa(d.Completed), strconv.Itoa(d.Failed), strconv.Itoa(d.Cancelled),
			strconv.FormatInt(d.Bytes, 10), strconv.FormatFloat(d.GiBPerH, 'f', 2, 64)})
	}
	return rows
}

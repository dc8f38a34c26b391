package analytics_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/analytics"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

func TestCompute(t *testing.T) {
	day1 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.Local)
	day2 := day1.Add(24 * time.Hour)
	done := func(id string, at time.Time, runFor time.Duration, bytes int64, stages ...float64) jobs.Job {
		j := jobs.Job{ID: id, State: jobs.Completed, StartedAt: at.Add(-runFor), FinishedAt: at, ConvertedBytes: bytes}
		for i, s := range stages {
			j.StageTimes = append(j.StageTimes, jobs.StageTime{Stage: []string{"load", "convert"}[i], Seconds: s})
		}
		return j
	}
	failed := func(id string, at time.Time, stage, msg string) jobs.Job {
		return jobs.Job{ID: id, State: jobs.Failed, StartedAt: at.Add(-time.Minute), FinishedAt: at, ErrorStage: stage, Error: msg}
	}
	list := []jobs.Job{
		done("a", day1, time.Hour, 2<<30, 1, 10),
		done("b", day1.Add(time.Hour), 30*time.Minute, 1<<30, 3, 20),
		done("c", day2, time.Hour, 4<<30, 2, 30),
		failed("d", day2, "load", `cannot open /srv/import/web01.vmdk: permission denied`),
		failed("e", day2, "load", `cannot open /srv/other/db02.vmdk: permission denied`),
		failed("f", day2, "convert", `qemu-img exited with status 1`),
		{ID: "g", State: jobs.Cancelled, FinishedAt: day2},
		{ID: "h", State: jobs.Running, StartedAt: day2},
		done("old", day1.Add(-30*24*time.Hour), time.Hour, 1<<40),
	}
	s := analytics.Compute(list, "kvm01", day1.Add(-24*time.Hour), day2.Add(time.Hour))
	if s.Jobs != 7 || s.Completed != 3 || s.Failed != 3 || s.Cancelled != 1 || s.Bytes != 7<<30 {
		t.Fatalf("totals %+v", s)
	}
	// 7 GiB over 2.5 h of run time.
	if s.GiBPerH != 2.8 {
		t.Errorf("throughput %v, want 2.8", s.GiBPerH)
	}
	wantDays := []analytics.Day{
		{Day: "2026-03-01", Completed: 2, Bytes: 3 << 30, GiBPerH: 2},
		{Day: "2026-03-02", Completed: 1, Failed: 3, Cancelled: 1, Bytes: 4 << 30, GiBPerH: 4},
	}
	if !reflect.DeepEqual(s.Days, wantDays) {
		t.Errorf("days %+v\nwant %+v", s.Days, wantDays)
	}
	wantStages := []analytics.Stage{{Stage: "load", Count: 3, P50: 2, P95: 3}, {Stage: "convert", Count: 3, P50: 20, P95: 30}}
	if !reflect.DeepEqual(s.Stages, wantStages) {
		t.Errorf("stages %+v", s.Stages)
	}
	if len(s.Failures) != 2 || s.Failures[0].Count != 2 || s.Failures[0].Stage != "load" || s.Failures[0].Reason != "cannot open PATH: permission denied" {
		t.Errorf("failures %+v", s.Failures)
	}
	if len(s.Hosts) != 1 || s.Hosts[0].Host != "kvm01" || s.Hosts[0].Jobs != 7 {
		t.Errorf("hosts %+v", s.Hosts)
	}
	if rows := s.CSV(); len(rows) != 3 || rows[0][0] != "day" || rows[2][2] != "3" {
		t.Errorf("csv %v", rows)
	}
	if e := analytics.Compute(nil, "kvm01", day1, day2); e.Days == nil || e.Hosts == nil || e.Failures == nil || e.Stages == nil {
		t.Errorf("empty summary has nil lists (JSON null): %+v", e)
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.Local)
	for in, want := range map[string]time.Time{
		"7d":         now.Add(-7 * 24 * time.Hour),
		"2w":         now.Add(-14 * 24 * time.Hour),
		"36h":        now.Add(-36 * time.Hour),
		"2026-03-01": time.Date(2026, 3, 1, 0, 0, 0, 0, time.Local),
	} {
		if got, err := analytics.ParseSince(in, now); err != nil || !got.Equal(want) {
			t.Errorf("ParseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "week", "-3d", "0d"} {
		if _, err := analytics.ParseSince(bad, now); err == nil {
			t.Errorf("ParseSince(%q) accepted", bad)
		}
	}
}

package agent

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

func TestKeepReport(t *testing.T) {
	rep := &report.Report{Warnings: []string{"no Linux guest found"}, Stages: []report.Stage{
		{Name: "load", Status: "ok", Seconds: 1.5},
		{Name: "inspect", Status: "skipped"},
		{Name: "convert", Status: "failed", Seconds: 4},
		{Name: "", Status: "ok", Seconds: 9},
		{Name: "validate", Status: "ok", Seconds: -1},
	}, Artifacts: []report.Artifact{
		{Path: "/o/a.qcow2", Kind: "disk", Size: 1000},
		{Path: "/o/b.qcow2", Kind: "disk", Size: 24},
		{Path: "/o/domain.xml", Kind: "domain-xml", Size: 5000},
	}}
	ran := []jobs.StageTime{{Stage: "load", Seconds: 1.5}, {Stage: "convert", Seconds: 4}, {Stage: "validate", Seconds: 0}}
	for _, tc := range []struct {
		name      string
		state     jobs.State
		rep       *report.Report
		bytesDone int64
		stages    []jobs.StageTime
		converted int64
	}{
		{"completed: disks only", jobs.Completed, rep, 7, ran, 1024},
		{"completed, no disk in the report: progress bytes", jobs.Completed, &report.Report{}, 7, nil, 7},
		{"completed without a report", jobs.Completed, nil, 7, nil, 7},
		{"failed: stages, no bytes", jobs.Failed, rep, 7, ran, 0},
		{"cancelled before it started", jobs.Cancelled, nil, 0, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Values from an earlier run of the record must not survive.
			r := &record{Job: jobs.Job{BytesDone: tc.bytesDone, ConvertedBytes: 99, Warnings: []string{"old"}, StageTimes: []jobs.StageTime{{Stage: "old", Seconds: 1}}}}
			keepReport(r, tc.state, tc.rep)
			if want := jobs.KeepWarnings(warningsOf(tc.rep)); !reflect.DeepEqual(r.Warnings, want) {
				t.Errorf("kept warnings %q, want %q", r.Warnings, want)
			}
			if !reflect.DeepEqual(r.StageTimes, tc.stages) || r.ConvertedBytes != tc.converted {
				t.Errorf("kept stages %v bytes %d; want %v, %d", r.StageTimes, r.ConvertedBytes, tc.stages, tc.converted)
			}
		})
	}
}

// TestMetricsKeptAcrossRestart: what a finished job's report said is in the
// job store, so an agent started again (as it is after every idle exit)
// answers the same totals, with the reports and settlement files gone.
func TestMetricsKeptAcrossRestart(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	e.drop("web01.json", e.manifest("web01", ""))
	unit := e.nextStart()
	ok := completed("web01")
	ok.Stages = []report.Stage{{Name: "load", Status: "ok", Seconds: 2}, {Name: "fix", Status: "skipped"}, {Name: "convert", Status: "ok", Seconds: 30}}
	ok.Artifacts[0].Size = 5 << 20
	e.units.finish(t, unit, "success", ok)
	e.waitSettled(queue.Processed, "web01.json")

	e.drop("db01.json", e.manifest("db01", ""))
	unit = e.nextStart()
	bad := failedReport("convert", "cannot read disk")
	bad.Stages = []report.Stage{{Name: "load", Status: "ok", Seconds: 1}, {Name: "convert", Status: "failed", Seconds: 4}}
	e.units.finish(t, unit, "exit-code", bad)
	e.waitSettled(queue.Failed, "db01.json")

	want := apitype.NewMetrics()
	want.Jobs[jobs.Completed], want.Jobs[jobs.Failed] = 1, 1
	want.ConvertedBytes = 5 << 20
	want.StageSeconds = map[string]apitype.Summary{"load": {Count: 2, Seconds: 3}, "convert": {Count: 2, Seconds: 34}}
	want.JobsWithStageTimes = 2
	got := e.a.Metrics()
	// Run times come from the agent's clock; only their count is fixed.
	for _, s := range []jobs.State{jobs.Completed, jobs.Failed} {
		if got.JobSeconds[s].Count != 1 || got.JobSeconds[s].Seconds <= 0 {
			t.Errorf("run time of %s jobs: %+v", s, got.JobSeconds[s])
		}
	}
	want.JobSeconds = got.JobSeconds
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Metrics = %+v\nwant %+v", got, want)
	}

	e.stop()
	for _, d := range []string{queue.Processed, queue.Failed} {
		os.RemoveAll(filepath.Join(e.cfg.ManifestWorkflowDir, d))
	}
	os.RemoveAll(filepath.Join(e.cfg.StateDir, "jobs"))
	e.start()
	if again := e.a.Metrics(); !reflect.DeepEqual(again, got) {
		t.Errorf("after a restart Metrics = %+v\nwant %+v", again, got)
	}
}

func warningsOf(rep *report.Report) []string {
	if rep == nil {
		return nil
	}
	return rep.Warnings
}

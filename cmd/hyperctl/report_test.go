package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/analytics"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// Analytics computes the summary from the fake's jobs, as the agent does
// from its records.
func (f *fakeClient) Analytics(ctx context.Context, since, until time.Time) (analytics.Summary, error) {
	if f.err != nil {
		return analytics.Summary{}, f.err
	}
	return analytics.Compute(f.jobs, "testhost", since, until.Add(1)), nil
}

func TestReport(t *testing.T) {
	// testEnv's clock: 2025-01-02 03:04:05 UTC.
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	fake := &fakeClient{jobs: []jobs.Job{
		{ID: "a", State: jobs.Completed, StartedAt: now.Add(-2 * time.Hour), FinishedAt: now.Add(-time.Hour), ConvertedBytes: 3 << 30,
			StageTimes: []jobs.StageTime{{Stage: "convert", Seconds: 100}}},
		{ID: "b", State: jobs.Failed, StartedAt: now.Add(-time.Hour), FinishedAt: now.Add(-time.Minute), ErrorStage: "load", Error: "cannot open /srv/x.vmdk: permission denied"},
		{ID: "old", State: jobs.Completed, StartedAt: now.Add(-40 * 24 * time.Hour), FinishedAt: now.Add(-39 * 24 * time.Hour), ConvertedBytes: 1 << 40},
		{ID: "run", State: jobs.Running, StartedAt: now},
	}}
	r := runCLI(t, fake, "report")
	for _, w := range []string{"Jobs finished since", "2 (1 completed, 1 failed, 0 cancelled)", "3.0 GiB converted at 3.00 GiB/h", "convert", "cannot open PATH: permission denied"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("report lacks %q", w)
		}
	}
	if r.code != exitOK || t.Failed() {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, fake, "report", "--since", "60d", "-o", "json")
	var s analytics.Summary
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil || s.Jobs != 3 || s.Bytes != 1<<40+3<<30 {
		t.Fatalf("json: %v %s", err, r.stdout)
	}
	r = runCLI(t, fake, "-o", "csv", "report")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); r.code != exitOK || len(lines) != 2 || lines[0] != "day,completed,failed,cancelled,bytes_converted,throughput_gib_per_hour" {
		t.Fatalf("csv: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, fake, "-o", "csv", "jobs"); r.code != exitUsage || !strings.Contains(r.stderr, "csv is for hyperctl report") {
		t.Errorf("-o csv jobs: exit %d %s", r.code, r.stderr)
	}
	if r := runCLI(t, fake, "report", "--since", "soon"); r.code != exitUsage || !strings.Contains(r.stderr, "--since") {
		t.Errorf("--since soon: exit %d %s", r.code, r.stderr)
	}
}

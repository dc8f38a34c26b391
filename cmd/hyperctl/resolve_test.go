package main

import (
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

func TestVerbsTakeJobNames(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	all := []jobs.Job{
		{ID: "a1", Name: "web01", State: jobs.Completed, CreatedAt: t0},
		{ID: "b2", Name: "web01", State: jobs.Failed, CreatedAt: t0.Add(time.Hour)},
		{ID: "c3", Name: "db01", State: jobs.Running, CreatedAt: t0},
	}
	for _, c := range []struct {
		name     string
		args     []string
		code     int
		out, err string // substrings
	}{
		{"show by id", []string{"show", "a1"}, 0, "a1", ""},
		{"show by unique name", []string{"show", "db01"}, 0, "c3", ""},
		{"show by unit name", []string{"show", "hyper2kvm-job-c3.service"}, 0, "c3", ""},
		{"show by shared name takes the newest and says so", []string{"show", "web01"}, 0, "b2", `2 jobs are named "web01"; showing the most recent, b2`},
		{"cancel by unique name", []string{"cancel", "db01"}, 0, "Cancelled job c3", ""},
		{"cancel by shared name wants the id", []string{"cancel", "web01"}, 1, "", `2 jobs are named "web01": b2 (failed`},
		{"unknown name", []string{"show", "nosuch"}, 1, "", "nosuch"},
		{"logs by name", []string{"logs", "db01"}, 0, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeClient{jobs: append([]jobs.Job(nil), all...)}
			r := runCLI(t, f, c.args...)
			if r.code != c.code || !strings.Contains(r.stdout, c.out) || !strings.Contains(r.stderr, c.err) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q", r.code, r.stdout, r.stderr, c.code, c.out, c.err)
			}
		})
	}
}

func TestProgressIsReadable(t *testing.T) {
	for _, c := range []struct {
		j    jobs.Job
		want string
	}{
		{jobs.Job{State: jobs.Running, Progress: 42, BytesDone: 1503238553, BytesTotal: 2 << 30}, "42% (1.4 GiB of 2.0 GiB)"},
		{jobs.Job{State: jobs.Running, Progress: -1}, "?"},
		{jobs.Job{State: jobs.Completed, Progress: 100}, "-"},
	} {
		if got := formatProgress(c.j); got != c.want {
			t.Errorf("formatProgress(%+v) = %q, want %q", c.j, got, c.want)
		}
	}
	if got := formatMiBs(150 << 20); got != "150.0 MiB/s" {
		t.Errorf("formatMiBs = %q", got)
	}
}

func TestUserName(t *testing.T) {
	if got := userName(0); got != "root (uid 0)" {
		t.Errorf("userName(0) = %q", got)
	}
	if got := userName(2147483000); got != "uid 2147483000" {
		t.Errorf("an unknown uid: %q", got)
	}
}

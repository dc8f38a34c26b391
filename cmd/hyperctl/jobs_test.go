package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// pagingClient is fakeClient with the agent's paged list, as
// *dbusapi.Client has it; it records the pages asked for.
type pagingClient struct {
	*fakeClient
	pages []apitype.Page
}

func (p *pagingClient) ListJobsPage(ctx context.Context, f apitype.Filter, pg apitype.Page) ([]jobs.Job, int, error) {
	p.pages = append(p.pages, pg)
	all, err := p.ListJobs(ctx, f)
	if err != nil {
		return nil, 0, err
	}
	page, total := pg.Slice(all)
	return page, total, nil
}

func manyJobs(n int) []jobs.Job {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var out []jobs.Job
	for i := range n {
		st := jobs.Completed
		if i%4 == 0 {
			st = jobs.Failed
		}
		out = append(out, jobs.Job{ID: fmt.Sprintf("j%03d", i), Name: fmt.Sprintf("vm%03d", i), State: st, CreatedAt: t0.Add(time.Duration(i) * time.Minute)})
	}
	return out
}

func TestJobsPaging(t *testing.T) {
	tests := []struct {
		args        []string
		code        int
		first, last string // of the JSON list: newest last
		n, total    int
		hint        bool // "N of M jobs shown" on stderr
		page        apitype.Page
	}{
		{[]string{"jobs"}, 0, "j050", "j149", 100, 150, true, apitype.Page{Limit: 100}},
		{[]string{"jobs", "--limit", "5"}, 0, "j145", "j149", 5, 150, true, apitype.Page{Limit: 5}},
		{[]string{"jobs", "--limit", "5", "--offset", "5"}, 0, "j140", "j144", 5, 150, true, apitype.Page{Limit: 5, Offset: 5}},
		{[]string{"jobs", "--all"}, 0, "j000", "j149", 150, 150, false, apitype.Page{}},
		{[]string{"jobs", "--limit", "0"}, 0, "j000", "j149", 150, 150, false, apitype.Page{}},
		{[]string{"jobs", "--state", "failed", "--limit", "2"}, 0, "j144", "j148", 2, 38, true, apitype.Page{Limit: 2}},
		{[]string{"workflow", "-op", "list"}, 0, "j050", "j149", 100, 150, true, apitype.Page{Limit: 100}},
		{[]string{"jobs", "--all", "--limit", "5"}, exitUsage, "", "", 0, 0, false, apitype.Page{}},
		{[]string{"jobs", "--limit", "-1"}, exitUsage, "", "", 0, 0, false, apitype.Page{}},
		{[]string{"jobs", "--offset", "-3"}, exitUsage, "", "", 0, 0, false, apitype.Page{}},
	}
	for _, tc := range tests {
		for _, paged := range []bool{true, false} {
			name := strings.Join(tc.args, " ")
			if !paged {
				name += " (client without paging)"
			}
			t.Run(name, func(t *testing.T) {
				fake := &fakeClient{jobs: manyJobs(150)}
				pc := &pagingClient{fakeClient: fake}
				e, _, _ := testEnv(nil, fake)
				if paged {
					e.dial = func(context.Context) (agentClient, error) { return pc, nil }
				}
				r := runWith(t, e, append(tc.args, "-o", "json")...)
				if r.code != tc.code {
					t.Fatalf("exit %d, want %d: %s %s", r.code, tc.code, r.stdout, r.stderr)
				}
				if tc.code != 0 {
					return
				}
				var got struct {
					Jobs  []jobs.Job `json:"jobs"`
					Total int        `json:"total"`
				}
				if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
					t.Fatalf("%v: %s", err, r.stdout)
				}
				if len(got.Jobs) != tc.n || got.Total != tc.total || got.Jobs[0].ID != tc.first || got.Jobs[len(got.Jobs)-1].ID != tc.last {
					t.Errorf("%d jobs %s..%s of %d; want %d %s..%s of %d", len(got.Jobs), got.Jobs[0].ID, got.Jobs[len(got.Jobs)-1].ID, got.Total,
						tc.n, tc.first, tc.last, tc.total)
				}
				if hint := strings.Contains(r.stderr, fmt.Sprintf("%d of %d jobs shown", tc.n, tc.total)); hint != tc.hint {
					t.Errorf("stderr %q: hint %v, want %v", r.stderr, hint, tc.hint)
				}
				if paged && (len(pc.pages) != 1 || pc.pages[0] != tc.page) {
					t.Errorf("asked the agent for %+v, want %+v", pc.pages, tc.page)
				}
			})
		}
	}
}

// TestJobsTableNewestLast: the table shows the page's newest job last.
func TestJobsTableNewestLast(t *testing.T) {
	fake := &fakeClient{jobs: manyJobs(30)}
	r := runCLI(t, fake, "jobs", "--limit", "3")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[1], "j027") || !strings.HasPrefix(lines[3], "j029") {
		t.Errorf("exit %d:\n%s", r.code, r.stdout)
	}
	if !strings.Contains(r.stderr, "3 of 30 jobs shown") {
		t.Errorf("stderr %q", r.stderr)
	}
}

// TestJobsInfoNeverCut: the INFO column is never cut: whole on a pipe,
// wrapped within its column on a wide terminal, on lines of its own on a
// narrow one; every word of a long error is there, and no line is wider
// than the terminal.
func TestJobsInfoNeverCut(t *testing.T) {
	long := "cannot convert: inspection found no operating system; set pipeline.fix.enabled=false to convert a data disk as it is (/srv/images/blank-disk-with-a-long-name.vmdk)"
	list := []jobs.Job{{ID: "4e95c562", Name: "blank", State: jobs.Failed, Stage: "inspect", Error: long,
		CreatedAt: time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)}}
	for _, cols := range []string{"", "250", "120", "60"} {
		t.Run("COLUMNS="+cols, func(t *testing.T) {
			e, _, _ := testEnv(nil, &fakeClient{jobs: list})
			e.getenv = func(k string) string {
				if k == "COLUMNS" {
					return cols
				}
				return ""
			}
			r := runWith(t, e, "jobs")
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			if got := strings.Join(strings.Fields(r.stdout), " "); !strings.Contains(got, long) {
				t.Errorf("the error is not whole in:\n%s", r.stdout)
			}
			if cols == "" {
				return
			}
			n := 0
			fmt.Sscan(cols, &n)
			for _, l := range strings.Split(strings.TrimRight(r.stdout, "\n"), "\n") {
				// Narrower than the fixed columns, only INFO's lines fit.
				if visibleLen(l) > n && (n >= 100 || strings.HasPrefix(l, " ")) {
					t.Errorf("line of %d columns on a %d-column terminal: %q", visibleLen(l), n, l)
				}
			}
		})
	}
}

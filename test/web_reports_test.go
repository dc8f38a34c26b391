package test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/api"
	"github.com/hyper2kvm/hyper2kvm/api/apitest"
)

// TestWebReports draws the dashboard's Reports view in headless Chromium
// from the real bridge handler over the fake agent's finished jobs: a
// stacked bar per day and outcome, a row per stage with p50 and p95, a bar
// per failure cause with its reason; the window can be changed; every
// chart has a text alternative; no error in the page.
func TestWebReports(t *testing.T) {
	chromiumPath(t)
	t.Parallel()
	fake := apitest.New()
	now := time.Now()
	yesterday := now.Add(-24 * time.Hour)
	st := func(load, conv float64) []jobs.StageTime {
		return []jobs.StageTime{{Stage: "load", Seconds: load}, {Stage: "convert", Seconds: conv}}
	}
	for _, j := range []jobs.Job{
		{ID: "a1", Name: "web01", State: jobs.Completed, StartedAt: yesterday.Add(-time.Hour), FinishedAt: yesterday, ConvertedBytes: 4 << 30, StageTimes: st(2, 300)},
		{ID: "a2", Name: "web02", State: jobs.Completed, StartedAt: now.Add(-2 * time.Hour), FinishedAt: now.Add(-time.Hour), ConvertedBytes: 8 << 30, StageTimes: st(3, 600)},
		{ID: "a3", Name: "db01", State: jobs.Failed, StartedAt: now.Add(-time.Hour), FinishedAt: now.Add(-50 * time.Minute), ErrorStage: "load",
			Error: "pre-flight check failed: output-space: 1.0 GiB free on /srv/out", StageTimes: st(1, 0)[:1]},
		{ID: "a4", Name: "db02", State: jobs.Failed, StartedAt: now.Add(-time.Hour), FinishedAt: now.Add(-40 * time.Minute), ErrorStage: "load",
			Error: "pre-flight check failed: output-space: 2.5 GiB free on /srv/out2"},
		{ID: "old", Name: "old01", State: jobs.Completed, StartedAt: now.Add(-20 * 24 * time.Hour), FinishedAt: now.Add(-20 * 24 * time.Hour).Add(time.Hour), ConvertedBytes: 1 << 30},
	} {
		fake.Set(j)
	}
	srv := httptest.NewUnstartedServer(api.New(api.Config{Client: fake, Token: "web-test-token", Version: "test", Schema: manifest.Schema()}))
	srv.Config.ConnContext = api.ConnContext
	srv.Start()
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := startChromium(t, 1280, 1400)
	c.navigate(ctx, srv.URL+"/#reports")
	c.mustEval(ctx, pageHelpers, nil)
	c.waitJS(ctx, "the reports", `T.$("reports").dataset.loaded === "7d"`, `T.text("report-summary")`)

	var summary string
	c.mustEval(ctx, `T.text("report-summary")`, &summary)
	if !strings.HasPrefix(summary, "4 jobs (2 completed, 2 failed, 0 cancelled), 12 GiB converted") {
		t.Errorf("summary %q", summary)
	}
	var counts map[string]float64
	c.mustEval(ctx, `({
		completed: document.querySelectorAll('#svg-days rect[data-kind=completed]').length,
		failed: document.querySelectorAll('#svg-days rect[data-kind=failed]').length,
		stages: document.querySelectorAll('#svg-stages rect.p95').length,
		causes: document.querySelectorAll('#svg-failures rect').length,
		line: document.querySelectorAll('#svg-days polyline').length,
	})`, &counts)
	want := map[string]float64{"completed": 2, "failed": 1, "stages": 2, "causes": 1, "line": 1}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("%s: %v, want %v (all %v)", k, counts[k], v, counts)
		}
	}
	var labels []string
	c.mustEval(ctx, `["svg-days", "svg-stages", "svg-failures"].map(id => T.$(id).getAttribute("aria-label"))`, &labels)
	if len(labels) != 3 || !strings.Contains(labels[0], "2 completed") && !strings.Contains(labels[0], "1 completed") ||
		!strings.Contains(labels[1], "convert: p50") || !strings.Contains(labels[2], "2 in load: pre-flight check failed: output-space: N GiB free on PATH") {
		t.Errorf("chart labels %q", labels)
	}
	c.screenshot(ctx, webOutput(t), "reports-7d.png")

	// Another window: the 20-day-old job comes in.
	c.mustEval(ctx, `T.choose("report-since", "30d"); true`, nil)
	c.waitJS(ctx, "the 30-day reports", `T.$("reports").dataset.loaded === "30d" && T.text("report-summary").startsWith("5 jobs")`, `T.text("report-summary")`)
	var unlabelled []string
	c.mustEval(ctx, `[...document.querySelectorAll("#reports input, #reports select")].filter(e => !e.labels.length).map(e => e.id)`, &unlabelled)
	if len(unlabelled) > 0 {
		t.Errorf("unlabelled: %v", unlabelled)
	}
	if off := c.offOrigin(srv.URL); len(off) > 0 {
		t.Errorf("requests to other sites: %v", off)
	}
	if p := c.pageProblems(); len(p) > 0 {
		t.Errorf("errors in the page: %v", p)
	}
}

package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/api"
	"github.com/hyper2kvm/hyper2kvm/api/apitest"
	"github.com/hyper2kvm/hyper2kvm/dbusapi"
	"github.com/hyper2kvm/hyper2kvm/test/box"
)

// webOutput is where the browser tests leave their screenshots.
func webOutput(t testing.TB) string {
	return filepath.Join(box.RepoRoot(), "bin", "test-output", "web", t.Name())
}

// pageHelpers are injected into the dashboard so that the test acts the way
// a user does: typing fires input events, choosing fires change events.
const pageHelpers = `
window.T = {
  $: (id) => { const e = document.getElementById(id); if (!e) throw new Error("no element #" + id); return e; },
  type(id, v) { const e = T.$(id); e.focus(); e.value = v; e.dispatchEvent(new Event("input", {bubbles: true})); },
  choose(id, v) { const e = T.$(id); e.value = v; e.dispatchEvent(new Event("change", {bubbles: true})); },
  check(id, on) { const e = T.$(id); if (e.checked !== on) e.click(); },
  click(id) { T.$(id).click(); },
  text(id) { return T.$(id).textContent; },
};
true`

// dashboardRun is one walk through the dashboard as a user: set the token,
// build a manifest with the form (checking validation and the JSON editor on
// the way), submit it, and watch the job finish.
type dashboardRun struct {
	url, token string
	sourcePath string
	// noFix turns FIX and INSPECT off in the form (a blank test disk has
	// no guest to fix).
	noFix bool
	// finished is the tab the job must end in ("completed").
	finished string
	outDir   string
}

func (d dashboardRun) run(ctx context.Context, t *testing.T, c *chromium) (jobID string) {
	c.navigate(ctx, d.url+"/")
	c.mustEval(ctx, pageHelpers, nil)
	c.waitJS(ctx, "the status cards", `T.text("c-queue") !== "–"`, `T.text("banner")`)
	c.waitJS(ctx, "the live event stream", `T.text("conn") === "live"`, `T.text("conn")`)

	// The token, entered once on the sign-in screen, kept in sessionStorage.
	c.waitJS(ctx, "the sign-in screen", `!T.$("signin").hidden`, `T.$("signin").hidden`)
	c.mustEval(ctx, `T.$("signin-token").value = `+jsString(d.token)+`; T.click("signin-submit"); true`, nil)
	// The bridge checks it (whoami) before the page keeps it.
	c.waitJS(ctx, "the token in sessionStorage", `sessionStorage.getItem("hyper2kvm-api-token") === `+jsString(d.token)+` && T.text("token-button").startsWith("Signed in as ")`,
		`[sessionStorage.getItem("hyper2kvm-api-token"), T.text("token-button")]`)

	// The untouched builder shows no problem, although the empty manifest
	// has some: nothing is wrong before the user did anything.
	c.waitJS(ctx, "the builder's first validation", `T.$("validity").dataset.checked !== undefined`, `T.text("validity")`)
	untouched := `[...document.querySelectorAll("#manifest-form .field-error")].map(e => e.textContent).join("") === "" &&
		!document.querySelector("#form-fields [aria-invalid]") && T.text("general-errors") === "" && !T.$("validity").classList.contains("bad")`
	var clean bool
	c.mustEval(ctx, untouched, &clean)
	if !clean {
		var state []string
		c.mustEval(ctx, `[T.text("validity"), T.$("validity").className, ...[...document.querySelectorAll("#manifest-form .field-error")].map(e => e.id + ": " + e.textContent).filter(t => !t.endsWith(": "))]`, &state)
		t.Errorf("the untouched builder shows problems: %q", state)
	}
	c.screenshot(ctx, d.outDir, "00-builder-untouched.png")

	// Validation as you type, at the touched field only: the name typed,
	// the still empty source path is not flagged until Validate.
	var seq string
	c.mustEval(ctx, `T.$("validity").dataset.checked`, &seq)
	c.mustEval(ctx, `T.type("f-name", "webtest01"); true`, nil)
	c.waitJS(ctx, "the validation after typing the name", `T.$("validity").dataset.checked !== `+jsString(seq), `T.text("validity")`)
	c.mustEval(ctx, untouched, &clean)
	if !clean {
		t.Errorf("typing the name flagged fields the user did not touch: %q %q", c.evalString(ctx, `T.text("validity")`), c.evalString(ctx, `T.text("e-pipeline-load-source-path")`))
	}
	c.mustEval(ctx, `T.click("validate"); true`, nil)
	c.waitJS(ctx, "the source_path problem at its field after Validate",
		`T.text("e-pipeline-load-source-path").includes("required") && T.$("f-pipeline-load-source-path").getAttribute("aria-invalid") === "true" &&
		 T.text("e-name") === "" && !T.$("f-name").hasAttribute("aria-invalid")`,
		`[T.text("validity"), T.text("e-name"), T.text("e-pipeline-load-source-path"), T.text("general-errors")]`)
	c.screenshot(ctx, d.outDir, "01-builder-invalid.png")

	c.mustEval(ctx, `T.type("f-pipeline-load-source-path", `+jsString(d.sourcePath)+`); T.choose("f-pipeline-load-source-type", "raw"); true`, nil)
	if d.noFix {
		c.mustEval(ctx, `T.check("f-pipeline-fix-enabled", false); T.check("f-pipeline-inspect-enabled", false); true`, nil)
	} else {
		c.mustEval(ctx, `T.choose("f-pipeline-fix-fstab-mode", "bypath-only"); true`, nil)
	}
	c.waitJS(ctx, "the manifest to be valid", `T.text("validity") === "Valid manifest" && !T.$("f-pipeline-load-source-path").hasAttribute("aria-invalid")`,
		`[T.text("validity"), T.text("general-errors")]`)

	// Form -> JSON: the editor shows what the form holds.
	c.mustEval(ctx, `T.click("mode-json"); true`, nil)
	var doc map[string]any
	c.mustEval(ctx, `JSON.parse(T.$("json-editor").value)`, &doc)
	if doc["name"] != "webtest01" || doc["version"] != "1.0" {
		t.Fatalf("JSON editor: %v", doc)
	}
	load := doc["pipeline"].(map[string]any)["load"].(map[string]any)
	if load["source_path"] != d.sourcePath || load["source_type"] != "raw" {
		t.Fatalf("JSON editor load: %v", load)
	}
	// JSON -> form: an edit in the editor shows in the form.
	c.mustEval(ctx, `(() => {
		const d = JSON.parse(T.$("json-editor").value);
		d.pipeline.convert = Object.assign(d.pipeline.convert || {}, {output_format: "qcow2", compress: true});
		T.type("json-editor", JSON.stringify(d, null, 2));
		T.click("mode-form");
		return true; })()`, nil)
	var compress bool
	c.mustEval(ctx, `T.$("f-pipeline-convert-compress").checked && !T.$("form-fields").hidden`, &compress)
	if !compress {
		t.Fatal("a JSON edit (convert.compress) did not reach the form")
	}
	// A broken JSON edit is shown at the editor and not taken.
	c.mustEval(ctx, `T.click("mode-json"); T.type("json-editor", "{\"version\": "); true`, nil)
	c.waitJS(ctx, "the JSON error", `T.text("json-error").startsWith("Not valid JSON")`, `T.text("json-error")`)
	c.mustEval(ctx, `T.type("json-editor", JSON.stringify(H2KBuilder.doc, null, 2)); T.click("mode-form"); true`, nil)
	c.waitJS(ctx, "the manifest to be valid again", `T.text("validity") === "Valid manifest"`, `[T.text("validity"), T.text("general-errors")]`)
	c.screenshot(ctx, d.outDir, "02-builder-valid.png")

	// Submit, and the job shows up and finishes.
	c.mustEval(ctx, `T.click("submit"); true`, nil)
	c.waitJS(ctx, "the submit answer", `T.text("submit-result").startsWith("Submitted: job")`, `T.text("submit-result")`)
	var result string
	c.mustEval(ctx, `T.text("submit-result")`, &result)
	jobID = strings.Fields(strings.TrimPrefix(result, "Submitted: job "))[0]
	jobID = strings.TrimSuffix(jobID, ",")
	t.Logf("submitted job %s", jobID)
	sel := fmt.Sprintf(`document.querySelector('#list-%s [data-job=%s]')`, d.finished, jsString(jobID))
	// Wait for the job to end, and stop at once if it ends elsewhere.
	shown := fmt.Sprintf(`(() => { const e = document.querySelector('[data-job=%s]'); return e ? e.dataset.status + ": " + e.textContent : ""; })()`, jsString(jobID))
	for {
		var state string
		c.mustEval(ctx, shown, &state)
		if strings.HasPrefix(state, d.finished+":") {
			break
		}
		if st, _, _ := strings.Cut(state, ":"); st == "completed" || st == "failed" || st == "cancelled" {
			t.Fatalf("job %s ended %s, want %s: the page shows %q", jobID, st, d.finished, state)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for job %s to be %s: %v; the page shows %q", jobID, d.finished, ctx.Err(), state)
		case <-time.After(200 * time.Millisecond):
		}
	}
	c.waitJS(ctx, "job "+jobID+" in the "+d.finished+" tab", sel, "")
	c.mustEval(ctx, `H2K.selectTab(`+jsString(d.finished)+`); true`, nil)
	c.screenshot(ctx, d.outDir, "03-dashboard-"+d.finished+".png")

	// The job's details and log.
	c.mustEval(ctx, sel+`.querySelector("button").click(); true`, nil)
	c.waitJS(ctx, "the job dialog with its log", `T.$("job-dialog").open && T.text("job-log") !== "loading…"`, `T.text("job-log")`)
	c.waitJS(ctx, "the job's status in the dialog", `T.text("job-fields").includes(`+jsString(d.finished)+`)`, `T.text("job-fields")`)
	c.screenshot(ctx, d.outDir, "04-job-details.png")
	c.mustEval(ctx, `T.$("job-dialog").close(); true`, nil)
	return jobID
}

// checkPage asserts what holds for every page: keyboard tabs, a narrow
// window without sideways scrolling, no request to another site, no error.
func checkPage(ctx context.Context, t *testing.T, c *chromium, origin, outDir string) {
	c.mustEval(ctx, `T.$("tab-active").focus(); true`, nil)
	c.key(ctx, "ArrowRight", "ArrowRight", 39)
	var focused string
	c.mustEval(ctx, `document.activeElement.id + ":" + document.activeElement.getAttribute("aria-selected") + ":" + T.$("panel-pending").hidden`, &focused)
	if focused != "tab-pending:true:false" {
		t.Errorf("ArrowRight on the Active tab: %s, want the Pending tab selected and shown", focused)
	}
	var unlabelled []string
	c.mustEval(ctx, `[...document.querySelectorAll("input, select, textarea")].filter(e => !e.labels.length && !e.getAttribute("aria-label")).map(e => e.id)`, &unlabelled)
	if len(unlabelled) > 0 {
		t.Errorf("inputs without a label: %v", unlabelled)
	}
	c.resize(ctx, 360, 800)
	c.waitJS(ctx, "the narrow layout", `window.innerWidth <= 360`, `window.innerWidth`)
	var overflow int
	c.mustEval(ctx, `document.documentElement.scrollWidth - window.innerWidth`, &overflow)
	if overflow > 0 {
		t.Errorf("narrow window (360px) scrolls sideways by %dpx", overflow)
	}
	c.screenshot(ctx, outDir, "05-narrow.png")
	if off := c.offOrigin(origin); len(off) > 0 {
		t.Errorf("the dashboard made requests to other sites: %v", off)
	}
	if p := c.pageProblems(); len(p) > 0 {
		t.Errorf("errors in the page:\n%s", strings.Join(p, "\n"))
	}
}

// TestWebDashboardFake drives the dashboard in headless Chromium against
// the real bridge handler backed by the in-memory fake agent: fast, no root,
// and it checks the page itself (builder, sync, validation at the field,
// live updates, details, retry, keyboard, narrow window, no external
// requests). TestWebDashboardBox does the same against the real agent.
func TestWebDashboardFake(t *testing.T) {
	chromiumPath(t)
	fake := apitest.New()
	fake.Step = 40 * time.Millisecond
	now := time.Now()
	fake.Set(jobs.Job{ID: "old-failed", Name: "legacy01", State: jobs.Failed, Stage: "convert", ErrorStage: "convert",
		Error: "cannot convert legacy01.vmdk: qemu-img: Could not open: Invalid footer", StartedAt: now.Add(-time.Hour), FinishedAt: now.Add(-50 * time.Minute)})
	fake.SetLogFunc(fixedJournal)
	srv := httptest.NewUnstartedServer(api.New(api.Config{
		Client: fake, Token: "web-test-token", Version: "test",
		Schema: manifest.Schema(),
	}))
	srv.Config.ConnContext = api.ConnContext
	srv.Start()
	t.Cleanup(srv.Close) // after the browser's cleanup, which closes its event stream

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := startChromium(t, 1280, 900)
	out := webOutput(t)
	d := dashboardRun{url: srv.URL, token: "web-test-token", sourcePath: "/data/webtest01.img", finished: "completed", outDir: out}
	id := d.run(ctx, t, c)

	var sent map[string]any
	got := fake.Submitted()
	if len(got) != 1 {
		t.Fatalf("the agent got %d manifests", len(got))
	}
	if err := json.Unmarshal(got[0], &sent); err != nil {
		t.Fatalf("submitted manifest is not JSON: %v", err)
	}
	p := sent["pipeline"].(map[string]any)
	if sent["name"] != "webtest01" || p["fix"].(map[string]any)["fstab"].(map[string]any)["mode"] != "bypath-only" ||
		p["convert"].(map[string]any)["compress"] != true {
		t.Errorf("submitted manifest: %s", got[0])
	}
	if j, _ := fake.GetJob(ctx, id); j.State != jobs.Completed {
		t.Errorf("job %s is %s", id, j.State)
	}

	// Retry of the failed job from its details, with the stored token.
	c.mustEval(ctx, `H2K.selectTab("failed"); document.querySelector('#list-failed [data-job="old-failed"] button').click(); true`, nil)
	c.waitJS(ctx, "the failed job's error in the dialog", `T.text("job-fields").includes("Invalid footer") && !T.$("job-retry").hidden`, `T.text("job-fields")`)
	c.waitJS(ctx, "its log", `T.text("job-log").includes("qemu-img")`, `T.text("job-log")`)
	c.mustEval(ctx, `T.click("job-retry"); true`, nil)
	c.waitJS(ctx, "the retry answer", `T.text("job-action-result").startsWith("Queued again as job")`, `T.text("job-action-result")`)
	c.mustEval(ctx, `T.$("job-dialog").close(); true`, nil)

	// Download as JSON: the file is the manifest the form shows.
	dl := t.TempDir()
	if err := c.call(ctx, "", "Browser.setDownloadBehavior", map[string]any{"behavior": "allow", "downloadPath": dl}, nil); err != nil {
		t.Fatal(err)
	}
	c.mustEval(ctx, `T.click("download"); true`, nil)
	var downloaded map[string]any
	err := waitFile(ctx, filepath.Join(dl, "webtest01.json"), func(data []byte) error { return json.Unmarshal(data, &downloaded) })
	if err != nil || downloaded["name"] != "webtest01" || downloaded["version"] != "1.0" {
		t.Errorf("downloaded manifest: %v %v", err, downloaded)
	}

	// A batch: problems of the second VM show at its own fields.
	c.mustEval(ctx, `T.check("f-batch", true); T.click("add-vm"); true`, nil)
	c.waitJS(ctx, "the second VM's problems at its fields",
		`T.text("e-vms-1-name").includes("required") && T.text("e-vms-1-pipeline-load-source-path").includes("required") &&
		 T.$("f-vms-1-pipeline-load-source-path").getAttribute("aria-invalid") === "true" && T.text("e-vms-0-pipeline-load-source-path") === ""`,
		`[T.text("validity"), T.text("general-errors")]`)
	var batchDoc map[string]any
	c.mustEval(ctx, `H2KBuilder.doc`, &batchDoc)
	if vms, _ := batchDoc["vms"].([]any); batchDoc["batch"] != true || len(vms) != 2 || batchDoc["pipeline"] != nil ||
		vms[0].(map[string]any)["name"] != "webtest01" {
		t.Errorf("batch manifest: %v", batchDoc)
	}
	c.screenshot(ctx, out, "06-batch-problems.png")
	c.mustEval(ctx, `T.check("f-batch", false); true`, nil)
	c.waitJS(ctx, "the single-VM manifest to be valid again", `T.text("validity") === "Valid manifest" && T.$("f-name").value === "webtest01"`,
		`[T.text("validity"), T.text("general-errors")]`)

	// The agent going away shows, and the page falls back to polling.
	fake.FailWith(dbusapi.ErrNoBus)
	c.mustEval(ctx, `H2K.refreshAll(); true`, nil)
	c.waitJS(ctx, "the unreachable banner", `!T.$("banner").hidden && T.text("banner").includes("cannot reach the hyper2kvm agent")`, `T.text("banner")`)
	// A misconfigured agent: its reason, in plain words, at once.
	fake.FailWith(apierr.New(apierr.ConfigInvalid, `the agent's configuration is invalid: /etc/hyper2kvm/agent.yaml: line 1: unknown key "max_concurent_jobs" (did you mean "max_concurrent_jobs"?)`))
	c.mustEval(ctx, `H2K.refreshAll(); true`, nil)
	c.waitJS(ctx, "the misconfigured banner", `!T.$("banner").hidden && T.text("banner").includes("its configuration file is invalid") &&
		T.text("banner").includes("line 1") && T.text("banner").includes('did you mean "max_concurrent_jobs"')`, `T.text("banner")`)
	c.screenshot(ctx, out, "06b-config-invalid.png")
	// The drop folder not watched: said, with what to run.
	fake.FailWith(nil)
	fake.SetPathUnit("failed", "unit-start-limit-hit")
	c.mustEval(ctx, `H2K.refreshAll(); true`, nil)
	c.waitJS(ctx, "the unwatched drop folder banner", `!T.$("banner").hidden && T.text("banner").includes("drop folder is not watched") &&
		T.text("banner").includes("unit-start-limit-hit") && T.text("banner").includes("systemctl reset-failed hyper2kvmd.path")`, `T.text("banner")`)
	fake.SetPathUnit("active", "success")
	c.mustEval(ctx, `H2K.refreshAll(); true`, nil)
	c.waitJS(ctx, "the banner to clear", `T.$("banner").hidden`, `T.text("banner")`)

	// A long history is loaded a page at a time: the tab counts every
	// job, shows 50, and "Show N more" brings the next ones.
	for i := range 120 {
		fake.Set(jobs.Job{ID: fmt.Sprintf("hist%03d", i), Name: fmt.Sprintf("old%03d", i), State: jobs.Completed,
			StartedAt: now.Add(-time.Duration(200-i) * time.Minute), FinishedAt: now.Add(-time.Duration(199-i) * time.Minute)})
	}
	c.mustEval(ctx, `H2K.refreshAll(); H2K.selectTab("completed"); true`, nil)
	shown := `document.querySelectorAll("#list-completed li.job").length`
	total := `Number(T.text("n-completed"))`
	c.waitJS(ctx, "the first page of completed jobs", shown+` === 50 && `+total+` >= 121 && T.text("list-completed").includes("50 of ")`,
		`[`+shown+`, T.text("n-completed")]`)
	c.screenshot(ctx, out, "07-completed-page.png")
	c.mustEval(ctx, `document.querySelector('[data-more="completed"]').click(); true`, nil)
	c.waitJS(ctx, "the second page", shown+` === 100`, `[`+shown+`, T.text("n-completed")]`)
	c.mustEval(ctx, `document.querySelector('[data-more="completed"]').click(); true`, nil)
	c.waitJS(ctx, "every completed job", shown+` === `+total+` && !document.querySelector('[data-more="completed"]')`,
		`[`+shown+`, T.text("n-completed")]`)

	checkPage(ctx, t, c, srv.URL, out)
}

// fixedJournal plays the agent's GetJobLog for the fake agent's jobs.
func fixedJournal(id, format string) []string {
	unit := "hyper2kvm-job-" + id + ".service"
	if format == "json" {
		return []string{`{"__REALTIME_TIMESTAMP":"1767261600000000","PRIORITY":"3","SYSLOG_IDENTIFIER":"hyper2kvmd","MESSAGE":"qemu-img: Could not open ` + unit + `"}`}
	}
	return []string{"qemu-img: Could not open " + unit}
}

// TestWebDashboardBox drives the dashboard served by the real bridge in the
// real-systemd box (through hyper2kvm-api.socket's Unix socket, proxied to a
// loopback port on the host where the browser runs) against the real agent:
// the manifest built in the form is converted by a real job unit.
func TestWebDashboardBox(t *testing.T) {
	chromiumPath(t)
	b := startBridgeBox(t)
	b.MustExec(t, "touch", apiGateDir+"/open")
	sock := b.Path(apiSocket)
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&url.URL{Scheme: "http", Host: "hyper2kvm"})
			r.Out.Host = "localhost"
		},
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}},
		FlushInterval: -1, // the event stream
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := startChromium(t, 1280, 900)
	out := webOutput(t)
	d := dashboardRun{url: srv.URL, token: apiToken, sourcePath: "/srv/vms/web01.img", noFix: true, finished: "completed", outDir: out}
	id := d.run(ctx, t, c)

	// What the user saw is what the agent did.
	j := b.jsonCall(t, "GET", "/api/workflow/jobs/"+id, "", "", 200)
	outs, _ := j["outputs"].([]any)
	if j["status"] != "completed" || len(outs) == 0 || j["submitted_by"] == -1.0 {
		t.Errorf("job %s as the agent has it: %v", id, j)
	}
	for _, o := range outs {
		if _, _, err := b.Exec(ctx, "test", "-s", o.(string)); err != nil {
			t.Errorf("output %v is missing in the box", o)
		}
	}
	checkPage(ctx, t, c, srv.URL, out)
}

// waitFile waits until path exists and check accepts its content.
func waitFile(ctx context.Context, path string, check func([]byte) error) error {
	for {
		data, err := os.ReadFile(path)
		if err == nil {
			if err = check(data); err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last: %v)", path, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

package test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/api"
	"github.com/hyper2kvm/hyper2kvm/api/apitest"
)

// countingJournal plays the agent's GetJobLog with a log that grows by one
// line at every read, so the test sees whether the page read it again.
type countingJournal struct{ reads atomic.Int64 }

func (j *countingJournal) read(id, format string) []string {
	n := j.reads.Add(1)
	var out []string
	for i := int64(1); i <= n; i++ {
		out = append(out, fmt.Sprintf(`{"__REALTIME_TIMESTAMP":"1767261600000000","PRIORITY":"6","SYSLOG_IDENTIFIER":"hyper2kvmd","MESSAGE":"convert line %d of hyper2kvm-job-%s.service"}`, i, id))
	}
	return out
}

// TestWebDashboardStates walks the dashboard's states a sysadmin meets on a
// first day, against the fake agent, with a screenshot of each in
// bin/test-output/web/TestWebDashboardStates/: the agent misconfigured,
// the empty state (where to drop, the builder, a template), the job lists
// with times, host, source, result, paging and search, a running job's
// details with rate, ETA and the log following live, a completed job's
// disks and domain XML, the builder after a refused submit, a pending
// job reprioritized from its details, the queue drained and resumed, the
// schedules, and a retried job's attempts.
func TestWebDashboardStates(t *testing.T) {
	chromiumPath(t)
	fake := apitest.New()
	journal := &countingJournal{}
	fake.SetLogFunc(journal.read)
	srv := httptest.NewUnstartedServer(api.New(api.Config{
		Client: fake, Token: "web-test-token", Version: "test",
		Schema: manifest.Schema(), WorkflowDir: "/srv/h2k/workflow", Hostname: "kvm07",
		UserDial: func(ctx context.Context, tok string) (api.Client, string, error) {
			if tok == "h2k_bobs-token" {
				return fake, "bob", nil
			}
			return nil, "", errors.New("unknown token")
		},
	}))
	srv.Config.ConnContext = api.ConnContext
	srv.Start()
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := startChromium(t, 1280, 900)
	out := webOutput(t)
	open := func() {
		c.navigate(ctx, srv.URL+"/")
		c.mustEval(ctx, pageHelpers, nil)
	}

	// 1. A misconfigured agent: the page's first answer says why, in the
	// banner and where it said "connecting…".
	fake.FailWith(apierr.New(apierr.ConfigInvalid, `the agent's configuration is invalid: /etc/hyper2kvm/agent.yaml: line 3: unknown key "max_concurent_jobs" (did you mean "max_concurrent_jobs"?)`))
	open()
	c.waitJS(ctx, "the misconfigured agent's reason", `!T.$("banner").hidden && T.text("banner").includes("configuration file is invalid") &&
		T.text("banner").includes("line 3") && T.text("conn") === "agent misconfigured"`, `[T.text("banner"), T.text("conn")]`)
	c.screenshot(ctx, out, "01-agent-misconfigured.png")

	// 2. Empty: what to do first, with this agent's drop folder.
	fake.FailWith(nil)
	open()
	c.waitJS(ctx, "the empty state", `!T.$("empty-state").hidden && T.text("empty-state").includes("/srv/h2k/workflow/to_be_processed/web01.vmdk.part") &&
		T.text("empty-state").includes("manifest builder") && T.text("empty-state").includes('"source_path"')`,
		`[T.$("empty-state").hidden, T.text("empty-state"), T.text("agent-meta")]`)
	c.screenshot(ctx, out, "02-empty.png")

	// 3. A history: every job shows when, where, from what, and a
	// completed one what it gave.
	now := time.Now().UTC().Truncate(time.Second)
	for i := range 120 {
		created := now.Add(-time.Duration(300-2*i) * time.Minute)
		fake.Set(jobs.Job{ID: fmt.Sprintf("hist%03d", i), Name: fmt.Sprintf("old%03d", i), State: jobs.Completed, Stage: "validate",
			Manifest: fmt.Sprintf("old%03d.json", i), CreatedAt: created, StartedAt: created.Add(10 * time.Second),
			FinishedAt: created.Add(70 * time.Second), BytesDone: 1 << 30, BytesTotal: 1 << 30,
			ReportPath: fmt.Sprintf("/srv/h2k/workflow/processed/2026-12-07/old%03d.report.json", i),
			Outputs:    []string{fmt.Sprintf("/srv/out/old%03d/old%03d.qcow2", i, i), fmt.Sprintf("/srv/out/old%03d/old%03d.xml", i, i)}})
	}
	c.mustEval(ctx, `H2K.refreshAll(); H2K.selectTab("completed"); true`, nil)
	item := `document.querySelector('#list-completed [data-job="hist119"]')`
	// Without a token over TCP the page is any local user's: jobs without
	// their paths, and a word on how to see them.
	c.waitJS(ctx, "the completed list without a token", item+` && T.$("empty-state").hidden`, `T.text("list-completed").slice(0, 300)`)
	var itemText string
	c.mustEval(ctx, item+`.textContent`, &itemText)
	if strings.Contains(itemText, "old119.json") || strings.Contains(itemText, "old119.qcow2") || !strings.Contains(itemText, "sign in with an API token") {
		t.Errorf("without a token the list shows %q; want no paths and how to see them", itemText)
	}
	c.screenshot(ctx, out, "03a-list-without-token.png")
	c.mustEval(ctx, `sessionStorage.setItem("hyper2kvm-api-token", "web-test-token"); H2K.refreshAll(); true`, nil)
	c.waitJS(ctx, "the completed list with the token", item+` && `+item+`.textContent.includes("old119.json")`, `T.text("list-completed").slice(0, 300)`)
	c.mustEval(ctx, item+`.textContent`, &itemText)
	for _, want := range []string{"kvm07", "old119.json", "→ old119.qcow2, old119.xml", "took 1m 0s", "1.0 GiB", "created", "started", "finished"} {
		if !strings.Contains(itemText, want) {
			t.Errorf("completed job in the list: %q lacks %q", itemText, want)
		}
	}
	if strings.Contains(itemText, "validate") {
		t.Errorf("completed job in the list shows its last stage: %q", itemText)
	}
	var times int
	c.mustEval(ctx, item+`.querySelectorAll("time[datetime]").length`, &times)
	if times != 3 {
		t.Errorf("completed job in the list has %d timestamps, want created, started and finished", times)
	}
	shown := `document.querySelectorAll("#list-completed li.job").length`
	c.waitJS(ctx, "the first page", shown+` === 50 && T.text("n-completed") === "120"`, `[`+shown+`, T.text("n-completed")]`)
	c.screenshot(ctx, out, "03-list.png")
	// Search by name, then by source (the manifest), among the loaded jobs.
	c.mustEval(ctx, `T.type("job-search", "old11"); true`, nil)
	c.waitJS(ctx, "ten matches", shown+` === 10 && [...document.querySelectorAll("#list-completed li.job")].every(e => e.textContent.includes("old11"))`,
		`[`+shown+`, T.text("list-completed").slice(0, 200)]`)
	c.screenshot(ctx, out, "04-search.png")
	c.mustEval(ctx, `T.type("job-search", "old005.json"); true`, nil)
	c.waitJS(ctx, "the search to say it looked at the loaded page only", shown+` === 0 && T.text("list-completed").includes("searched the 50 loaded of 120")`,
		`[`+shown+`, T.text("list-completed").slice(0, 200)]`)
	c.mustEval(ctx, `document.querySelector('[data-more="completed"]').click(); true`, nil)
	c.mustEval(ctx, `document.querySelector('[data-more="completed"]') && document.querySelector('[data-more="completed"]').click(); true`, nil)
	c.waitJS(ctx, "the match on a later page", shown+` === 1 && document.querySelector('#list-completed [data-job="hist005"]')`,
		`[`+shown+`, T.text("list-completed").slice(0, 200)]`)
	c.mustEval(ctx, `T.type("job-search", ""); H2K.selectTab("all"); true`, nil)
	c.waitJS(ctx, "every state in the All tab", `T.text("n-all") === "120"`, `T.text("n-all")`)

	// 4. A completed job's details: source, host, size, disks and domain
	// XML, the report.
	// A job's details and log need the token over TCP (the administrator
	// has given it to the page).
	// The report's guest and every change FIX made, with its diff.
	fake.SetReport("hist119", []byte(`{"report_version":"1","job_id":"hist119","name":"old119","status":"completed",
		"guest":{"os":{"type":"linux","id":"debian","version_id":"12","pretty_name":"Debian GNU/Linux 12 (bookworm)"}},
		"changes":[{"fix":"fstab","file":"/etc/fstab","before":"# fstab\n/dev/sda1 / ext4 defaults 0 1\n/dev/sdb1 /data xfs defaults 0 2\n",
		  "after":"# fstab\nUUID=0b1c / ext4 defaults 0 1\n/dev/sdb1 /data xfs defaults 0 2\n"},
		 {"fix":"grub","file":"/etc/default/grub","before":"GRUB_CMDLINE_LINUX=\"\"\n","after":"GRUB_CMDLINE_LINUX=\"console=ttyS0\"\n","note":"serial console"}]}`))
	c.mustEval(ctx, `sessionStorage.setItem("hyper2kvm-api-token", "web-test-token"); H2K.showJob("hist119"); true`, nil)
	c.waitJS(ctx, "the completed job's details", `T.text("job-fields").includes("kvm07") && T.text("job-fields").includes("1.0 GiB") &&
		T.text("job-outputs").includes("disk /srv/out/old119/old119.qcow2") && T.text("job-outputs").includes("domain XML /srv/out/old119/old119.xml") &&
		T.text("job-report").includes("old119.report.json") && T.$("job-retry").hidden`,
		`[T.text("job-fields"), T.text("job-outputs"), T.text("job-report")]`)
	c.waitJS(ctx, "the report's guest and changes", `T.text("job-guest-os") === "Guest operating system: Debian GNU/Linux 12 (bookworm)" &&
		T.text("job-changes-h") === "FIX made 2 changes:" &&
		T.text("job-report-body").includes("- /dev/sda1 / ext4 defaults 0 1") && T.text("job-report-body").includes("+ UUID=0b1c / ext4 defaults 0 1") &&
		T.text("job-report-body").includes("  /dev/sdb1 /data xfs defaults 0 2") && T.text("job-report-body").includes("grub: /etc/default/grub (serial console)") &&
		document.querySelectorAll("#job-report-body .diff .add").length === 2`,
		`T.text("job-report-body")`)
	c.screenshot(ctx, out, "05-completed-details.png")
	c.mustEval(ctx, `T.$("job-dialog").close(); true`, nil)

	// 5. A running job: transfer, rate and ETA, and the log follows the
	// job's events without a click.
	run := jobs.Job{ID: "run1", Name: "db01", State: jobs.Running, Stage: "convert", Progress: 25, Manifest: "db01.json",
		CreatedAt: now.Add(-time.Minute), StartedAt: now.Add(-50 * time.Second), BytesDone: 512 << 20, BytesTotal: 2 << 30}
	fake.Set(run)
	c.mustEval(ctx, `H2K.selectTab("active"); H2K.showJob("run1"); true`, nil)
	c.waitJS(ctx, "the running job's transfer", `/512\.0 MiB of 2\.0 GiB · [0-9.]+ MiB\/s · ETA /.test(T.text("job-fields")) && T.text("job-log").includes("convert line")`,
		`[T.text("job-fields"), T.text("job-log")]`)
	var lines int
	c.mustEval(ctx, `T.text("job-log").split("convert line").length - 1`, &lines)
	run.Progress, run.BytesDone = 50, 1<<30
	fake.Set(run)
	c.waitJS(ctx, "the log to follow the job", fmt.Sprintf(`T.text("job-log").split("convert line").length - 1 > %d && T.text("job-fields").includes("1.0 GiB of 2.0 GiB")`, lines),
		`[T.text("job-fields"), T.text("job-log")]`)
	c.screenshot(ctx, out, "06-running-details.png")
	c.mustEval(ctx, `T.$("job-dialog").close(); true`, nil)

	// 6. Retry is offered for a failed job; once the agent says the
	// dashboard may not retry, the button goes and the page says why.
	fake.Set(jobs.Job{ID: "bad1", Name: "mail01", State: jobs.Failed, Stage: "convert", ErrorStage: "convert", Error: "cannot convert: simulated",
		CreatedAt: now.Add(-time.Hour), StartedAt: now.Add(-time.Hour), FinishedAt: now.Add(-50 * time.Minute)})
	fake.DenyRetry(apierr.New(apierr.AccessDenied, "not authorized to retry job bad1 (polkit action io.hyper2kvm.agent.manage)"))
	c.mustEval(ctx, `sessionStorage.setItem("hyper2kvm-api-token", "web-test-token"); H2K.showJob("bad1"); true`, nil)
	c.waitJS(ctx, "Retry on the failed job", `T.text("job-fields").includes("simulated") && !T.$("job-retry").hidden`, `T.text("job-fields")`)
	c.mustEval(ctx, `T.click("job-retry"); true`, nil)
	c.waitJS(ctx, "Retry gone after the refusal", `T.$("job-retry").hidden && T.text("job-retry-note").includes("not authorized to retry")`,
		`[T.$("job-retry").hidden, T.text("job-retry-note"), T.text("job-action-result")]`)
	c.screenshot(ctx, out, "07-retry-denied.png")
	c.mustEval(ctx, `T.$("job-dialog").close(); true`, nil)

	// 7. A submit the agent refuses after validation said yes: the badge
	// does not stay green, and the problem shows at its field.
	c.mustEval(ctx, `sessionStorage.setItem("hyper2kvm-api-token", "web-test-token"); T.type("f-name", "gone01");
		T.type("f-pipeline-load-source-path", "/missing/gone01.img"); T.choose("f-pipeline-load-source-type", "raw"); true`, nil)
	c.waitJS(ctx, "the manifest to be valid", `T.text("validity") === "Valid manifest"`, `[T.text("validity"), T.text("general-errors")]`)
	c.mustEval(ctx, `T.click("submit"); true`, nil)
	c.waitJS(ctx, "the refused submit", `T.text("submit-result").includes("refused") && T.text("validity") !== "Valid manifest" &&
		T.$("validity").classList.contains("bad") && T.text("e-pipeline-load-source-path").includes("cannot read /missing/gone01.img")`,
		`[T.text("validity"), T.text("submit-result"), T.text("e-pipeline-load-source-path")]`)
	c.screenshot(ctx, out, "08-builder-submit-refused.png")

	// 8. The builder's source from the images the agent can see.
	fake.SetImages([]apitype.Image{
		{Path: "/srv/import/db01/db01-disk1.vmdk", Format: "vmdk", Size: 3 << 30,
			Manifest: `{"version":"1.0","name":"db01-disk1","pipeline":{"load":{"source_type":"vmdk","source_path":"/srv/import/db01/db01-disk1.vmdk"}}}`},
		{Path: "/srv/import/web02.qcow2", Format: "qcow2", Size: 1536 << 20,
			Manifest: `{"version":"1.0","name":"web02","pipeline":{"load":{"source_type":"qcow2","source_path":"/srv/import/web02.qcow2"}}}`},
	}, []string{"/srv/import"})
	c.mustEval(ctx, `T.click("reset"); T.click("image-refresh"); true`, nil)
	c.waitJS(ctx, "the image list", `T.$("image-select").options.length === 3 && T.text("image-select").includes("/srv/import/web02.qcow2 · qcow2 · 1.5 GiB") &&
		T.text("image-note").includes("/srv/import")`, `[T.text("image-select"), T.text("image-note")]`)
	c.mustEval(ctx, `T.choose("image-select", "1"); true`, nil)
	c.waitJS(ctx, "the picked image as the source", `H2KBuilder.doc.pipeline.load.source_path === "/srv/import/web02.qcow2" &&
		H2KBuilder.doc.pipeline.load.source_type === "qcow2" && H2KBuilder.doc.name === "web02" &&
		T.$("f-pipeline-load-source-path").value === "/srv/import/web02.qcow2"`,
		`[JSON.stringify(H2KBuilder.doc), T.text("image-select")]`)
	c.screenshot(ctx, out, "09-builder-image-picked.png")

	// The builder's window, retries and placement (choices from the
	// schema), written into the manifest as the agent reads them.
	c.mustEval(ctx, `T.type("f-schedule-not-before", "2026-12-24T02:00:00Z"); T.type("f-retry-max-attempts", "3");
		T.choose("f-retry-backoff", T.$("f-retry-backoff").options[1].value); T.type("f-placement", "datastore=ds01, kvm02"); true`, nil)
	c.waitJS(ctx, "the window, retry and placement in the manifest", `H2KBuilder.doc.schedule.not_before === "2026-12-24T02:00:00Z" &&
		H2KBuilder.doc.retry.max_attempts === 3 && H2KBuilder.doc.retry.backoff === T.$("f-retry-backoff").options[1].value &&
		T.$("f-retry-backoff").options.length === 3 && JSON.stringify(H2KBuilder.doc.placement) === '["datastore=ds01","kvm02"]'`,
		`JSON.stringify(H2KBuilder.doc)`)
	c.screenshot(ctx, out, "09b-builder-when-and-where.png")
	c.mustEval(ctx, `T.click("reset"); true`, nil)

	// 9. The queue and the fleet's controls, as an administrator signed
	// in: a pending job moved ahead of older ones from its details, the
	// host's queue drained and resumed, the schedules with their next
	// run, and a retried job's attempts with host and error.
	fake.SetSchedules([]apitype.Schedule{{Name: "nightly", File: "/etc/hyper2kvm/schedules.d/nightly.yaml", Cron: "0 2 * * *",
		Template: "linux-default", Next: now.Add(14 * time.Hour)}})
	for i, id := range []string{"q1", "q2", "q3"} {
		fake.Set(jobs.Job{ID: id, Name: "queued-" + id, State: jobs.Pending, Manifest: id + ".json",
			CreatedAt: now.Add(time.Duration(i-3) * time.Minute), StatusText: "queued"})
	}
	pendingOrder := `[...document.querySelectorAll("#list-pending li.job")].map(e => e.dataset.job).join(",")`
	c.mustEval(ctx, `T.type("job-search", ""); H2K.refreshAll(); H2K.selectTab("pending"); true`, nil)
	c.waitJS(ctx, "the queue oldest first", pendingOrder+` === "q1,q2,q3"`, pendingOrder)
	c.mustEval(ctx, `H2K.showJob("q3"); true`, nil)
	c.waitJS(ctx, "the pending job's priority form", `!T.$("job-priority-form").hidden && T.$("job-priority").value === "0"`,
		`[T.$("job-priority-form").hidden, T.$("job-priority").value, T.text("job-fields")]`)
	c.mustEval(ctx, `T.$("job-priority").value = "50"; T.click("job-priority-set"); true`, nil)
	c.waitJS(ctx, "q3 moved to the head of the queue", `T.text("job-action-result") === "Priority set to 50." && T.text("job-fields").includes("50") && `+
		pendingOrder+` === "q3,q1,q2" && document.querySelector('#list-pending [data-job="q3"]').textContent.includes("priority 50")`,
		`[T.text("job-action-result"), `+pendingOrder+`]`)
	if j, err := fake.GetJob(ctx, "q3"); err != nil || j.Priority != 50 {
		t.Errorf("the agent has q3 at priority %d (%v), want 50", j.Priority, err)
	}
	c.screenshot(ctx, out, "13-reprioritized.png")
	c.mustEval(ctx, `T.$("job-dialog").close(); true`, nil)

	c.waitJS(ctx, "the queue controls", `!T.$("queue-buttons").hidden && T.text("queue-state").includes("Queue of kvm07: running") && T.$("queue-resume").disabled`,
		`[T.$("queue-buttons").hidden, T.text("queue-state")]`)
	c.mustEval(ctx, `T.click("queue-drain"); true`, nil)
	c.waitJS(ctx, "the queue draining", `T.text("queue-state").includes("draining: no file is claimed") && T.$("queue-drain").disabled &&
		T.text("fleet-hosts").includes("fake-a [datastore=ds01] · 1 of 3 busy · draining")`,
		`[T.text("queue-state"), T.text("queue-result"), T.text("fleet-hosts")]`)
	if st, _ := fake.GetStatus(ctx); st.Queue != "draining" {
		t.Errorf("after Drain the agent's queue is %q", st.Queue)
	}
	c.mustEval(ctx, `T.click("schedules-refresh"); true`, nil)
	c.waitJS(ctx, "the schedules", `T.text("schedule-list").includes("nightly · 0 2 * * * · template linux-default · next ") &&
		document.querySelector('[data-schedule="nightly"] time[datetime]')`, `T.text("schedule-list")`)
	c.screenshot(ctx, out, "14-queue-draining.png")
	c.mustEval(ctx, `T.click("queue-resume"); true`, nil)
	c.waitJS(ctx, "the queue running again", `T.text("queue-state").includes(": running") && !T.$("queue-drain").disabled`, `T.text("queue-state")`)

	ended := now.Add(-30 * time.Minute)
	fake.Set(jobs.Job{ID: "retried1", Name: "files01", State: jobs.Completed, Host: "kvm07", CreatedAt: now.Add(-time.Hour),
		StartedAt: now.Add(-20 * time.Minute), FinishedAt: now.Add(-10 * time.Minute),
		Attempts: []jobs.Attempt{{Attempt: 1, Host: "kvm01", Stage: "convert", Error: "read files01.vmdk: input/output error", EndedAt: ended, RetryAt: ended.Add(30 * time.Second)}}})
	c.mustEval(ctx, `H2K.showJob("retried1"); true`, nil)
	c.waitJS(ctx, "the attempts", `T.text("job-report").includes("1 failed attempt, retried:") &&
		document.querySelector('[data-attempt="1"]').textContent.includes("attempt 1 on kvm01, in convert") &&
		document.querySelector('[data-attempt="1"]').textContent.includes("read files01.vmdk: input/output error") && T.$("job-priority-form").hidden`,
		`T.text("job-report")`)
	c.screenshot(ctx, out, "15-attempts.png")
	c.mustEval(ctx, `T.$("job-dialog").close(); true`, nil)

	// 10. Signing in: a page without a token says what it cannot show and
	// how to get a token; a wrong token is refused saying so; a user's own
	// token signs them in by name.
	c.mustEval(ctx, `sessionStorage.clear(); true`, nil)
	open()
	c.waitJS(ctx, "the sign-in screen", `!T.$("signin").hidden && T.text("signin").includes("hyperctl token create") &&
		T.text("signin").includes("not their paths, logs or reports") && T.text("token-button") === "Sign in"`,
		`[T.$("signin").hidden, T.text("signin"), T.text("token-button")]`)
	c.screenshot(ctx, out, "10-sign-in.png")
	c.mustEval(ctx, `T.$("signin-token").value = "h2k_nobodys"; T.click("signin-submit"); true`, nil)
	c.waitJS(ctx, "the wrong token refused", `T.text("signin-error").includes("unknown or was revoked") && !T.$("signin").hidden && !sessionStorage.getItem("hyper2kvm-api-token")`,
		`T.text("signin-error")`)
	c.screenshot(ctx, out, "11-sign-in-refused.png")
	c.mustEval(ctx, `T.$("signin-token").value = "h2k_bobs-token"; T.click("signin-submit"); true`, nil)
	c.waitJS(ctx, "signed in as bob", `T.$("signin").hidden && T.text("token-button") === "Signed in as bob" &&
		sessionStorage.getItem("hyper2kvm-api-token") === "h2k_bobs-token"`, `[T.$("signin").hidden, T.text("token-button"), T.text("signin-error")]`)
	c.screenshot(ctx, out, "12-signed-in.png")

	checkPage(ctx, t, c, srv.URL, out)
}

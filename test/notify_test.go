package test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/notify"
	"github.com/hyper2kvm/hyper2kvm/test/box"
)

// notifyYAML has one signed webhook for completed jobs, retried 2 s
// apart (the backoff driven short; 30 s doubling to 1 h by default).
const notifyYAML = workflowYAML + `notify:
  webhooks:
    - url: http://127.0.0.1:8766/hook
      events: [job.completed]
      secret: s3cret
  retry_initial: 2s
  retry_max: 2s
`

// received is one request the receiver logged.
type received struct {
	N         int    `json:"n"`
	Status    int    `json:"status"`
	Delivery  string `json:"delivery"`
	Event     string `json:"event"`
	Signature string `json:"signature"`
	Body      string `json:"body"`
}

// TestNotifyWebhookRetriedAcrossRestart: a real receiver in the box
// answers 503 twice; the agent is restarted after the first attempt; the
// third attempt arrives, signed, and the delivery is made once.
func TestNotifyWebhookRetriedAcrossRestart(t *testing.T) {
	t.Parallel()
	recv := filepath.Join(t.TempDir(), "webhookrecv")
	build := exec.Command("go", "build", "-o", recv, "./test/webhookrecv")
	build.Dir = box.RepoRoot()
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build webhookrecv: %v\n%s", err, out)
	}
	data, err := os.ReadFile(recv)
	if err != nil {
		t.Fatal(err)
	}
	b := workflowBox(t, nil)
	b.WriteFile(t, "/etc/hyper2kvm/agent.yaml", []byte(notifyYAML), 0o644)
	b.WriteFile(t, "/usr/local/bin/webhookrecv", data, 0o755)
	ctx := hyperctlCtx(t, 10*time.Minute)
	b.MustExec(t, "systemd-run", "--unit=webhookrecv", "/usr/local/bin/webhookrecv", "-fail", "2", "-log", "/srv/wf/webhooks.jsonl")
	if err := b.WaitFor(ctx, "the receiver to listen", func() (bool, error) {
		_, _, err := b.Exec(ctx, "sh", "-c", "ss -ltn | grep -q 127.0.0.1:8766")
		return err == nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	reqs := func() []received {
		out, _, _ := b.Exec(ctx, "cat", "/srv/wf/webhooks.jsonl")
		var rs []received
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var r received
			if json.Unmarshal([]byte(l), &r) == nil && r.N > 0 {
				rs = append(rs, r)
			}
		}
		return rs
	}
	b.WriteFile(t, "/srv/wf/hooked.json", []byte(manifestFor("hooked", "/srv/wf/disk.vmdk", "vmdk", "")), 0o644)
	id, state := submitJSON(ctx, t, b, "/srv/wf/hooked.json")
	if state != "completed" {
		t.Fatalf("job %s: %s", id, state)
	}
	// A receiver that is down does not hold the job: it completed
	// before any delivery succeeded.
	if err := b.WaitFor(ctx, "the first attempt", func() (bool, error) { return len(reqs()) >= 1, nil }); err != nil {
		t.Fatal(err)
	}
	b.MustExec(t, "systemctl", "restart", "hyper2kvmd.service")
	if err := b.WaitFor(ctx, "a delivery answered 200", func() (bool, error) {
		for _, r := range reqs() {
			if r.Status == 200 {
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		t.Fatalf("%v; the receiver got %+v\n%s", err, reqs(), b.Journal(ctx, "-u", "hyper2kvmd.service"))
	}
	// Restarted once more after the delivery: nothing is sent again.
	b.MustExec(t, "systemctl", "restart", "hyper2kvmd.service")
	journal := ""
	if err := b.WaitFor(ctx, "the agent's journal to show the attempts", func() (bool, error) {
		journal = b.Journal(ctx, "-u", "hyper2kvmd.service")
		return strings.Contains(journal, "attempt 3: HTTP 200 OK: delivered") && strings.Count(journal, "agent ready") >= 3, nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, journal)
	}
	rs := reqs()
	if len(rs) != 3 || rs[0].Status != 503 || rs[1].Status != 503 || rs[2].Status != 200 {
		t.Fatalf("the receiver got %d requests, want 503, 503, 200: %+v", len(rs), rs)
	}
	for _, r := range rs {
		if r.Delivery != rs[0].Delivery || r.Delivery == "" || r.Event != "job.completed" || r.Body != rs[0].Body {
			t.Errorf("request %d: delivery %q event %q, want the same delivery each time (first %q)", r.N, r.Delivery, r.Event, rs[0].Delivery)
		}
	}
	last := rs[2]
	if !notify.Verify("s3cret", []byte(last.Body), last.Signature) {
		t.Errorf("signature %q does not verify over %s", last.Signature, last.Body)
	}
	var p notify.Payload
	if err := json.Unmarshal([]byte(last.Body), &p); err != nil || p.Job == nil {
		t.Fatalf("body %s: %v", last.Body, err)
	}
	if p.Event != "job.completed" || p.Job.ID != id || p.Job.Name != "hooked" || p.Job.Status != "completed" ||
		len(p.Job.Outputs) == 0 || p.Job.Report == nil || p.DeliveryID != last.Delivery || p.Host == "" {
		t.Errorf("body %s", last.Body)
	}
	// hyperctl notify test: a sample, signed, in the journal.
	out, errOut, code := hyperctlRun(ctx, t, b, "", "notify", "test")
	if code != 0 || !strings.Contains(out, "Queued test delivery d") {
		t.Fatalf("hyperctl notify test: exit %d\n%s%s", code, out, errOut)
	}
	var sample received
	if err := b.WaitFor(ctx, "the test delivery", func() (bool, error) {
		for _, r := range reqs() {
			if r.Event == "test" {
				sample = r
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		t.Fatal(err)
	}
	if sample.Status != 200 || !notify.Verify("s3cret", []byte(sample.Body), sample.Signature) || !strings.Contains(out, sample.Delivery) {
		t.Errorf("test delivery %+v (hyperctl said %s)", sample, out)
	}
	for _, want := range []string{"attempt 1: HTTP 503 Service Unavailable", "attempt 2: HTTP 503 Service Unavailable", "attempt 3: HTTP 200 OK: delivered"} {
		if !strings.Contains(journal, want) {
			t.Errorf("the agent's journal lacks %q", want)
		}
	}
}

package agent

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/config"
	"github.com/hyper2kvm/hyper2kvm/agent/notify"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// sent is one delivery attempt the fake sender saw.
type sent struct {
	unit, url string
	headers   map[string]string
	body      []byte
}

// TestWebhookDeliveries: a job's events reach the agent.yaml webhooks
// that want them (signed when a secret is set) and the manifest's own
// URL; a failed attempt is retried with the same delivery id and body;
// the last job ending sends queue.drained; a manifest naming a host not
// in notify.allowed_hosts is refused, naming the field.
func TestWebhookDeliveries(t *testing.T) {
	var mu sync.Mutex
	var got []sent
	failFirst := map[string]bool{} // delivery id -> failed once already
	e := newEnv(t, func(c *config.Config) {
		c.Notify = config.Notify{
			Webhooks: []config.Webhook{
				{URL: "https://admin.example/all", Secret: "s3cret"},
				{URL: "https://admin.example/failed", Events: []string{notify.JobFailed}},
			},
			AllowedHosts: []string{"ci.example"},
			RetryInitial: config.Duration(time.Millisecond),
			RetryMax:     config.Duration(time.Millisecond),
		}
	})
	e.opts = []Option{WithDeliver(func(ctx context.Context, unit, url string, headers []string, body []byte) (string, error) {
		h := map[string]string{}
		for _, x := range headers {
			n, v, _ := strings.Cut(x, ": ")
			h[n] = v
		}
		mu.Lock()
		defer mu.Unlock()
		got = append(got, sent{unit, url, h, body})
		// The manifest's webhook fails its first attempt of each delivery.
		if url == "https://ci.example/hook" && !failFirst[h[notify.DeliveryHeader]] {
			failFirst[h[notify.DeliveryHeader]] = true
			return "HTTP 503 Service Unavailable", context.DeadlineExceeded
		}
		return "HTTP 200 OK", nil
	})}
	e.start()
	e.drop("web01.json", e.manifest("web01", `"notify":{"url":"https://ci.example/hook","events":["job.completed"]},`))
	e.drop("evil.json", e.manifest("evil", `"notify":{"url":"https://evil.example/hook"},`))
	s := e.waitSettled(queue.Failed, "evil.json")
	if !strings.Contains(s.Error+strings.Join(s.ValidationErrors, " "), "notify.url: host evil.example is not in the agent's notify.allowed_hosts (ci.example)") {
		t.Errorf("evil.json refused with %q %v", s.Error, s.ValidationErrors)
	}
	unit := e.nextStart()
	rep := completed("web01")
	rep.Guest = &report.Guest{OS: &report.OS{Type: "linux", Pretty: "Debian GNU/Linux 12"}}
	rep.Changes = []report.Change{{Fix: "fstab", File: "/etc/fstab"}}
	e.units.finish(t, unit, "success", rep)
	e.waitSettled(queue.Processed, "web01.json")

	// to the URL, by event
	byKey := func() map[string][]sent {
		mu.Lock()
		defer mu.Unlock()
		m := map[string][]sent{}
		for _, s := range got {
			k := s.url + " " + s.headers[notify.EventHeader]
			m[k] = append(m[k], s)
		}
		return m
	}
	e.waitFor("the deliveries", func() bool {
		m := byKey()
		return len(m["https://ci.example/hook job.completed"]) == 2 && len(m["https://admin.example/all queue.drained"]) >= 1 &&
			len(m["https://admin.example/all job.completed"]) == 1
	})
	m := byKey()
	for k := range m {
		switch k {
		case "https://admin.example/all job.started", "https://admin.example/all job.completed", "https://admin.example/all job.failed",
			"https://admin.example/all queue.drained", "https://ci.example/hook job.completed", "https://admin.example/failed job.failed":
		default:
			t.Errorf("unexpected delivery %s", k)
		}
	}
	// evil's refusal is a failed job: the admin's job.failed hook has it.
	retried := m["https://ci.example/hook job.completed"]
	if retried[0].headers[notify.DeliveryHeader] != retried[1].headers[notify.DeliveryHeader] || string(retried[0].body) != string(retried[1].body) || retried[0].unit == retried[1].unit {
		t.Errorf("the retry is not the same delivery in a unit of its own: %+v", retried)
	}
	if _, signed := retried[1].headers[notify.SignatureHeader]; signed {
		t.Error("the manifest's webhook was signed with the agent's secret")
	}
	done := m["https://admin.example/all job.completed"][0]
	if !notify.Verify("s3cret", done.body, done.headers[notify.SignatureHeader]) {
		t.Errorf("signature %q does not verify", done.headers[notify.SignatureHeader])
	}
	var p notify.Payload
	if err := json.Unmarshal(done.body, &p); err != nil || p.Job == nil {
		t.Fatalf("body %s: %v", done.body, err)
	}
	if p.Event != notify.JobCompleted || p.DeliveryID != done.headers[notify.DeliveryHeader] || p.Job.Name != "web01" ||
		p.Job.Status != "completed" || p.Job.Report == nil || p.Job.Report.GuestOS != "Debian GNU/Linux 12" ||
		len(p.Job.Report.Fixes) != 1 || len(p.Job.Outputs) == 0 || p.Host == "" {
		t.Errorf("body %s", done.body)
	}
}

// TestIdleExitArmsTheWakeTimerForDeliveries: an idle agent whose only
// work is a delivery to retry in an hour exits, having armed the wake
// timer for that retry.
func TestIdleExitArmsTheWakeTimerForDeliveries(t *testing.T) {
	t0 := time.Date(2026, 12, 24, 1, 0, 0, 0, time.UTC)
	clock := &testClock{t: t0}
	e := newEnv(t, func(c *config.Config) {
		c.IdleTimeout = config.Duration(time.Second)
		c.Notify.Webhooks = []config.Webhook{{URL: "https://admin.example/down"}}
		c.Notify.RetryInitial = config.Duration(time.Hour)
	})
	armed := make(chan time.Time, 1)
	tried := make(chan string, 8)
	e.opts = []Option{WithClock(clock.now), WithWake(func(_ context.Context, at time.Time) error { armed <- at; return nil }),
		WithDeliver(func(_ context.Context, unit, _ string, _ []string, _ []byte) (string, error) {
			tried <- unit
			return "HTTP 502 Bad Gateway", context.DeadlineExceeded
		})}
	e.start()
	ids, err := e.a.NotifyTest(context.Background())
	if err != nil || len(ids) != 1 {
		t.Fatalf("NotifyTest = %v, %v", ids, err)
	}
	select {
	case <-tried:
	case <-time.After(20 * time.Second):
		t.Fatal("the test delivery was not attempted")
	}
	// River records the failed attempt and its retry time after the
	// delivery returns; moving the clock before that would move the retry.
	for deadline := time.Now().Add(20 * time.Second); !e.a.nextDelivery(context.Background()).After(t0.Add(30 * time.Minute)); {
		if time.Now().After(deadline) {
			t.Fatalf("the failed delivery's retry was not recorded: next delivery %s", e.a.nextDelivery(context.Background()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	clock.add(time.Minute) // idle for longer than idle_timeout
	select {
	case at := <-armed:
		if want := t0.Add(time.Hour); at.Before(want.Add(-time.Second)) || at.After(want.Add(time.Second)) {
			t.Errorf("wake timer armed for %s, want %s (the retry)", at, want)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the idle agent did not arm the wake timer for the delivery (or did not exit)")
	}
	select {
	case err := <-e.done:
		e.cancel = nil
		if err != nil {
			t.Errorf("idle exit: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not exit idle")
	}
}

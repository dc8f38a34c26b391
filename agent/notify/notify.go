// Package notify is what a webhook delivery says and how it is signed:
// the events the agent announces, the JSON body, the HMAC signature, the
// check of a manifest's URL against the admin's allowed hosts, and the
// backoff between attempts. The agent queues each delivery as a River job
// and sends it (agent/webhooks.go); docs/WORKFLOW.md describes it.
package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// The events a webhook may ask for.
const (
	JobStarted   = "job.started"
	JobCompleted = "job.completed"
	JobFailed    = "job.failed"
	JobCancelled = "job.cancelled"
	QueueDrained = "queue.drained"
	// Test is what `hyperctl notify test` sends; every webhook gets it.
	Test = "test"
)

// Events are the events a webhook may name, in order.
func Events() []string {
	return []string{JobStarted, JobCompleted, JobFailed, JobCancelled, QueueDrained}
}

// Headers of a delivery.
const (
	SignatureHeader = "X-Hyper2kvm-Signature"
	DeliveryHeader  = "X-Hyper2kvm-Delivery"
	EventHeader     = "X-Hyper2kvm-Event"
)

// GiveUpAfter is how long a delivery is retried before it is given up.
const GiveUpAfter = 24 * time.Hour

// Payload is the JSON body of a delivery.
type Payload struct {
	Event      string    `json:"event"`
	DeliveryID string    `json:"delivery_id"`
	At         time.Time `json:"at"`
	Host       string    `json:"host"`
	Job        *Job      `json:"job,omitempty"` // none for queue.drained
}

// Job is what a delivery says about its job.
type Job struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	Status     string   `json:"status"`
	Stage      string   `json:"stage,omitempty"`
	Error      string   `json:"error,omitempty"`
	ErrorStage string   `json:"error_stage,omitempty"`
	Attempt    int      `json:"attempt,omitempty"`
	Outputs    []string `json:"outputs,omitempty"`
	ReportPath string   `json:"report_path,omitempty"`
	// Durations are seconds: the whole run and each stage.
	DurationSeconds float64            `json:"duration_seconds,omitempty"`
	StageSeconds    map[string]float64 `json:"stage_seconds,omitempty"`
	Report          *Summary           `json:"report,omitempty"`
}

// Summary is the report's summary: what was found and done.
type Summary struct {
	GuestOS  string   `json:"guest_os,omitempty"`
	Fixes    []string `json:"fixes,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// Sign is the value of SignatureHeader for body under secret:
// "sha256=" and the hex HMAC-SHA256 of the body.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify reports whether sig is body's signature under secret (what a
// receiver does; the tests use it).
func Verify(secret string, body []byte, sig string) bool {
	return hmac.Equal([]byte(sig), []byte(Sign(secret, body)))
}

// CheckURL checks a webhook URL: http or https with a host. allowed, when
// not nil, lists the hosts a submitter's URL may name (the admin's
// notify.allowed_hosts); an entry "*.example.com" allows its subdomains.
func CheckURL(raw string, allowed []string, checkHost bool) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http:// or https:// URL", raw)
	}
	if u.User != nil {
		return fmt.Errorf("%q: credentials in the URL would be kept in the job store; use a secret instead", u.Redacted())
	}
	if !checkHost {
		return nil
	}
	host := strings.ToLower(u.Hostname())
	for _, a := range allowed {
		a = strings.ToLower(a)
		if a == host || strings.HasPrefix(a, "*.") && strings.HasSuffix(host, a[1:]) {
			return nil
		}
	}
	if len(allowed) == 0 {
		return fmt.Errorf("host %s: the agent allows no webhook hosts in manifests; ask an admin to add it to notify.allowed_hosts in agent.yaml", host)
	}
	return fmt.Errorf("host %s is not in the agent's notify.allowed_hosts (%s); ask an admin to add it", host, strings.Join(allowed, ", "))
}

// CheckEvents checks a list of event names; it returns the first unknown.
func CheckEvents(events []string) error {
	for _, e := range events {
		if !slices.Contains(Events(), e) {
			return fmt.Errorf("unknown event %q: want one of %s", e, strings.Join(Events(), ", "))
		}
	}
	return nil
}

// Wants reports whether a webhook listening to events gets ev; no events
// means all of them.
func Wants(events []string, ev string) bool {
	return ev == Test || len(events) == 0 || slices.Contains(events, ev)
}

// Backoff is the wait after the attempt-th failed attempt (1-based):
// initial doubled each time, at most max.
func Backoff(attempt int, initial, max time.Duration) time.Duration {
	d := initial
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

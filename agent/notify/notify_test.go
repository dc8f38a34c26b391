package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

func TestSign(t *testing.T) {
	body := []byte(`{"event":"job.completed"}`)
	// The value a receiver computes by the documented rule: the hex
	// HMAC-SHA256 of the raw body under the secret, after "sha256=".
	m := hmac.New(sha256.New, []byte("s3cret"))
	m.Write(body)
	want := "sha256=" + hex.EncodeToString(m.Sum(nil))
	if got := Sign("s3cret", body); got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
	tests := []struct {
		name   string
		secret string
		body   string
		sig    string
		ok     bool
	}{
		{"same", "s3cret", string(body), want, true},
		{"other secret", "other", string(body), want, false},
		{"body changed", "s3cret", `{"event":"job.failed"}`, want, false},
		{"no prefix", "s3cret", string(body), strings.TrimPrefix(want, "sha256="), false},
		{"empty", "s3cret", string(body), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Verify(tt.secret, []byte(tt.body), tt.sig); got != tt.ok {
				t.Errorf("Verify = %v, want %v", got, tt.ok)
			}
		})
	}
}

func TestCheckURL(t *testing.T) {
	allowed := []string{"hooks.example.com", "*.corp.example"}
	tests := []struct {
		url       string
		checkHost bool
		allowed   []string
		want      string // "" for no error, else a part of the message
	}{
		{"https://hooks.example.com/x", true, allowed, ""},
		{"http://HOOKS.example.com:8080/x", true, allowed, ""},
		{"https://ci.corp.example/hook", true, allowed, ""},
		{"https://corp.example.evil/hook", true, allowed, "not in the agent's notify.allowed_hosts"},
		{"https://evil.example/hook", true, allowed, "host evil.example is not in the agent's notify.allowed_hosts (hooks.example.com, *.corp.example)"},
		{"https://hooks.example.com.evil.example/", true, allowed, "not in the agent's notify.allowed_hosts"},
		{"https://hooks.example.com/x", true, nil, "allows no webhook hosts in manifests"},
		{"https://anything.example/x", false, nil, ""},
		{"ftp://hooks.example.com/x", true, allowed, "not an http:// or https:// URL"},
		{"hooks.example.com/x", false, nil, "not an http:// or https:// URL"},
		{"https://user:pw@hooks.example.com/x", true, allowed, "credentials in the URL"},
		{"http://[::1", false, nil, "not an http:// or https:// URL"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			err := CheckURL(tt.url, tt.allowed, tt.checkHost)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("error %v, want none", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error %v, want one saying %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "pw") {
				t.Errorf("error %v shows the password", err)
			}
		})
	}
}

func TestCheckEventsAndWants(t *testing.T) {
	if err := CheckEvents([]string{JobStarted, QueueDrained}); err != nil {
		t.Errorf("CheckEvents: %v", err)
	}
	if err := CheckEvents([]string{"job.done"}); err == nil || !strings.Contains(err.Error(), `unknown event "job.done": want one of job.started`) {
		t.Errorf("CheckEvents(job.done) = %v", err)
	}
	tests := []struct {
		events []string
		ev     string
		want   bool
	}{
		{nil, JobFailed, true},
		{[]string{JobCompleted}, JobCompleted, true},
		{[]string{JobCompleted}, JobFailed, false},
		{[]string{JobCompleted}, Test, true},
	}
	for _, tt := range tests {
		if got := Wants(tt.events, tt.ev); got != tt.want {
			t.Errorf("Wants(%v, %s) = %v, want %v", tt.events, tt.ev, got, tt.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		attempt int
		want    time.Duration
	}{{1, 30 * time.Second}, {2, time.Minute}, {3, 2 * time.Minute}, {7, 32 * time.Minute}, {8, time.Hour}, {50, time.Hour}}
	for _, tt := range tests {
		if got := Backoff(tt.attempt, 30*time.Second, time.Hour); got != tt.want {
			t.Errorf("Backoff(%d) = %s, want %s", tt.attempt, got, tt.want)
		}
	}
	// 24 h of retries at the defaults is about 30 attempts.
	var total time.Duration
	n := 0
	for n = 1; total < GiveUpAfter; n++ {
		total += Backoff(n, 30*time.Second, time.Hour)
	}
	if n < 25 || n > 35 {
		t.Errorf("%d attempts in 24 h", n)
	}
}

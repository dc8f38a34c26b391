package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
)

func TestWriteHosts(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	writeHosts(&b, []apitype.Host{
		{Name: "kvm01", Labels: map[string]string{"site": "x", "datastore": "ds01"}, Busy: 2, MaxWorkers: 3, Queue: "draining", HeartbeatAt: now.Add(-5 * time.Second), Alive: true},
		{Name: "kvm02", Busy: 0, MaxWorkers: 3, Queue: "running", HeartbeatAt: now.Add(-3 * time.Minute)},
	}, now)
	out := b.String()
	for _, want := range []string{"HOST", "kvm01", "datastore=ds01,site=x", "2 of 3 busy", "draining", "5s ago", "kvm02", "3m00s ago (lost: its jobs run elsewhere)"} {
		if !strings.Contains(out, want) {
			t.Errorf("hosts table lacks %q:\n%s", want, out)
		}
	}
}

// TestSubmitPlacement: --placement reaches the agent as the manifest's
// placement; a bad term is a usage error that bothers no agent.
func TestSubmitPlacement(t *testing.T) {
	m := writeFile(t, t.TempDir(), "web01.yaml", goodYAML)
	f := &fakeClient{}
	r := runCLI(t, f, "submit", "--placement", "datastore=ds01", "--placement", "kvm02", m)
	if r.code != 0 || len(f.submitted) != 1 {
		t.Fatalf("exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	var got struct {
		Placement []string `json:"placement"`
	}
	if err := json.Unmarshal(f.submitted[0], &got); err != nil || strings.Join(got.Placement, " ") != "datastore=ds01 kvm02" {
		t.Errorf("agent got %s (%v)", f.submitted[0], err)
	}
	f = &fakeClient{}
	if r := runCLI(t, f, "submit", "--placement", "datastore=", m); r.code != 2 || len(f.submitted) != 0 || !strings.Contains(r.stderr, "placement[0]") {
		t.Errorf("bad --placement: exit %d, submitted %d: %s", r.code, len(f.submitted), r.stderr)
	}
}

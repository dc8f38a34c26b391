package main

import (
	"bytes"
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

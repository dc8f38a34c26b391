package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
)

// GarbageCollect plays the agent's housekeeping: one old report and an
// empty day; a real run fails on the day.
func (f *fakeClient) GarbageCollect(ctx context.Context, dryRun, interactive bool) ([]apitype.GCItem, error) {
	if f.err != nil {
		return nil, f.err
	}
	items := []apitype.GCItem{
		{Path: "/q/processed/2020-01-01/a.json.report.json", Kind: "settled-file", Reason: "settled on 2020-01-01, older than retain.processed 30d", Size: 2048, Deleted: !dryRun},
		{Path: "/q/processed/2020-01-01", Kind: "empty-day", Reason: "nothing left in it", Size: 2048},
	}
	if !dryRun {
		items[1].Error = "directory not empty"
	}
	return items, nil
}

func TestGC(t *testing.T) {
	r := runCLI(t, &fakeClient{}, "gc", "--dry-run")
	if r.code != exitOK || !strings.Contains(r.stdout, "Would remove 2 item(s), 2.0 KiB.") || !strings.Contains(r.stdout, "older than retain.processed 30d") {
		t.Fatalf("gc --dry-run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, &fakeClient{}, "gc")
	if r.code != exitFailed || !strings.Contains(r.stdout, "cannot remove: directory not empty") || !strings.Contains(r.stderr, "could not remove 1 item(s)") {
		t.Fatalf("gc: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, &fakeClient{}, "-o", "json", "gc", "-n")
	var res gcResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || !res.DryRun || len(res.Items) != 2 || res.Bytes != 2048 {
		t.Fatalf("gc json: %v %s", err, r.stdout)
	}
}

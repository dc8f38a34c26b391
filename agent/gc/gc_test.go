package gc_test

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/gc"
)

func put(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// tree is a queue and an output directory at 2026-03-31: an old day (40
// days), a recent day (2 days) with a completed and a failed dropped
// image, and outputs of both days.
func tree(t *testing.T) gc.Dirs {
	d := gc.Dirs{Workflow: t.TempDir(), Output: t.TempDir()}
	w := d.Workflow
	put(t, w+"/processed/2026-02-19/old.json", "{}")
	put(t, w+"/processed/2026-02-19/old.json.report.json", `{"status":"completed"}`)
	put(t, w+"/failed/2026-02-19/bad.json", "{}")
	put(t, w+"/failed/2026-02-19/bad.json.error.json", `{"status":"failed"}`)
	put(t, w+"/processed/2026-03-29/web01.vmdk", "image")
	put(t, w+"/processed/2026-03-29/web01.vmdk.report.json", `{"status":"completed"}`)
	put(t, w+"/processed/2026-03-29/web02.json", "{}")
	put(t, w+"/processed/2026-03-29/web02.json.report.json", `{"status":"completed"}`)
	put(t, w+"/failed/2026-03-29/db01.vhdx", "image")
	put(t, w+"/failed/2026-03-29/db01.vhdx.error.json", `{"status":"failed"}`)
	put(t, w+"/processed/notaday/x", "")
	put(t, d.Output+"/2026-02-19/j1/old.qcow2", "disk")
	put(t, d.Output+"/2026-03-29/j2/new.qcow2", "disk")
	return d
}

func paths(items []apitype.GCItem, root gc.Dirs) []string {
	var out []string
	for _, it := range items {
		p := strings.NewReplacer(root.Workflow, "W", root.Output, "O").Replace(it.Path)
		out = append(out, it.Kind+" "+p)
	}
	sort.Strings(out)
	return out
}

func TestPlan(t *testing.T) {
	now := time.Date(2026, 3, 31, 12, 0, 0, 0, time.Local)
	tests := []struct {
		name   string
		retain gc.Retain
		want   []string
	}{
		{"defaults: 30 days, images kept, outputs never", gc.Retain{}, []string{
			"empty-day W/failed/2026-02-19", "empty-day W/processed/2026-02-19",
			"settled-file W/failed/2026-02-19/bad.json", "settled-file W/failed/2026-02-19/bad.json.error.json",
			"settled-file W/processed/2026-02-19/old.json", "settled-file W/processed/2026-02-19/old.json.report.json"}},
		{"never", gc.Retain{Processed: "never"}, nil},
		{"images deleted on success only", gc.Retain{Processed: "never", DroppedImages: "delete-on-success"}, []string{
			"dropped-image W/processed/2026-03-29/web01.vmdk"}},
		{"outputs by age", gc.Retain{Processed: "never", Outputs: "30d"}, []string{
			"empty-day O/2026-02-19", "output-dir O/2026-02-19/j1"}},
		{"one day keeps nothing older", gc.Retain{Processed: "1d"}, []string{
			"empty-day W/failed/2026-02-19", "empty-day W/failed/2026-03-29", "empty-day W/processed/2026-02-19", "empty-day W/processed/2026-03-29",
			"settled-file W/failed/2026-02-19/bad.json", "settled-file W/failed/2026-02-19/bad.json.error.json",
			"settled-file W/failed/2026-03-29/db01.vhdx", "settled-file W/failed/2026-03-29/db01.vhdx.error.json",
			"settled-file W/processed/2026-02-19/old.json", "settled-file W/processed/2026-02-19/old.json.report.json",
			"settled-file W/processed/2026-03-29/web01.vmdk", "settled-file W/processed/2026-03-29/web01.vmdk.report.json",
			"settled-file W/processed/2026-03-29/web02.json", "settled-file W/processed/2026-03-29/web02.json.report.json"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tree(t)
			p, err := tc.retain.Policy()
			if err != nil {
				t.Fatal(err)
			}
			items, err := gc.Plan(d, p, now)
			if err != nil {
				t.Fatal(err)
			}
			if got := paths(items, d); strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			// A plan is only a list: nothing is gone.
			if _, err := os.Stat(d.Workflow + "/processed/2026-02-19/old.json"); err != nil {
				t.Errorf("Plan removed a file: %v", err)
			}
			var logged []apitype.GCItem
			done := gc.Remove(items, func(it apitype.GCItem) { logged = append(logged, it) })
			for _, it := range done {
				if !it.Deleted || it.Error != "" {
					t.Errorf("not removed: %+v", it)
				}
				if _, err := os.Lstat(it.Path); err == nil {
					t.Errorf("%s still there", it.Path)
				}
			}
			if len(logged) != len(items) {
				t.Errorf("logged %d of %d deletions", len(logged), len(items))
			}
			if again, _ := gc.Plan(d, p, now); len(again) != 0 {
				t.Errorf("second plan: %v", paths(again, d))
			}
			// The output of the recent day is never touched by these rules.
			if _, err := os.Stat(d.Output + "/2026-03-29/j2/new.qcow2"); err != nil {
				t.Errorf("a recent output went: %v", err)
			}
		})
	}
}

func TestPolicy(t *testing.T) {
	tests := []struct {
		r    gc.Retain
		err  string
		proc time.Duration
	}{
		{gc.Retain{}, "", 30 * 24 * time.Hour},
		{gc.Retain{Processed: "2w"}, "", 14 * 24 * time.Hour},
		{gc.Retain{Processed: "36h"}, "", 36 * time.Hour},
		{gc.Retain{Processed: "10m"}, "retain.processed", 0},
		{gc.Retain{Processed: "forever"}, "retain.processed", 0},
		{gc.Retain{DroppedImages: "delete"}, "retain.dropped_images", 0},
		{gc.Retain{Outputs: "0d"}, "retain.outputs", 0},
	}
	for _, tc := range tests {
		p, err := tc.r.Policy()
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%+v: %v, want %q", tc.r, err, tc.err)
			}
			continue
		}
		if err != nil || p.Processed != tc.proc || p.Outputs != 0 {
			t.Errorf("%+v: %+v %v", tc.r, p, err)
		}
	}
}

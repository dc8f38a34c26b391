package engine_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/engine"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

func yes() *bool { b := true; return &b }

// TestRunNoOperatingSystem: a blank disk with FIX on fails with what to do
// (it used to complete with a warning only the report held); with FIX off
// it converts as a data disk; with every fix off FIX does not run at all.
func TestRunNoOperatingSystem(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	raw := filepath.Join(dir, "blank.raw")
	if err := os.WriteFile(raw, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(raw, 16<<20); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		fix       *manifest.Fix
		status    string
		fixStatus string
		want      string // in the error or the fix stage's reason
	}{
		{"fix on", &manifest.Fix{Enabled: yes()}, "failed", "failed",
			"inspection found no operating system; set pipeline.fix.enabled=false to convert a data disk as it is"},
		{"fix off", &manifest.Fix{Enabled: no()}, "completed", "skipped", "disabled by pipeline.fix.enabled"},
		{"every fix off", &manifest.Fix{Enabled: yes(), Fstab: &manifest.FstabFix{Enabled: no()}, Grub: &manifest.Toggle{Enabled: no()},
			Initramfs: &manifest.InitramfsFix{Enabled: no()}, Network: &manifest.NetworkFix{Enabled: no()}},
			"completed", "skipped", "nothing to do: every fix is disabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &manifest.Manifest{Version: "1.0", Name: "blank", Pipeline: &manifest.Pipeline{
				Load: manifest.Load{SourceType: "raw", SourcePath: raw},
				Fix:  tc.fix,
			}}
			m.SetDefaults()
			rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: filepath.Join(t.TempDir(), "out"), Backend: "native"})
			if rep == nil {
				t.Fatalf("no report: %v", err)
			}
			if string(rep.Status) != tc.status {
				t.Fatalf("status %s (%v), want %s", rep.Status, err, tc.status)
			}
			var fix, validate string
			for _, s := range rep.Stages {
				switch s.Name {
				case "fix":
					fix = s.Status + " " + s.Error + " " + s.Reason
				case "validate":
					validate = s.Status
				}
			}
			msg := ""
			if rep.Error != nil {
				msg = rep.Error.Message
			}
			if !strings.HasPrefix(fix, tc.fixStatus) || !strings.Contains(fix+" "+msg, tc.want) {
				t.Errorf("fix stage %q, error %q; want %s with %q", fix, msg, tc.fixStatus, tc.want)
			}
			if tc.status == "completed" && validate != "ok" {
				t.Errorf("validate %s", validate)
			}
		})
	}
}

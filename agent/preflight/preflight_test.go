package preflight_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/preflight"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

func status(r preflight.Result, name string) report.Check {
	for _, c := range r {
		if c.Name == name {
			return c
		}
	}
	return report.Check{}
}

func TestSource(t *testing.T) {
	dir := t.TempDir()
	// 8 MiB written: 8 MiB allocated.
	raw := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(raw, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// Raw bytes under a .vhd name: a VHD whose footer is not written yet.
	vhd := filepath.Join(dir, "cut.vhd")
	if err := os.WriteFile(vhd, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	// A descriptor whose extent lies outside the source's directory: that
	// reference is LOAD's to judge (allow_references), not pre-flight's.
	outside := filepath.Join(dir, "outside.vmdk")
	desc := "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\nRW 16384 FLAT \"/root/host-secret.raw\" 0\n"
	if err := os.WriteFile(outside, []byte(desc), 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	pipe := func(typ, src string, compress bool) *manifest.Pipeline {
		return &manifest.Pipeline{Load: manifest.Load{SourceType: typ, SourcePath: src}, Convert: &manifest.Convert{Compress: compress}}
	}
	tests := []struct {
		name   string
		p      *manifest.Pipeline
		now    time.Time
		avail  uint64
		check  string
		status string
		text   string // in the message or the fix
	}{
		{"readable", pipe("raw", raw, false), later, 1 << 40, preflight.SourceReadable, preflight.OK, "readable"},
		{"missing", pipe("raw", filepath.Join(dir, "gone.raw"), false), later, 1 << 40, preflight.SourceReadable, preflight.Blocker, "check pipeline.load.source_path"},
		{"extent outside left to LOAD", pipe("vmdk", outside, false), later, 1 << 40, preflight.SourceReadable, preflight.OK, "1 file(s)"},
		{"missing skips the rest", pipe("raw", filepath.Join(dir, "gone.raw"), false), later, 1 << 40, preflight.OutputSpace, preflight.Skipped, "cannot be read"},
		{"whole", pipe("raw", raw, false), later, 1 << 40, preflight.SourceComplete, preflight.OK, "whole"},
		{"cut", pipe("vhd", vhd, false), later, 1 << 40, preflight.SourceComplete, preflight.Blocker, "vhd footer"},
		{"just written", pipe("raw", raw, false), time.Now(), 1 << 40, preflight.SourceSettled, preflight.Warning, "may still be"},
		{"settled", pipe("raw", raw, false), later, 1 << 40, preflight.SourceSettled, preflight.OK, "no file changed"},
		{"room", pipe("raw", raw, false), later, 1 << 40, preflight.OutputSpace, preflight.OK, "8.0 MiB"},
		{"no room", pipe("raw", raw, false), later, 8 << 20, preflight.OutputSpace, preflight.Blocker, "pipeline.convert.output_dir"},
		{"compression fits", pipe("raw", raw, true), (later), 6 << 20, preflight.OutputSpace, preflight.Warning, "compressed"},
		{"little to spare", pipe("raw", raw, false), later, 19 << 19, preflight.OutputSpace, preflight.Warning, "10%"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var asked string
			r := preflight.Source(context.Background(), tc.p, preflight.Options{
				OutputDir: filepath.Join(dir, "out", "2026-01-01", "job"),
				Settled:   true,
				Now:       func() time.Time { return tc.now },
				Avail:     func(p string) (uint64, error) { asked = p; return tc.avail, nil },
			})
			c := status(r, tc.check)
			if c.Status != tc.status || !strings.Contains(c.Message+c.Fix, tc.text) {
				t.Fatalf("%s = %+v, want %s with %q\nall: %+v", tc.check, c, tc.status, tc.text, r)
			}
			if r.Blocked() != (r.Err() != nil) {
				t.Errorf("Blocked %v but Err %v", r.Blocked(), r.Err())
			}
			if tc.check == preflight.OutputSpace && tc.status != preflight.Skipped && asked != dir {
				t.Errorf("free space asked of %s, want the nearest existing directory %s", asked, dir)
			}
		})
	}
}

func TestBlockersReadAsOneError(t *testing.T) {
	r := preflight.Result{
		{Name: "a", Status: preflight.OK},
		{Name: "output-space", Status: preflight.Blocker, Message: "1 GiB free", Fix: "free 2 GiB"},
		{Name: "source-settled", Status: preflight.Warning, Message: "recent", Fix: "wait"},
	}
	if err := r.Err(); err == nil || err.Error() != "pre-flight check failed: output-space: 1 GiB free; fix: free 2 GiB" {
		t.Errorf("Err() = %v", err)
	}
	if w := r.Warnings(); len(w) != 1 || w[0] != "pre-flight source-settled: recent (wait)" {
		t.Errorf("Warnings() = %q", w)
	}
}

func TestGuest(t *testing.T) {
	off := false
	fixOff := &manifest.Pipeline{Fix: &manifest.Fix{Enabled: &off}}
	fixOn := &manifest.Pipeline{}
	luks := report.Partition{Number: 2, FSType: "crypto_LUKS", Device: "/dev/sda2"}
	tests := []struct {
		name   string
		g      *report.Guest
		p      *manifest.Pipeline
		check  string
		status string
	}{
		{"clean", &report.Guest{Root: "/dev/sda1", Partitions: []report.Partition{{Number: 1, FSType: "ext4"}}}, fixOn, preflight.GuestEncrypted, preflight.OK},
		{"encrypted root", &report.Guest{Partitions: []report.Partition{luks}}, fixOn, preflight.GuestEncrypted, preflight.Blocker},
		{"encrypted root, no fixes", &report.Guest{Partitions: []report.Partition{luks}}, fixOff, preflight.GuestEncrypted, preflight.Warning},
		{"encrypted data", &report.Guest{Root: "/dev/sda1", Partitions: []report.Partition{{Number: 1, FSType: "ext4"}, luks}}, fixOn, preflight.GuestEncrypted, preflight.Warning},
		{"dirty", &report.Guest{Root: "/dev/sda1", Partitions: []report.Partition{{Number: 1, FSType: "ext4", Dirty: true, MountPoint: "/"}}}, fixOn, preflight.GuestDirty, preflight.Warning},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := preflight.Guest(tc.g, tc.p)
			if c := status(r, tc.check); c.Status != tc.status {
				t.Fatalf("%s = %+v, want %s", tc.check, c, tc.status)
			}
		})
	}
	space := func(boot, root int64) *report.Guest {
		return &report.Guest{Root: "/dev/sda2", Partitions: []report.Partition{
			{Number: 1, FSType: "ext4", MountPoint: "/boot", FreeBytes: &boot},
			{Number: 2, FSType: "xfs", MountPoint: "/", FreeBytes: &root}}}
	}
	noRegen := &manifest.Pipeline{Fix: &manifest.Fix{Initramfs: &manifest.InitramfsFix{Regenerate: &off}}}
	for _, tc := range []struct {
		name   string
		g      *report.Guest
		p      *manifest.Pipeline
		status string
	}{
		{"room", space(500<<20, 5<<30), fixOn, preflight.OK},
		{"small /boot", space(50<<20, 5<<30), fixOn, preflight.Warning},
		{"small /", space(500<<20, 100<<20), fixOn, preflight.Warning},
		{"full /boot", space(1<<20, 5<<30), fixOn, preflight.Blocker},
		{"full /", space(500<<20, 1<<20), fixOn, preflight.Blocker},
		{"full but no rebuild", space(0, 0), noRegen, preflight.Skipped},
		{"full but no fixes", space(0, 0), fixOff, preflight.Skipped},
		{"unknown", &report.Guest{Root: "/dev/sda1", Partitions: []report.Partition{{Number: 1, FSType: "btrfs", MountPoint: "/"}}}, fixOn, preflight.Skipped},
	} {
		c := status(preflight.Guest(tc.g, tc.p), preflight.GuestSpace)
		if c.Status != tc.status || c.Status == preflight.Blocker && c.Fix == "" {
			t.Errorf("%s: %+v, want %s", tc.name, c, tc.status)
		}
	}
	if preflight.Guest(nil, fixOn) != nil {
		t.Error("checks without a guest")
	}
}

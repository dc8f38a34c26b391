package engine_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/engine"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// TestBoundaries: the caller is called at every stage boundary in order,
// and an error there fails the job at that stage with nothing written
// after it.
func TestBoundaries(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	raw := fixture.LinuxDisk(t, dir, fixture.Options{SizeMB: 16})
	tests := []struct {
		failAt    string
		wantStage string
		wantDisk  bool
	}{
		{"", "", true},
		{"pre_load", "load", false},
		{"pre_fix", "fix", false},
		{"post_convert", "convert", true},
		{"post_validate", "validate", true},
	}
	for i, tc := range tests {
		t.Run("fail at "+tc.failAt, func(t *testing.T) {
			out := filepath.Join(dir, "out", string(rune('a'+i)))
			var seen []string
			rep, err := engine.Run(context.Background(), vmManifest("web01", "raw", raw), engine.Options{JobID: "j1", OutputDir: out,
				Boundary: func(ctx context.Context, point string, rep *report.Report) error {
					seen = append(seen, point)
					if point == tc.failAt {
						return errors.New("hook said no")
					}
					return nil
				}})
			if tc.failAt == "" {
				if err != nil || len(seen) != len(engine.Points) {
					t.Fatalf("err %v, points %v", err, seen)
				}
				for i, p := range engine.Points {
					if seen[i] != p[0] {
						t.Errorf("points %v, want the order of engine.Points", seen)
					}
				}
			} else {
				if err == nil || rep.Status != report.Failed || rep.Error == nil || rep.Error.Stage != tc.wantStage || !strings.Contains(rep.Error.Message, "hook said no") {
					t.Fatalf("err %v, report %+v %+v", err, rep.Status, rep.Error)
				}
				if seen[len(seen)-1] != tc.failAt {
					t.Errorf("called at %v after failing at %s", seen, tc.failAt)
				}
			}
			_, statErr := os.Stat(filepath.Join(out, "web01.qcow2"))
			if (statErr == nil) != tc.wantDisk {
				t.Errorf("output disk exists: %v, want %v", statErr == nil, tc.wantDisk)
			}
		})
	}
}

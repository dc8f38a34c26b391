package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name, yaml string
		code       int
		want       string
	}{
		{"good", "max_concurrent_jobs: 2\n", 0, "ok"},
		{"typo", "max_concurent_jobs: 2\n", 1, `line 1: unknown key "max_concurent_jobs" (did you mean "max_concurrent_jobs"?)`},
		{"bad value", "max_concurrent_jobs: 0\n", 1, "max_concurrent_jobs: must be between 1 and 256"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, c.name+".yaml")
			os.WriteFile(p, []byte(c.yaml), 0o644)
			cmd := newCheckConfigCmd()
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			cmd.SetArgs([]string{p})
			err := cmd.Execute()
			if got := exitCode(err); err != nil && got != c.code || err == nil && c.code != 0 {
				t.Fatalf("exit %d (%v), want %d", got, err, c.code)
			}
			text := out.String()
			if err != nil {
				text = err.Error()
			}
			if !strings.Contains(text, c.want) || (err != nil && !strings.Contains(text, p)) {
				t.Errorf("got %q, want the file and %q", text, c.want)
			}
		})
	}
}

// TestCheckConfigSchedules: check-config reads schedules.d too; each bad
// file is named with its field, and the good config alone does not make
// the check pass.
func TestCheckConfigSchedules(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "agent.yaml")
	os.WriteFile(conf, []byte("max_concurrent_jobs: 2\n"), 0o644)
	sd := filepath.Join(dir, "schedules.d")
	os.Mkdir(sd, 0o755)
	os.WriteFile(filepath.Join(sd, "nightly.yaml"), []byte("cron: \"0 2 * * *\"\nmanifest: /srv/nightly.json\n"), 0o644)
	os.WriteFile(filepath.Join(sd, "bad.yaml"), []byte("cron: \"0 25 * * *\"\nmanifest: /srv/x.json\n"), 0o644)
	os.WriteFile(filepath.Join(sd, "rel.yaml"), []byte("cron: \"@daily\"\nmanifest: x.json\n"), 0o644)
	cmd := newCheckConfigCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs([]string{"--schedules-dir", sd, conf})
	err := cmd.Execute()
	if exitCode(err) != 1 {
		t.Fatalf("exit %d (%v), want 1", exitCode(err), err)
	}
	for _, want := range []string{filepath.Join(sd, "bad.yaml") + ": cron:", filepath.Join(sd, "rel.yaml") + `: manifest: "x.json" must be an absolute path`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("check-config says %q, want %q", err, want)
		}
	}
	os.Remove(filepath.Join(sd, "bad.yaml"))
	os.Remove(filepath.Join(sd, "rel.yaml"))
	cmd = newCheckConfigCmd()
	out.Reset()
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--schedules-dir", sd, conf})
	if err := cmd.Execute(); err != nil || !strings.Contains(out.String(), "(1 schedules)") {
		t.Errorf("good files: %v %q", err, out.String())
	}
}

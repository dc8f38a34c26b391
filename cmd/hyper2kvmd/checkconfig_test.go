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

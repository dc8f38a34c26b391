package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPreflight(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "web01.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	os.Chtimes(img, old, old)
	cut := filepath.Join(dir, "cut.vhd")
	os.WriteFile(cut, make([]byte, 4096), 0o644)
	os.Chtimes(cut, old, old)
	m := func(name, src, typ string) string {
		return writeFile(t, dir, name+".yaml", fmt.Sprintf("version: \"1.0\"\nname: %s\npipeline:\n  load: {source_type: %s, source_path: %s}\n", name, typ, src))
	}
	tests := []struct {
		name   string
		file   string
		code   int
		output []string
	}{
		{"fits", m("web01", img, "raw"), exitOK, []string{"source-readable", "output-space", "ok: nothing blocks"}},
		{"cut", m("cut", cut, "vhd"), exitFailed, []string{"source-complete", "blocker", "vhd footer", "wait until the copy", "would fail before writing anything"}},
		{"missing", m("gone", filepath.Join(dir, "gone.img"), "raw"), exitFailed, []string{"source-readable", "check pipeline.load.source_path"}},
		{"invalid manifest", writeFile(t, dir, "bad.yaml", "version: \"1.0\"\nname: x\npipeline: {load: {source_type: raw}}\n"), exitFailed, []string{"pipeline.load.source_path"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, nil, "preflight", "--output-dir", dir, tc.file)
			for _, o := range tc.output {
				if !strings.Contains(r.stdout, o) {
					t.Errorf("output lacks %q", o)
				}
			}
			if r.code != tc.code || t.Failed() {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tc.code, r.stdout, r.stderr)
			}
		})
	}
	r := runCLI(t, nil, "-o", "json", "preflight", "--output-dir", dir, m("json", cut, "vhd"))
	var res preflightResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.OK || len(res.VMs) != 1 || !res.VMs[0].Blocked {
		t.Fatalf("json: %v %s", err, r.stdout)
	}
}

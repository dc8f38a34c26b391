package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// submit -j N sets a batch's concurrency, from JSON or YAML, keeping the
// rest; a single VM is refused with the reason.
func TestWithConcurrency(t *testing.T) {
	for _, c := range []struct {
		name, in, err string
	}{
		{"json", `{"version": "1.0", "batch": true, "concurrency": 1, "vms": [{"name": "a", "pipeline": {"load": {"source_type": "raw", "source_path": "/a.raw"}}}]}`, ""},
		{"yaml", "version: \"1.0\"\nbatch: true\nvms:\n  - name: a\n    pipeline:\n      load: {source_type: raw, source_path: /a.raw}\n", ""},
		{"single", `{"version": "1.0", "name": "a", "pipeline": {"load": {"source_type": "raw", "source_path": "/a.raw"}}}`, "not a batch"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := withConcurrency([]byte(c.in), 4)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var m struct {
				Version     string `json:"version"`
				Concurrency int    `json:"concurrency"`
				VMs         []struct {
					Name string `json:"name"`
				} `json:"vms"`
			}
			if err := json.Unmarshal(out, &m); err != nil {
				t.Fatalf("%s: %v", out, err)
			}
			if m.Concurrency != 4 || m.Version != "1.0" || len(m.VMs) != 1 || m.VMs[0].Name != "a" {
				t.Errorf("got %s", out)
			}
		})
	}
}

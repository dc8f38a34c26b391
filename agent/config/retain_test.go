package config

import (
	"strings"
	"testing"
	"time"
)

func TestRetain(t *testing.T) {
	tests := []struct{ yaml, err string }{
		{"", ""},
		{"retain:\n  processed: 7d\n  dropped_images: delete-on-success\n  outputs: 90d\n", ""},
		{"retain:\n  dropped_images: delete\n", "retain.dropped_images"},
		{"retain:\n  processed: soon\n", "retain.processed"},
		{"retain:\n  prcessed: 7d\n", "prcessed"},
	}
	for _, tc := range tests {
		c, err := Parse([]byte(tc.yaml))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, want %q", tc.yaml, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.yaml, err)
			continue
		}
		if p, _ := c.Retain.Policy(); tc.yaml == "" && (p.Processed != 30*24*time.Hour || p.Outputs != 0 || p.DeleteDropped) {
			t.Errorf("default policy %+v", p)
		}
	}
}

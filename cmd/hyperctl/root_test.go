package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestNormaliseArgs(t *testing.T) {
	tests := []struct{ in, want []string }{
		{[]string{"manifest", "validate", "-file", "f"}, []string{"manifest", "validate", "--file", "f"}},
		{[]string{"manifest", "validate", "-file=f"}, []string{"manifest", "validate", "--file=f"}},
		{[]string{"manifest", "validate", "--file", "f"}, []string{"manifest", "validate", "--file", "f"}},
		{[]string{"workflow", "-op", "status"}, []string{"workflow", "--op", "status"}},
		{[]string{"workflow", "-op=list"}, []string{"workflow", "--op=list"}},
		{[]string{"jobs", "-state", "failed", "-output", "json"}, []string{"jobs", "--state", "failed", "--output", "json"}},
		// Shorthands and clusters are left alone.
		{[]string{"logs", "-f", "id"}, []string{"logs", "-f", "id"}},
		{[]string{"-o", "json", "status"}, []string{"-o", "json", "status"}},
		// Nothing after -- is touched.
		{[]string{"validate", "--", "-file"}, []string{"validate", "--", "-file"}},
		// Prefixes of a legacy name are not it.
		{[]string{"x", "-fil"}, []string{"x", "-fil"}},
	}
	for _, tt := range tests {
		if got := normaliseArgs(tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("normaliseArgs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	tests := [][]string{
		{"bogus"},
		{"status", "extra"},
		{"show"},
		{"show", "a", "b"},
		{"jobs", "--state", "sleeping"},
		{"jobs", "--bogus"},
		{"--output", "xml", "status"},
		{"workflow"},
		{"workflow", "-op", "dance"},
		{"cancel"},
		{"logs", "--", "-x"},
		{"manifest"},
		{"manifest", "generate", "only-one"},
	}
	for _, args := range tests {
		r := runCLI(t, &fakeClient{}, args...)
		if r.code != 2 {
			t.Errorf("%q: exit %d, want 2 (stdout %q stderr %q)", args, r.code, r.stdout, r.stderr)
		}
		if !strings.HasPrefix(r.stderr, "hyperctl: ") {
			t.Errorf("%q: stderr %q does not say what is wrong", args, r.stderr)
		}
	}
}

func TestHelpAndVersionExit0(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"manifest", "--help"}, {"--version"}, {"completion", "bash"}, {"completion", "zsh"}, {"completion", "fish"}} {
		r := runCLI(t, nil, args...)
		if r.code != 0 || r.stdout == "" {
			t.Errorf("%q: exit %d, stdout %d bytes, stderr %q", args, r.code, len(r.stdout), r.stderr)
		}
	}
}

func TestCompletionOfChoices(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", "manifest", "create", "--fix-level", ""}, []string{"none", "basic", "moderate", "full", "aggressive"}},
		{[]string{"__complete", "jobs", "--state", ""}, []string{"pending", "failed"}},
		{[]string{"__complete", "workflow", "--op", ""}, []string{"status", "list", "queue", "watch"}},
		{[]string{"__complete", "status", "--output", ""}, []string{"text", "json"}},
	}
	for _, tt := range tests {
		r := runCLI(t, nil, tt.args...)
		for _, w := range tt.want {
			if !strings.Contains(r.stdout, w+"\n") {
				t.Errorf("%q: completions %q lack %q", tt.args, r.stdout, w)
			}
		}
	}
}

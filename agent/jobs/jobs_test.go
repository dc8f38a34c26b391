package jobs

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestIDFromUnit(t *testing.T) {
	for _, tt := range []struct {
		unit string
		id   string
		ok   bool
	}{
		{UnitName("20250101-web01"), "20250101-web01", true},
		{UnitName("a.b"), "a.b", true},
		{"hyper2kvm-job-x.service", "x", true},
		{"hyper2kvm-job-.service", "", false},
		{"hyper2kvm-job-x.scope", "", false},
		{"hyper2kvmd.service", "", false},
		{"other-job-x.service", "", false},
		{"", "", false},
	} {
		id, ok := IDFromUnit(tt.unit)
		if id != tt.id || ok != tt.ok {
			t.Errorf("IDFromUnit(%q) = %q, %v; want %q, %v", tt.unit, id, ok, tt.id, tt.ok)
		}
	}
}

func TestKeepWarnings(t *testing.T) {
	many := make([]string, 60)
	for i := range many {
		many[i] = "w"
	}
	long := strings.Repeat("é", 400) // 800 bytes
	for _, tc := range []struct {
		name    string
		in      []string
		n       int
		last    string
		maxLast int
	}{
		{"none", nil, 0, "", 0},
		{"few", []string{"a", "b"}, 2, "b", 1},
		{"too many: the last line counts the rest", many, MaxWarnings, "11 more warnings in the report", 100},
		{"too long: cut on a character", []string{long}, 1, "", MaxWarningBytes},
		{"not UTF-8", []string{"a\xffb"}, 1, "a\ufffdb", 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := KeepWarnings(tc.in)
			if len(got) != tc.n {
				t.Fatalf("%d warnings, want %d: %q", len(got), tc.n, got)
			}
			if tc.n == 0 {
				return
			}
			l := got[len(got)-1]
			if tc.last != "" && l != tc.last {
				t.Errorf("last %q, want %q", l, tc.last)
			}
			if len(l) > tc.maxLast || !utf8.ValidString(l) {
				t.Errorf("last is %d bytes (at most %d), valid UTF-8 %v", len(l), tc.maxLast, utf8.ValidString(l))
			}
		})
	}
}

package jobs

import "testing"

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

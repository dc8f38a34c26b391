package agent

import (
	"testing"

	sd "github.com/coreos/go-systemd/v22/dbus"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// TestUnitFromPath reverses systemd's object path escaping of unit names.
func TestUnitFromPath(t *testing.T) {
	for _, name := range []string{jobs.UnitName("20250101-web01"), jobs.UnitName("a_b.c"), "hyper2kvmd.service", "x"} {
		p := unitPathPrefix + sd.PathBusEscape(name)
		if got := UnitFromPath(p); got != name {
			t.Errorf("UnitFromPath(%q) = %q, want %q", p, got, name)
		}
	}
}

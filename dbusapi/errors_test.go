package dbusapi

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
)

// TestErrorClassification is the one list of "the agent is unreachable":
// every bus error name any front end treated so, through the client's
// mapping and raw (wrapped, by value or pointer).
func TestErrorClassification(t *testing.T) {
	tests := []struct {
		name                        string
		err                         error
		unreachable, noBus, refused bool
	}{
		{"client: no bus", fmt.Errorf("get status: %w", ErrNoBus), true, true, false},
		{"client: no agent", fmt.Errorf("get status: %w: activation failed", ErrNoAgent), true, false, false},
		{"not installed", dbus.Error{Name: "org.freedesktop.DBus.Error.ServiceUnknown"}, true, false, false},
		{"no owner", &dbus.Error{Name: "org.freedesktop.DBus.Error.NameHasNoOwner"}, true, false, false},
		{"died mid-call", fmt.Errorf("call: %w", &dbus.Error{Name: "org.freedesktop.DBus.Error.NoReply"}), true, false, false},
		{"hung", dbus.Error{Name: "org.freedesktop.DBus.Error.Timeout"}, true, false, false},
		{"hung (timed out)", dbus.Error{Name: "org.freedesktop.DBus.Error.TimedOut"}, true, false, false},
		{"activation failed", dbus.Error{Name: "org.freedesktop.DBus.Error.Spawn.ChildExited"}, true, false, false},
		{"unit masked", dbus.Error{Name: "org.freedesktop.systemd1.UnitMasked"}, true, false, false},
		{"bus gone", dbus.Error{Name: "org.freedesktop.DBus.Error.Disconnected"}, true, true, false},
		{"no bus server", dbus.Error{Name: "org.freedesktop.DBus.Error.NoServer"}, true, true, false},
		{"bus policy says no", dbus.Error{Name: "org.freedesktop.DBus.Error.AccessDenied"}, false, false, true},
		{"polkit says no", apierr.New(apierr.AccessDenied, "cannot submit: not authorized"), false, false, true},
		{"agent's own error", apierr.New(apierr.NoSuchJob, "no job"), false, false, false},
		{"other bus error", dbus.Error{Name: "org.freedesktop.DBus.Error.UnknownMethod"}, false, false, false},
		{"deadline", context.DeadlineExceeded, false, false, false},
		{"plain", errors.New("boom"), false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsUnreachable(tt.err); got != tt.unreachable {
				t.Errorf("IsUnreachable = %v, want %v", got, tt.unreachable)
			}
			if got := IsNoBus(tt.err); got != tt.noBus {
				t.Errorf("IsNoBus = %v, want %v", got, tt.noBus)
			}
			if got := IsAccessDenied(tt.err); got != tt.refused {
				t.Errorf("IsAccessDenied = %v, want %v", got, tt.refused)
			}
			// What the client hands back from a call keeps the meaning.
			var de dbus.Error
			var dp *dbus.Error
			if errors.As(tt.err, &dp) {
				de = *dp
			} else if !errors.As(tt.err, &de) {
				return
			}
			mapped := fromDBusError("get status", de)
			if IsUnreachable(mapped) != tt.unreachable || IsNoBus(mapped) != tt.noBus || IsAccessDenied(mapped) != tt.refused {
				t.Errorf("after the client's mapping %v: unreachable %v no bus %v refused %v", mapped,
					IsUnreachable(mapped), IsNoBus(mapped), IsAccessDenied(mapped))
			}
		})
	}
}

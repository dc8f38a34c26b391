package dbusapi

import (
	"errors"
	"fmt"
	"strings"

	"github.com/godbus/dbus/v5"
	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
)

// ErrNoAgent means the bus answered but nothing owns BusName and D-Bus
// activation could not start the agent (not installed, or its unit failed).
var ErrNoAgent = errors.New("the hyper2kvm agent is not running and could not be started")

// toDBusError is err as the named D-Bus error of its apierr kind. The body
// is a single string, as every D-Bus binding expects (GLib refuses any
// other shape): the *apierr.Error's Message on the first line and each of
// its Details (for InvalidManifest, "field.path: problem") on a line of its
// own. An error that is not an *apierr.Error is Internal.
func toDBusError(err error) *dbus.Error {
	var e *apierr.Error
	if !errors.As(err, &e) {
		e = &apierr.Error{Kind: apierr.Internal, Message: err.Error()}
	}
	msg := strings.ReplaceAll(e.Message, "\n", " ")
	for _, d := range e.Details {
		msg += "\n" + strings.ReplaceAll(d, "\n", " ")
	}
	return dbus.NewError(apierr.Lookup(e.Kind).DBus, []any{msg})
}

// fromDBusError maps an error from a method call back to what the caller
// can act on: *apierr.Error for the agent's named errors (and the bus's own
// access errors), ErrNoAgent when the name has no owner and cannot be
// activated, ErrNoBus when the connection is gone. what says which call.
func fromDBusError(what string, err error) error {
	if err == nil {
		return nil
	}
	var de dbus.Error
	if pe := (*dbus.Error)(nil); errors.As(err, &pe) && pe != nil {
		de = *pe
	} else if !errors.As(err, &de) {
		if errors.Is(err, dbus.ErrClosed) {
			return fmt.Errorf("%s: %w: connection closed", what, ErrNoBus)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	msg := ""
	if len(de.Body) > 0 {
		msg, _ = de.Body[0].(string)
	}
	if row, ok := apierr.ByDBusName(de.Name); ok {
		lines := strings.Split(msg, "\n")
		e := &apierr.Error{Kind: row.Kind, Message: lines[0]}
		if len(lines) > 1 {
			e.Details = lines[1:]
		}
		return e
	}
	switch de.Name {
	case "org.freedesktop.DBus.Error.AccessDenied",
		"org.freedesktop.DBus.Error.InteractiveAuthorizationRequired":
		return &apierr.Error{Kind: apierr.AccessDenied, Message: fmt.Sprintf("cannot %s: %s", what, msg)}
	case "org.freedesktop.DBus.Error.ServiceUnknown",
		"org.freedesktop.DBus.Error.NameHasNoOwner",
		"org.freedesktop.DBus.Error.TimedOut",
		"org.freedesktop.DBus.Error.NoReply":
		return fmt.Errorf("%s: %w: %s", what, ErrNoAgent, msg)
	case "org.freedesktop.DBus.Error.Disconnected":
		return fmt.Errorf("%s: %w: %s", what, ErrNoBus, msg)
	case "org.freedesktop.DBus.Error.InvalidArgs":
		return &apierr.Error{Kind: apierr.InvalidArgs, Message: fmt.Sprintf("cannot %s: %s", what, msg)}
	}
	if strings.HasPrefix(de.Name, "org.freedesktop.DBus.Error.Spawn.") {
		return fmt.Errorf("%s: %w: %s", what, ErrNoAgent, msg)
	}
	return fmt.Errorf("%s: %s: %s", what, de.Name, msg)
}

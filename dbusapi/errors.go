package dbusapi

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/godbus/dbus/v5"
	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
)

// ErrNoAgent means the bus answered but nothing owns BusName and D-Bus
// activation could not start the agent (not installed, or its unit failed).
var ErrNoAgent = errors.New("the hyper2kvm agent is not running and could not be started")

// detailsSep joins an error's Details onto its message on the wire, so that
// busctl and sd-bus clients, which show only the first string of an error
// body, still see every field path.
const detailsSep = "; "

// toDBusError is err as the named D-Bus error of its apierr kind. The body
// is (s message, as details): message is the *apierr.Error's Message, with
// ": " and the details joined by "; " appended when there are details.
func toDBusError(err error) *dbus.Error {
	var e *apierr.Error
	if !errors.As(err, &e) {
		e = &apierr.Error{Kind: apierr.Internal, Message: err.Error()}
	}
	msg := e.Message
	if len(e.Details) > 0 {
		msg += ": " + strings.Join(e.Details, detailsSep)
	}
	details := e.Details
	if details == nil {
		details = []string{}
	}
	return dbus.NewError(apierr.Lookup(e.Kind).DBus, []any{msg, details})
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
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("%s: %w", what, err)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	msg := ""
	if len(de.Body) > 0 {
		msg, _ = de.Body[0].(string)
	}
	if row, ok := apierr.ByDBusName(de.Name); ok {
		e := &apierr.Error{Kind: row.Kind, Message: msg}
		if len(de.Body) > 1 {
			if d, ok := de.Body[1].([]string); ok && len(d) > 0 {
				e.Details = d
				e.Message = strings.TrimSuffix(msg, ": "+strings.Join(d, detailsSep))
			}
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

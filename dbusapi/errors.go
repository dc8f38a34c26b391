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
	if sentinel := unreachableKind(de.Name); sentinel != nil {
		return fmt.Errorf("%s: %w: %s", what, sentinel, msg)
	}
	switch de.Name {
	case "org.freedesktop.DBus.Error.AccessDenied",
		"org.freedesktop.DBus.Error.InteractiveAuthorizationRequired":
		return &apierr.Error{Kind: apierr.AccessDenied, Message: fmt.Sprintf("cannot %s: %s", what, msg)}
	case "org.freedesktop.DBus.Error.InvalidArgs":
		return &apierr.Error{Kind: apierr.InvalidArgs, Message: fmt.Sprintf("cannot %s: %s", what, msg)}
	}
	return fmt.Errorf("%s: %s: %s", what, de.Name, msg)
}

// unreachableKind says what a bus error name means when it is not the
// agent answering: ErrNoBus when the connection to the bus is gone,
// ErrNoAgent when nobody answers for BusName (not installed, activation
// failed or refused by systemd, or it died or hung mid-call), nil when the
// name is not one of those. This is the one list: the client, the REST
// bridge and hyperctl all decide "unreachable" through it.
func unreachableKind(name string) error {
	switch name {
	case "org.freedesktop.DBus.Error.Disconnected",
		"org.freedesktop.DBus.Error.NoServer":
		return ErrNoBus
	case "org.freedesktop.DBus.Error.ServiceUnknown",
		"org.freedesktop.DBus.Error.NameHasNoOwner",
		"org.freedesktop.DBus.Error.NoReply",
		"org.freedesktop.DBus.Error.Timeout",
		"org.freedesktop.DBus.Error.TimedOut":
		return ErrNoAgent
	}
	// Activation: the bus could not spawn the service, or systemd would
	// not start its unit (masked, no such unit).
	if strings.HasPrefix(name, "org.freedesktop.DBus.Error.Spawn.") || strings.HasPrefix(name, "org.freedesktop.systemd1.") {
		return ErrNoAgent
	}
	return nil
}

// busErrorName is the name of the D-Bus error inside err, "" when there is
// none. The client maps the errors of its calls, but a caller may hold one
// from elsewhere (its own connection, a wrapped raw error).
func busErrorName(err error) string {
	var v dbus.Error
	if errors.As(err, &v) {
		return v.Name
	}
	var p *dbus.Error
	if errors.As(err, &p) && p != nil {
		return p.Name
	}
	return ""
}

// IsNoBus reports whether err means the system bus itself cannot be
// reached (dbus not running, connection lost).
func IsNoBus(err error) bool {
	return errors.Is(err, ErrNoBus) || unreachableKind(busErrorName(err)) == ErrNoBus
}

// IsUnreachable reports whether err means the agent could not be reached at
// all, as opposed to the agent answering with an error: no bus, or nobody
// answers for BusName and activation could not start it. Front ends show it
// as "cannot reach the agent" (hyperctl exits 3, REST answers 503
// agent-unreachable).
func IsUnreachable(err error) bool {
	return errors.Is(err, ErrNoBus) || errors.Is(err, ErrNoAgent) || unreachableKind(busErrorName(err)) != nil
}

// IsAccessDenied reports whether err is a refusal: the agent's AccessDenied
// (polkit said no) or the bus policy's.
func IsAccessDenied(err error) bool {
	if apierr.Is(err, apierr.AccessDenied) {
		return true
	}
	switch busErrorName(err) {
	case "org.freedesktop.DBus.Error.AccessDenied", "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired":
		return true
	}
	return false
}

// IsConfigInvalid reports whether err is the agent saying that its
// configuration file is invalid (ConfigInvalid): it is up, but serves
// nothing until the file is fixed. Front ends show the message as it is,
// since it names the file, line and key.
func IsConfigInvalid(err error) bool { return apierr.Is(err, apierr.ConfigInvalid) }

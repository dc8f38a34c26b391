package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/godbus/dbus/v5"
	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/dbusapi"
	"github.com/hyper2kvm/hyper2kvm/polkit"
)

// busUnreachableNames are D-Bus errors meaning nobody answers for the agent's
// name: not installed, activation failed, or it died mid-call.
var busUnreachableNames = []string{
	"org.freedesktop.DBus.Error.ServiceUnknown",
	"org.freedesktop.DBus.Error.NameHasNoOwner",
	"org.freedesktop.DBus.Error.NoReply",
	"org.freedesktop.DBus.Error.Disconnected",
	"org.freedesktop.DBus.Error.NoServer",
	"org.freedesktop.DBus.Error.Spawn.",
	"org.freedesktop.systemd1.", // activation through systemd failed (masked, no such unit)
}

// dbusErrorName returns the D-Bus error name inside err, if any.
func dbusErrorName(err error) string {
	var v dbus.Error
	if errors.As(err, &v) {
		return v.Name
	}
	var p *dbus.Error
	if errors.As(err, &p) && p != nil {
		return p.Name
	}
	// Some paths flatten the error to text; the name is still in it.
	msg := err.Error()
	for _, n := range busUnreachableNames {
		if i := strings.Index(msg, n); i >= 0 {
			end := i + len(n)
			for end < len(msg) && msg[end] != ':' && msg[end] != ' ' {
				end++
			}
			return msg[i:end]
		}
	}
	return ""
}

func unreachable(err error) bool {
	if errors.Is(err, dbusapi.ErrNoBus) {
		return true
	}
	name := dbusErrorName(err)
	if name == "" {
		return false
	}
	for _, n := range busUnreachableNames {
		if name == n || (strings.HasSuffix(n, ".") && strings.HasPrefix(name, n)) {
			return true
		}
	}
	return false
}

// apiError turns an error from the agent into an exitError with the right
// code and a message a sysadmin can act on. action is the polkit action the
// call needed, named when the agent says no.
func (a *app) apiError(err error, action string) error {
	if err == nil {
		return nil
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	if errors.Is(err, context.Canceled) {
		return &exitError{code: exitInterrupted, err: errors.New("interrupted")}
	}
	if errors.Is(err, dbusapi.ErrNoBus) {
		return &exitError{code: exitUnreachable, err: fmt.Errorf("%w (is dbus running?)", err)}
	}
	if errors.Is(err, dbusapi.ErrNoAgent) || unreachable(err) {
		return &exitError{code: exitUnreachable, err: fmt.Errorf(
			"cannot reach the hyper2kvm agent (%s): %w (is hyper2kvm installed? see: systemctl status hyper2kvmd.service)",
			dbusapi.BusName, err)}
	}
	var ae *apierr.Error
	if errors.As(err, &ae) {
		switch ae.Kind {
		case apierr.AccessDenied:
			msg := ae.Message
			if action != "" && !strings.Contains(msg, "io.hyper2kvm.agent.") {
				msg = fmt.Sprintf("%s (polkit action %s)", msg, action)
			}
			return &exitError{code: exitUnauthorized, err: fmt.Errorf("not authorized: %s", msg)}
		case apierr.InvalidManifest:
			var b strings.Builder
			b.WriteString(ae.Message)
			for _, d := range ae.Details {
				b.WriteString("\n  " + d)
			}
			return &exitError{code: exitFailed, err: errors.New(b.String())}
		case apierr.InvalidArgs:
			return &exitError{code: exitUsage, err: err}
		}
		return &exitError{code: exitFailed, err: err}
	}
	return &exitError{code: exitFailed, err: err}
}

// Polkit actions hyperctl names when the agent refuses a call and its
// message does not already name one.
const (
	actionSubmit = polkit.ActionSubmit
	actionCancel = polkit.ActionCancel
	actionManage = polkit.ActionManage
)

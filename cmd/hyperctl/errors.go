package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/dbusapi"
	"github.com/hyper2kvm/hyper2kvm/polkit"
)

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
	if dbusapi.IsNoBus(err) {
		return &exitError{code: exitUnreachable, err: fmt.Errorf("%w (is dbus running?)", err)}
	}
	if dbusapi.IsUnreachable(err) {
		return &exitError{code: exitUnreachable, err: fmt.Errorf(
			"cannot reach the hyper2kvm agent (%s): %w (is hyper2kvm installed? see: systemctl status hyper2kvmd.service)",
			dbusapi.BusName, err)}
	}
	if dbusapi.IsConfigInvalid(err) {
		// The agent is up but serves nothing: for a script that is the
		// same as an agent that cannot be started. The message names the
		// file, line and key, and says what to do.
		return &exitError{code: exitUnreachable, err: err}
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
	actionRead   = polkit.ActionRead
)

// Package polkit asks polkitd (org.freedesktop.PolicyKit1) whether a bus peer
// may perform an action. Anything but a clear "yes" is a "no": polkitd absent,
// erroring or timing out denies. The policy and rules files beside it are
// installed with the agent.
package polkit

import (
	"context"
	"errors"

	"github.com/godbus/dbus/v5"
)

// Action ids, matching io.hyper2kvm.agent.policy.
const (
	ActionSubmit    = "io.hyper2kvm.agent.submit"
	ActionCancel    = "io.hyper2kvm.agent.cancel"
	ActionCancelAny = "io.hyper2kvm.agent.cancel-any"
	ActionManage    = "io.hyper2kvm.agent.manage"
)

// Authority checks authorizations over conn.
type Authority struct{ conn *dbus.Conn }

// New returns an Authority using conn (the system bus).
func New(conn *dbus.Conn) *Authority { return &Authority{conn: conn} }

// Authorize checks action for the system-bus-name subject sender.
func (a *Authority) Authorize(ctx context.Context, sender, action string, interactive bool) (bool, error) {
	return false, errors.New("polkit: not implemented yet")
}

// Package polkit asks polkitd (org.freedesktop.PolicyKit1) whether a bus peer
// may perform an action. Anything but a clear "yes" is a "no": polkitd absent,
// erroring or timing out denies. The policy and rules files beside it are
// installed with the agent.
package polkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/godbus/dbus/v5"
)

// Action ids, matching io.hyper2kvm.agent.policy.
const (
	ActionSubmit    = "io.hyper2kvm.agent.submit"
	ActionCancel    = "io.hyper2kvm.agent.cancel"
	ActionCancelAny = "io.hyper2kvm.agent.cancel-any"
	ActionManage    = "io.hyper2kvm.agent.manage"
	// ActionRead is reading another user's job log (the submitter and
	// root need none).
	ActionRead = "io.hyper2kvm.agent.read"
	// ActionUseSource is browsing a source and converting VMs from it;
	// the check carries the detail "source" (its name) for rules.
	ActionUseSource = "io.hyper2kvm.agent.use-source"
)

// polkit's bus coordinates and CheckAuthorization flags.
const (
	busName       = "org.freedesktop.PolicyKit1"
	authorityPath = "/org/freedesktop/PolicyKit1/Authority"
	authorityIf   = "org.freedesktop.PolicyKit1.Authority"

	flagAllowUserInteraction uint32 = 1
)

// ErrInteractionRequired is the deny reason when polkit would have let the
// caller authenticate but the call did not allow interactive authorization.
var ErrInteractionRequired = errors.New("interactive authentication required")

// Authority checks authorizations over conn.
type Authority struct {
	conn *dbus.Conn
	// Timeout bounds a check that may not ask the user anything;
	// InteractiveTimeout one that may wait for a password.
	Timeout, InteractiveTimeout time.Duration
	seq                         atomic.Uint64
}

// New returns an Authority using conn (the system bus).
func New(conn *dbus.Conn) *Authority {
	return &Authority{conn: conn, Timeout: 25 * time.Second, InteractiveTimeout: 5 * time.Minute}
}

// subject is polkit's (sa{sv}) subject.
type subject struct {
	Kind    string
	Details map[string]dbus.Variant
}

// result is polkit's (bba{ss}) authorization result.
type result struct {
	IsAuthorized bool
	IsChallenge  bool
	Details      map[string]string
}

// Authorize checks action for the system-bus-name subject sender. It
// returns true only when polkitd answered is_authorized; a challenge that
// could not be shown is (false, ErrInteractionRequired); any failure to
// ask is (false, error).
func (a *Authority) Authorize(ctx context.Context, sender, action string, interactive bool) (bool, error) {
	return a.AuthorizeDetails(ctx, sender, action, nil, interactive)
}

// AuthorizeDetails is Authorize with details a polkit rule can read
// (action.lookup("source")).
func (a *Authority) AuthorizeDetails(ctx context.Context, sender, action string, details map[string]string, interactive bool) (bool, error) {
	if details == nil {
		details = map[string]string{}
	}
	if a == nil || a.conn == nil {
		return false, errors.New("cannot check authorization: no bus connection")
	}
	if sender == "" {
		return false, errors.New("cannot check authorization: the call has no sender")
	}
	timeout, flags := a.Timeout, uint32(0)
	if interactive {
		timeout, flags = a.InteractiveTimeout, flagAllowUserInteraction
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	cancelID := fmt.Sprintf("hyper2kvm-%d-%d", time.Now().UnixNano(), a.seq.Add(1))
	subj := subject{Kind: "system-bus-name", Details: map[string]dbus.Variant{"name": dbus.MakeVariant(sender)}}
	obj := a.conn.Object(busName, authorityPath)
	call := obj.CallWithContext(ctx, authorityIf+".CheckAuthorization", 0,
		subj, action, details, flags, cancelID)
	if call.Err != nil {
		if ctx.Err() != nil {
			// Tell polkitd to drop the dialog it may still be showing.
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			obj.CallWithContext(cctx, authorityIf+".CancelCheckAuthorization", 0, cancelID)
			cancel()
		}
		return false, fmt.Errorf("cannot check authorization for %s with polkit: %w", action, call.Err)
	}
	var r result
	if err := call.Store(&r); err != nil {
		return false, fmt.Errorf("cannot read polkit's answer for %s: %w", action, err)
	}
	if r.IsAuthorized {
		return true, nil
	}
	if r.IsChallenge {
		return false, ErrInteractionRequired
	}
	return false, nil
}

// AuthorizeUID checks action, never interactively, for user uid acting
// through this process: the subject is a unix-process (this process's pid
// and start time) with uid given, which polkitd accepts from root. The REST
// bridge acts for the owner of a per-user API token this way, so that
// polkit's rules decide for that user, not for the bridge.
func (a *Authority) AuthorizeUID(ctx context.Context, uid uint32, action string) (bool, error) {
	if a == nil || a.conn == nil {
		return false, errors.New("cannot check authorization: no bus connection")
	}
	start, err := selfStartTime()
	if err != nil {
		return false, fmt.Errorf("cannot check authorization for uid %d: %w", uid, err)
	}
	if a.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.Timeout)
		defer cancel()
	}
	subj := subject{Kind: "unix-process", Details: map[string]dbus.Variant{
		"pid":        dbus.MakeVariant(uint32(os.Getpid())),
		"start-time": dbus.MakeVariant(start),
		"uid":        dbus.MakeVariant(int32(uid)),
	}}
	call := a.conn.Object(busName, authorityPath).CallWithContext(ctx, authorityIf+".CheckAuthorization", 0,
		subj, action, map[string]string{}, uint32(0), "")
	if call.Err != nil {
		return false, fmt.Errorf("cannot check authorization for %s with polkit: %w", action, call.Err)
	}
	var r result
	if err := call.Store(&r); err != nil {
		return false, fmt.Errorf("cannot read polkit's answer for %s: %w", action, err)
	}
	if r.IsChallenge && !r.IsAuthorized {
		return false, ErrInteractionRequired
	}
	return r.IsAuthorized, nil
}

// selfStartTime is this process's start time in clock ticks since boot,
// field 22 of /proc/self/stat, as polkit identifies a process.
func selfStartTime() (uint64, error) {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("cannot parse /proc/self/stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, errors.New("cannot parse /proc/self/stat")
	}
	return strconv.ParseUint(f[19], 10, 64)
}

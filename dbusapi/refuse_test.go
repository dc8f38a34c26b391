package dbusapi

import (
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
)

// TestRefusingServer: every Manager method, called by the Go client and
// with raw arguments of the XML's signature, answers ConfigInvalid with
// the message whole, and the server owns the name while doing so.
func TestRefusingServer(t *testing.T) {
	addr := startBus(t)
	msg := `the agent's configuration is invalid: /etc/hyper2kvm/agent.yaml: line 2: unknown key "max_concurent_jobs" (did you mean "max_concurrent_jobs"?)`
	srv, err := NewRefusingServer(connect(t, addr), apierr.New(apierr.ConfigInvalid, "%s", msg))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	before := srv.LastActivity()
	time.Sleep(time.Millisecond)
	c, err := DialAddress(testCtx(t), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testCtx(t)

	check := func(what string, err error) {
		t.Helper()
		if !IsConfigInvalid(err) {
			t.Errorf("%s: %v, want ConfigInvalid", what, err)
			return
		}
		if err.Error() != msg {
			t.Errorf("%s: message %q, want %q", what, err.Error(), msg)
		}
		if IsUnreachable(err) {
			t.Errorf("%s: %v counts as unreachable; front ends would hide the message", what, err)
		}
	}
	_, err = c.GetStatus(ctx)
	check("GetStatus", err)
	_, err = c.GetMetrics(ctx)
	check("GetMetrics", err)
	_, err = c.ListJobs(ctx, apitype.Filter{})
	check("ListJobs", err)
	_, _, err = c.ListJobsPage(ctx, apitype.Filter{}, apitype.Page{Limit: 5})
	check("ListJobsPage", err)
	_, err = c.GetJob(ctx, "j1")
	check("GetJob", err)
	_, _, err = c.Validate(ctx, []byte("{}"))
	check("Validate", err)
	_, err = c.Submit(ctx, []byte("{}"), apitype.SubmitOptions{}, false)
	check("Submit", err)
	check("Cancel", c.Cancel(ctx, "j1", false))
	_, err = c.Retry(ctx, "j1", false)
	check("Retry", err)
	_, err = c.Watch(ctx)
	check("Watch", err)

	// The raw bus: the D-Bus name, and a method with arguments.
	call := c.Conn().Object(BusName, ManagerPath).Call(ManagerIface+".ListJobsWithProperties", 0, map[string]dbus.Variant{})
	var de dbus.Error
	if call.Err == nil || !asDBusError(call.Err, &de) || de.Name != "io.hyper2kvm.Agent1.Error.ConfigInvalid" {
		t.Errorf("ListJobsWithProperties: %v, want io.hyper2kvm.Agent1.Error.ConfigInvalid", call.Err)
	}
	// Introspection still describes the real interface.
	n := introspectOn(t, c.Conn(), ManagerPath)
	if _, ok := findIface(n, ManagerIface); !ok {
		t.Errorf("introspection of the refusing server lacks %s", ManagerIface)
	}
	if !srv.LastActivity().After(before) {
		t.Errorf("LastActivity %v not after %v: the idle exit would not see callers", srv.LastActivity(), before)
	}
	// Close releases the name.
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetStatus(ctx); !IsUnreachable(err) {
		t.Errorf("GetStatus after Close: %v, want unreachable", err)
	}
}

func asDBusError(err error, de *dbus.Error) bool {
	switch e := err.(type) {
	case dbus.Error:
		*de = e
		return true
	case *dbus.Error:
		*de = *e
		return true
	}
	return false
}

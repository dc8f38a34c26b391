package polkit

import (
	"bufio"
	"context"
	"encoding/xml"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

const testBusConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path=%SOCKET%</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
`

func startBus(t *testing.T) string {
	t.Helper()
	daemon, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Skip("dbus-daemon not installed (Debian package dbus): cannot run a private bus")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(cfg, []byte(strings.ReplaceAll(testBusConfig, "%SOCKET%", filepath.Join(dir, "bus"))), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(daemon, "--config-file="+cfg, "--nofork", "--print-address=1", "--nopidfile", "--nosyslog")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start dbus-daemon: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("cannot read the bus address from dbus-daemon: %v", err)
	}
	return strings.TrimSpace(addr)
}

func connect(t *testing.T, addr string) *dbus.Conn {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// fakePolkitd answers CheckAuthorization the way polkitd does, from a
// fixed result, and records what it was asked.
type fakePolkitd struct {
	mu        sync.Mutex
	res       result
	err       *dbus.Error
	block     chan struct{} // when set, CheckAuthorization waits for it
	asked     []ask
	cancelled []string
}

type ask struct {
	subject  subject
	action   string
	flags    uint32
	cancelID string
	details  map[string]string
}

func (p *fakePolkitd) serve(t *testing.T, conn *dbus.Conn) {
	t.Helper()
	err := conn.ExportMethodTable(map[string]any{
		"CheckAuthorization": func(s subject, action string, details map[string]string, flags uint32, cancelID string) (result, *dbus.Error) {
			p.mu.Lock()
			p.asked = append(p.asked, ask{s, action, flags, cancelID, details})
			res, derr, block := p.res, p.err, p.block
			p.mu.Unlock()
			if block != nil {
				<-block
			}
			if res.Details == nil {
				res.Details = map[string]string{}
			}
			return res, derr
		},
		"CancelCheckAuthorization": func(id string) *dbus.Error {
			p.mu.Lock()
			p.cancelled = append(p.cancelled, id)
			p.mu.Unlock()
			return nil
		},
	}, authorityPath, authorityIf)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := conn.RequestName(busName, 0); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("cannot own %s: %v %v", busName, r, err)
	}
}

func TestAuthorize(t *testing.T) {
	addr := startBus(t)
	pk := &fakePolkitd{}
	pk.serve(t, connect(t, addr))
	agent := connect(t, addr)
	a := New(agent)
	ctx := context.Background()

	for _, tc := range []struct {
		name        string
		res         result
		err         *dbus.Error
		interactive bool
		wantOK      bool
		wantErr     error // nil, ErrInteractionRequired, or errAny
	}{
		{"authorized", result{IsAuthorized: true}, nil, false, true, nil},
		{"authorized interactively", result{IsAuthorized: true}, nil, true, true, nil},
		{"not authorized", result{}, nil, false, false, nil},
		{"challenge", result{IsChallenge: true}, nil, false, false, ErrInteractionRequired},
		{"polkit error", result{IsAuthorized: true}, dbus.NewError("org.freedesktop.PolicyKit1.Error.Failed", []any{"boom"}), false, false, errAny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pk.mu.Lock()
			pk.res, pk.err, pk.asked = tc.res, tc.err, nil
			pk.mu.Unlock()
			ok, err := a.Authorize(ctx, ":1.42", ActionSubmit, tc.interactive)
			if ok != tc.wantOK {
				t.Errorf("Authorize = %v, want %v", ok, tc.wantOK)
			}
			switch {
			case tc.wantErr == errAny && err == nil:
				t.Errorf("Authorize error = nil, want one")
			case tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
				t.Errorf("Authorize error = %v, want %v", err, tc.wantErr)
			}
			pk.mu.Lock()
			defer pk.mu.Unlock()
			if len(pk.asked) != 1 {
				t.Fatalf("polkitd was asked %d times", len(pk.asked))
			}
			got := pk.asked[0]
			wantFlags := uint32(0)
			if tc.interactive {
				wantFlags = 1
			}
			if got.subject.Kind != "system-bus-name" || got.subject.Details["name"].Value() != ":1.42" ||
				got.action != ActionSubmit || got.flags != wantFlags || got.cancelID == "" {
				t.Errorf("polkitd was asked %+v", got)
			}
		})
	}
}

var errAny = errors.New("any error")

// AuthorizeDetails hands polkit the details a rule reads (use-source's
// "source"); Authorize hands none.
func TestAuthorizeDetails(t *testing.T) {
	addr := startBus(t)
	pk := &fakePolkitd{res: result{IsAuthorized: true}}
	pk.serve(t, connect(t, addr))
	a := New(connect(t, addr))
	ok, err := a.AuthorizeDetails(context.Background(), ":1.42", ActionUseSource, map[string]string{"source": "vc1"}, false)
	if !ok || err != nil {
		t.Fatalf("AuthorizeDetails = %v, %v", ok, err)
	}
	if _, err := a.Authorize(context.Background(), ":1.42", ActionSubmit, false); err != nil {
		t.Fatal(err)
	}
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if len(pk.asked) != 2 || pk.asked[0].action != ActionUseSource || pk.asked[0].details["source"] != "vc1" || len(pk.asked[1].details) != 0 {
		t.Errorf("polkitd was asked %+v", pk.asked)
	}
}

func TestAuthorizeDeniesWithoutPolkit(t *testing.T) {
	addr := startBus(t)
	a := New(connect(t, addr))
	ok, err := a.Authorize(context.Background(), ":1.42", ActionCancel, false)
	if ok || err == nil || !strings.Contains(err.Error(), ActionCancel) {
		t.Errorf("Authorize with no polkitd = %v, %v; want a denial naming the action", ok, err)
	}
	ok, err = (*Authority)(nil).Authorize(context.Background(), ":1.42", ActionCancel, false)
	if ok || err == nil {
		t.Errorf("nil Authority = %v, %v; want a denial", ok, err)
	}
	ok, err = New(connect(t, addr)).Authorize(context.Background(), "", ActionCancel, false)
	if ok || err == nil {
		t.Errorf("no sender = %v, %v; want a denial", ok, err)
	}
}

// TestAuthorizeTimeout: a polkitd that does not answer denies, and the
// pending check is cancelled so no dialog lingers.
func TestAuthorizeTimeout(t *testing.T) {
	addr := startBus(t)
	pk := &fakePolkitd{res: result{IsAuthorized: true}, block: make(chan struct{})}
	defer close(pk.block)
	pk.serve(t, connect(t, addr))
	a := New(connect(t, addr))
	a.InteractiveTimeout = 100 * time.Millisecond
	ok, err := a.Authorize(context.Background(), ":1.42", ActionManage, true)
	if ok || err == nil {
		t.Fatalf("Authorize with a silent polkitd = %v, %v; want a denial", ok, err)
	}
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if len(pk.asked) != 1 || !slices.Equal(pk.cancelled, []string{pk.asked[0].cancelID}) {
		t.Errorf("asked %+v, cancelled %v; want the check cancelled", pk.asked, pk.cancelled)
	}
}

// TestPolicyFile holds io.hyper2kvm.agent.policy to the action constants
// and the defaults the docs promise.
func TestPolicyFile(t *testing.T) {
	data, err := os.ReadFile("io.hyper2kvm.agent.policy")
	if err != nil {
		t.Fatal(err)
	}
	var pc struct {
		Actions []struct {
			ID       string `xml:"id,attr"`
			Message  string `xml:"message"`
			Defaults struct {
				Any      string `xml:"allow_any"`
				Inactive string `xml:"allow_inactive"`
				Active   string `xml:"allow_active"`
			} `xml:"defaults"`
		} `xml:"action"`
	}
	if err := xml.Unmarshal(data, &pc); err != nil {
		t.Fatalf("policy is not XML: %v", err)
	}
	var ids []string
	for _, a := range pc.Actions {
		ids = append(ids, a.ID)
		if a.Defaults.Any != "no" || a.Defaults.Inactive != "no" || a.Defaults.Active != "auth_admin_keep" {
			t.Errorf("%s defaults = %+v, want no/no/auth_admin_keep", a.ID, a.Defaults)
		}
		if a.Message == "" {
			t.Errorf("%s has no message", a.ID)
		}
	}
	want := []string{ActionSubmit, ActionUseSource, ActionCancel, ActionCancelAny, ActionRead, ActionManage}
	if !slices.Equal(ids, want) {
		t.Errorf("policy actions %v, want %v", ids, want)
	}
	rules, err := os.ReadFile("50-hyper2kvm.rules")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`"` + ActionSubmit + `"`, `"` + ActionCancel + `"`, `"` + ActionRead + `"`, `isInGroup("hyper2kvm")`, `subject.user == "hyper2kvm-api"`} {
		if !strings.Contains(string(rules), s) {
			t.Errorf("50-hyper2kvm.rules does not mention %s", s)
		}
	}
	// The group's rule (the first) must not grant cancel-any or manage;
	// only the bridge's user holds those, the bridge demanding the token.
	group, _, _ := strings.Cut(string(rules), "subject.user ==")
	var code []string
	for _, l := range strings.Split(group, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "//") {
			code = append(code, l)
		}
	}
	if c := strings.Join(code, "\n"); !strings.Contains(c, "isInGroup") || strings.Contains(c, ActionCancelAny) || strings.Contains(c, ActionManage) {
		t.Errorf("50-hyper2kvm.rules: the group's rule must not grant cancel-any or manage")
	}
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/config"
	"github.com/hyper2kvm/hyper2kvm/dbusapi"
)

// privateBus runs a permissive dbus-daemon for the test.
func privateBus(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Skip("dbus-daemon not installed (Debian package dbus)")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "bus.conf")
	os.WriteFile(conf, []byte(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>custom</type><listen>unix:path=`+filepath.Join(dir, "bus")+`</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/></policy></busconfig>`), 0o644)
	cmd := exec.Command(bin, "--config-file="+conf, "--nofork", "--print-address=1", "--nopidfile", "--nosyslog")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(addr)
}

type notes struct {
	mu sync.Mutex
	l  []string
}

func (n *notes) add(s string) { n.mu.Lock(); n.l = append(n.l, s); n.mu.Unlock() }
func (n *notes) all() string  { n.mu.Lock(); defer n.mu.Unlock(); return strings.Join(n.l, "\n") }

// startMisconfigured runs the misconfigured agent for a file with a typo
// and returns a client, what it told systemd, and its result.
func startMisconfigured(t *testing.T, idle time.Duration) (path string, c *dbusapi.Client, n *notes, done chan error) {
	t.Helper()
	addr := privateBus(t)
	path = filepath.Join(t.TempDir(), "agent.yaml")
	os.WriteFile(path, []byte("verbose: true\nmax_concurent_jobs: 2\n"), 0o644)
	_, cause := config.Load(path)
	if cause == nil {
		t.Fatal("the typo loaded")
	}
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	n = &notes{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done = make(chan error, 1)
	var log bytes.Buffer
	go func() {
		done <- misconfigured{path: path, cause: cause, conn: conn, notify: n.add,
			idle: idle, poll: 20 * time.Millisecond, watchdog: 10 * time.Millisecond, log: &log}.run(ctx)
	}()
	c, err = dbusapi.DialAddress(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// Wait for the name (the agent takes it before READY=1).
	for i := 0; !strings.Contains(n.all(), "READY=1"); i++ {
		if i > 500 {
			t.Fatalf("no READY=1; notes %q", n.all())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return path, c, n, done
}

func TestMisconfiguredAnswersAndExitsOnChange(t *testing.T) {
	path, c, n, done := startMisconfigured(t, 0)
	_, err := c.GetStatus(context.Background())
	if !dbusapi.IsConfigInvalid(err) {
		t.Fatalf("GetStatus: %v, want ConfigInvalid", err)
	}
	for _, want := range []string{path, "line 2", `"max_concurent_jobs"`, `did you mean "max_concurrent_jobs"`, "hyper2kvmd check-config"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("GetStatus error %q lacks %q", err, want)
		}
	}
	if _, err := c.Submit(context.Background(), []byte("{}"), apiOpts(), false); !dbusapi.IsConfigInvalid(err) {
		t.Errorf("Submit: %v, want ConfigInvalid", err)
	}
	st := n.all()
	if !strings.Contains(st, "STATUS=configuration error: "+path+": line 2") || !strings.Contains(st, "did you mean") {
		t.Errorf("sd_notify got %q, want STATUS=configuration error with the file, line and suggestion", st)
	}
	select {
	case err := <-done:
		t.Fatalf("exited before the file changed: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if st := n.all(); !strings.Contains(st, "WATCHDOG=1") {
		t.Errorf("sd_notify got %q, want WATCHDOG=1 (WatchdogSec= would kill it)", st)
	}
	// An editor's save: a new file renamed over the old one.
	tmp := path + ".new"
	os.WriteFile(tmp, []byte("max_concurrent_jobs: 2\n"), 0o644)
	os.Rename(tmp, path)
	select {
	case err := <-done:
		if !errors.Is(err, errConfigChanged) || exitCode(err) == 0 {
			t.Errorf("after the change: %v (exit %d), want errConfigChanged and a non-zero exit for Restart=on-failure", err, exitCode(err))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("did not exit after the file changed")
	}
}

func TestMisconfiguredIdleExit(t *testing.T) {
	_, _, _, done := startMisconfigured(t, 200*time.Millisecond)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("idle exit: %v, want success (a failure would make systemd restart it)", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no idle exit")
	}
}

func TestStampSeesChanges(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.yaml")
	none := stampOf(p)
	os.WriteFile(p, []byte("a: 1\n"), 0o644)
	one := stampOf(p)
	if one == none {
		t.Error("creation not seen")
	}
	os.WriteFile(p+".x", []byte("a: 2\n"), 0o644)
	os.Rename(p+".x", p)
	if stampOf(p) == one {
		t.Error("rename over the file not seen")
	}
	os.Remove(p)
	if stampOf(p) != none {
		t.Error("removal not seen as absence")
	}
}

func TestUnitObjectPath(t *testing.T) {
	if got := unitObjectPath("hyper2kvmd.path"); got != "/org/freedesktop/systemd1/unit/hyper2kvmd_2epath" {
		t.Errorf("got %s", got)
	}
	if got := unitObjectPath("hyper2kvm-job-a.service"); got != "/org/freedesktop/systemd1/unit/hyper2kvm_2djob_2da_2eservice" {
		t.Errorf("got %s", got)
	}
}

func apiOpts() apitype.SubmitOptions { return apitype.SubmitOptions{} }

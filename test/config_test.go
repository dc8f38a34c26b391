package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/test/box"
)

// TestConfigTypoFailsFast is issue 18's "a typo in agent.yaml hangs every
// client for 25 s", in a box with the package installed: with
// max_concurent_jobs in agent.yaml, hyperctl status answers at once with
// the line, key and suggestion and exits non-zero, REST answers 503 with
// the message, systemctl status shows the reason; fixing the file makes the
// agent work again (a waiting drop is processed) with no reset-failed; and
// quick restarts of the agent leave the drop folder's path unit active.
func TestConfigTypoFailsFast(t *testing.T) {
	b := relStart(t, box.Options{}, false, "")
	ctx := relCtx(t, 15*time.Minute)
	good := fmt.Sprintf(relAgentYAML, "")

	// What the package's postinst does for the bridge.
	b.WriteFile(t, "/etc/hyper2kvm/api.token", []byte(apiToken+"\n"), 0o640)
	b.MustExec(t, "chown", "root:hyper2kvm", "/etc/hyper2kvm/api.token")
	b.MustExec(t, "systemctl", "start", "hyper2kvm-api.socket")
	sock := b.Path(apiSocket)
	web := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}

	if out, err := b.hyperctl(ctx, "", "status"); err != nil {
		t.Fatalf("hyperctl status with a good configuration: %v\n%s", err, out)
	}

	// The typo, as the issue had it; the agent stopped, so that the next
	// call starts it through D-Bus activation.
	b.WriteFile(t, "/etc/hyper2kvm/agent.yaml", []byte("max_concurent_jobs: 2\n"), 0o644)
	b.MustExec(t, "systemctl", "stop", "hyper2kvmd.service")

	start := time.Now()
	out, _, _ := b.Exec(ctx, "sh", "-c", "hyperctl --no-ask-password status 2>&1; echo \"exit=$?\"")
	took := time.Since(start)
	t.Logf("hyperctl status with a typo in agent.yaml answered in %s:\n%s", took.Round(time.Millisecond), out)
	for _, want := range []string{"/etc/hyper2kvm/agent.yaml", "line 1", `"max_concurent_jobs"`, `did you mean "max_concurrent_jobs"`} {
		if !strings.Contains(out, want) {
			t.Errorf("hyperctl status does not say %q:\n%s\nagent log:\n%s", want, out, b.Journal(ctx, "-u", "hyper2kvmd.service", "-n", "30"))
		}
	}
	if strings.Contains(out, "exit=0") {
		t.Errorf("hyperctl status exited 0 with a broken configuration:\n%s", out)
	}
	// D-Bus activation gives up after 25 s; the answer must come from the
	// agent, well before.
	if took > 10*time.Second {
		t.Errorf("hyperctl status took %s: the client waited on activation instead of the agent's answer", took)
	}
	// A drop while the agent is misconfigured waits for the fix. (Before,
	// the agent's restarts with the drop waiting used up its start limit and
	// left hyper2kvmd.path failed: the drop was never taken.)
	b.drop("", "afterfix.json", relManifest("afterfix", "/srv/src/disk.raw", "raw", ""))

	// Every other command says the same.
	if out, err := b.hyperctl(ctx, "", "jobs"); err == nil || !strings.Contains(out, "did you mean") {
		t.Errorf("hyperctl jobs with a broken configuration: %v\n%s", err, out)
	}

	// REST.
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://hyper2kvm/api/workflow/status", nil)
	start = time.Now()
	resp, err := web.Do(req)
	if err != nil {
		t.Fatalf("GET /api/workflow/status: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("REST status answered %d in %s: %s", resp.StatusCode, time.Since(start).Round(time.Millisecond), body)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "config-invalid") ||
		!strings.Contains(string(body), "max_concurent_jobs") || !strings.Contains(string(body), "did you mean") {
		t.Errorf("REST status answered %d %s, want 503 config-invalid with the key and the suggestion", resp.StatusCode, body)
	}

	// systemctl status: the unit's status line carries the reason.
	if st := b.show("hyper2kvmd.service", "StatusText"); !strings.Contains(st, "configuration error") || !strings.Contains(st, "max_concurent_jobs") {
		status, _, _ := b.Exec(ctx, "systemctl", "status", "--no-pager", "hyper2kvmd.service")
		t.Errorf("hyper2kvmd.service StatusText = %q, want the configuration error\n%s", st, status)
	}
	status, _, _ := b.Exec(ctx, "systemctl", "status", "--no-pager", "-n", "0", "hyper2kvmd.service")
	t.Logf("systemctl status hyper2kvmd:\n%s", status)

	if units := b.jobUnits(); len(units) != 0 {
		t.Errorf("a misconfigured agent started job units: %v", units)
	}

	// The fix, as an editor saves it: the agent restarts by itself and
	// takes the waiting drop; nobody runs reset-failed.
	b.WriteFile(t, "/etc/hyper2kvm/agent.yaml.new", []byte(good), 0o644)
	b.MustExec(t, "mv", "/etc/hyper2kvm/agent.yaml.new", "/etc/hyper2kvm/agent.yaml")
	fixCtx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	if dir, rep := b.waitSettled(fixCtx, "afterfix.json"); dir != "processed" {
		t.Errorf("the drop waiting for the fix settled in %s: %v", dir, rep)
	}
	if out, err := b.hyperctl(ctx, "", "status"); err != nil || !strings.Contains(out, "watched (hyper2kvmd.path") {
		t.Errorf("hyperctl status after the fix: %v\n%s", err, out)
	}

	// An admin starts and restarts the agent a few times in quick
	// succession: the drop folder must keep working.
	b.MustExec(t, "systemctl", "stop", "hyper2kvmd.service")
	b.MustExec(t, "systemctl", "start", "hyper2kvmd.service")
	for i := 0; i < 5; i++ {
		if _, stderr, err := b.Exec(ctx, "systemctl", "restart", "hyper2kvmd.service"); err != nil {
			t.Errorf("restart %d: %v: %s", i+1, err, stderr)
		}
	}
	if st := b.show("hyper2kvmd.path", "ActiveState"); st != "active" {
		t.Errorf("hyper2kvmd.path is %s (%s) after quick restarts of the agent", st, b.show("hyper2kvmd.path", "Result"))
	}
	b.drop("", "afterrestarts.json", relManifest("afterrestarts", "/srv/src/disk.raw", "raw", ""))
	dropCtx, cancel2 := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel2()
	if dir, rep := b.waitSettled(dropCtx, "afterrestarts.json"); dir != "processed" {
		t.Errorf("the drop after the restarts settled in %s: %v", dir, rep)
	}
	if st := b.show("hyper2kvmd.path", "ActiveState"); st != "active" {
		t.Errorf("hyper2kvmd.path is %s (%s) after a drop following quick restarts", st, b.show("hyper2kvmd.path", "Result"))
	}

	// When the path unit does not watch, status says so and what to do.
	b.MustExec(t, "systemctl", "stop", "hyper2kvmd.path")
	if out, _ := b.hyperctl(ctx, "", "status"); !strings.Contains(out, "not watched: hyper2kvmd.path is inactive") {
		t.Errorf("hyperctl status with hyper2kvmd.path stopped does not say the drop folder is not watched:\n%s", out)
	}
}

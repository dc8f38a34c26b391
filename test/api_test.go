package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/test/box"
)

const (
	apiToken   = "e2e-bridge-token-0123456789"
	apiSocket  = "/run/hyper2kvm/api.sock"
	apiGateDir = "/srv/apigate"
)

// apiAgentYAML keeps the e2e jobs independent of a guest OS (FIX, INSPECT
// and VALIDATE off unless the manifest says otherwise) and runs the real
// worker through a gate, so a job can be held running long enough to be
// cancelled.
const apiAgentYAML = `max_concurrent_jobs: 2
stable_time: 200ms
worker_path: /srv/apigate/worker
`

const apiGateWorker = `#!/bin/sh
while [ ! -e /srv/apigate/open ]; do sleep 0.1; done
exec /usr/bin/hyper2kvmd "$@"
`

// bridgeBox is a box with the project installed as a package would be,
// hyper2kvm-api.socket listening, the bridge's token in place, and an HTTP
// client that reaches the bridge through its Unix socket from the host.
type bridgeBox struct {
	*box.Box
	t    *testing.T
	http *http.Client
}

func startBridgeBox(t *testing.T) *bridgeBox {
	t.Helper()
	b := box.Start(t, box.Options{
		Install: true,
		Users:   []string{"alice", "bob"},
		Groups:  map[string][]string{"hyper2kvm": {"bob"}},
		Files: map[string]string{
			"/etc/hyper2kvm/agent.yaml": apiAgentYAML,
			apiGateDir + "/worker":      apiGateWorker,
		},
	})
	bb := &bridgeBox{Box: b, t: t}
	b.MustExec(t, "chmod", "0755", apiGateDir+"/worker")
	// What the package's postinst does: a random token, readable by group
	// hyper2kvm only.
	b.WriteFile(t, "/etc/hyper2kvm/api.token", []byte(apiToken+"\n"), 0o640)
	b.MustExec(t, "chown", "root:hyper2kvm", "/etc/hyper2kvm/api.token")
	b.MustExec(t, "mkdir", "-p", "/srv/vms")
	b.MustExec(t, "qemu-img", "create", "-q", "-f", "raw", "/srv/vms/web01.img", "32M")
	b.MustExec(t, "chmod", "-R", "a+rX", "/srv/vms")
	b.MustExec(t, "systemctl", "start", "hyper2kvm-api.socket")
	sock := b.Path(apiSocket)
	bb.http = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
	return bb
}

func (b *bridgeBox) ctx(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	b.t.Cleanup(cancel)
	return ctx
}

// call makes one request to the bridge over its Unix socket.
func (b *bridgeBox) call(t *testing.T, method, path, body, tok string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(b.ctx(2*time.Minute), method, "http://hyper2kvm"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := b.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v\nbridge log:\n%s", method, path, err, b.Journal(b.ctx(time.Minute), "-u", "hyper2kvm-api.service", "-n", "40"))
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, data
}

// jsonCall is call that expects status and decodes the JSON answer.
func (b *bridgeBox) jsonCall(t *testing.T, method, path, body, tok string, status int) map[string]any {
	t.Helper()
	got, _, data := b.call(t, method, path, body, tok)
	if got != status {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, got, status, data)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s %s: not JSON: %v: %s", method, path, err, data)
	}
	return m
}

// errorCode checks the error shape and returns error.code.
func errorCode(t *testing.T, m map[string]any) string {
	t.Helper()
	e, ok := m["error"].(map[string]any)
	if !ok || e["message"] == "" || e["details"] == nil {
		t.Fatalf("not an error answer: %v", m)
	}
	return e["code"].(string)
}

// curlIn runs curl inside the box (its loopback is the box's own) as user
// ("" for root) and returns the HTTP status curl saw.
func (b *bridgeBox) curlIn(t *testing.T, user string, args ...string) (string, error) {
	t.Helper()
	cmd := append([]string{"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "60"}, args...)
	var out string
	var err error
	if user == "" {
		out, _, err = b.Exec(b.ctx(2*time.Minute), cmd...)
	} else {
		out, _, err = b.ExecAs(b.ctx(2*time.Minute), user, cmd...)
	}
	return strings.TrimSpace(out), err
}

func apiManifest(name, source string) string {
	return fmt.Sprintf(`{"version":"1.0","name":%q,"pipeline":{"load":{"source_type":"raw","source_path":%q},`+
		`"inspect":{"enabled":false},"fix":{"enabled":false},"convert":{"output_format":"qcow2"},"validate":{"enabled":false}}}`, name, source)
}

// waitJob polls the bridge until job id is in one of states.
func (b *bridgeBox) waitJob(t *testing.T, id string, states ...string) map[string]any {
	t.Helper()
	var j map[string]any
	err := b.WaitFor(b.ctx(5*time.Minute), "job "+id+" to be "+strings.Join(states, "|"), func() (bool, error) {
		code, _, data := b.call(t, "GET", "/api/workflow/jobs/"+id, "", "")
		if code != 200 {
			return false, fmt.Errorf("status %d: %s", code, data)
		}
		j = nil
		if err := json.Unmarshal(data, &j); err != nil {
			return false, err
		}
		for _, s := range states {
			if j["status"] == s {
				return true, nil
			}
		}
		switch j["status"] {
		case "completed", "failed", "cancelled":
			return false, fmt.Errorf("it ended %s", j["status"])
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("%v; last: %v\nagent log:\n%s\njob log:\n%s", err, j,
			b.Journal(b.ctx(time.Minute), "-u", "hyper2kvmd.service", "-n", "40"),
			b.Journal(b.ctx(time.Minute), "-u", "hyper2kvm-job-"+id+".service", "-n", "40"))
	}
	return j
}

// TestAPIBridge runs every endpoint of the bridge against the real agent in
// the real-systemd box, through hyper2kvm-api.socket as installed: socket
// activation, the unprivileged service user, the token, polkit rights over
// D-Bus, the journal, and exit-on-idle with re-activation.
func TestAPIBridge(t *testing.T) {
	b := startBridgeBox(t)

	t.Run("units", func(t *testing.T) {
		if out, stderr, err := b.Exec(b.ctx(time.Minute), "systemd-analyze", "verify", "hyper2kvm-api.socket", "hyper2kvm-api.service"); err != nil {
			t.Errorf("systemd-analyze verify: %v\n%s%s", err, out, stderr)
		}
		if got := strings.TrimSpace(b.MustExec(t, "stat", "-c", "%a %U %G", apiSocket)); got != "660 root hyper2kvm" {
			t.Errorf("socket %s is %q, want 660 root hyper2kvm", apiSocket, got)
		}
	})

	t.Run("health starts the bridge by socket activation as hyper2kvm-api", func(t *testing.T) {
		m := b.jsonCall(t, "GET", "/health", "", "", 200)
		if m["status"] != "ok" || m["agent_version"] == "" {
			t.Errorf("health: %v", m)
		}
		if st := strings.TrimSpace(b.MustExec(t, "systemctl", "is-active", "hyper2kvm-api.service")); st != "active" {
			t.Errorf("hyper2kvm-api.service is %s after a request", st)
		}
		pid := strings.TrimSpace(b.MustExec(t, "systemctl", "show", "-p", "MainPID", "--value", "hyper2kvm-api.service"))
		if user := strings.TrimSpace(b.MustExec(t, "ps", "-o", "user=", "-p", pid)); user != "hyper2kvm-api" {
			t.Errorf("the bridge runs as %q", user)
		}
	})

	t.Run("stopping the service leaves the socket listening", func(t *testing.T) {
		// As systemd's own socket-activated services: the next request
		// starts the bridge again.
		b.jsonCall(t, "GET", "/health", "", "", 200)
		b.MustExec(t, "systemctl", "stop", "hyper2kvm-api.service")
		if st := strings.TrimSpace(b.MustExec(t, "systemctl", "show", "-p", "ActiveState", "--value", "hyper2kvm-api.socket")); st != "active" {
			t.Fatalf("hyper2kvm-api.socket is %s after stopping the service", st)
		}
		if code, err := b.curlIn(t, "alice", "http://127.0.0.1:8080/health"); code != "200" {
			t.Errorf("after stopping the service, /health answers %s %v", code, err)
		}
	})

	t.Run("status", func(t *testing.T) {
		m := b.jsonCall(t, "GET", "/api/workflow/status", "", "", 200)
		for _, k := range []string{"mode", "running", "queue_depth", "active_jobs", "processed_today", "failed_today", "max_workers", "uptime_seconds", "version"} {
			if _, ok := m[k]; !ok {
				t.Errorf("status lacks %q: %v", k, m)
			}
		}
		if m["mode"] != "manifest" || m["max_workers"] != 2.0 || m["running"] != true {
			t.Errorf("status does not match the agent's config (max_concurrent_jobs 2): %v", m)
		}
	})

	t.Run("reads on loopback TCP, writes need the token", func(t *testing.T) {
		if code, err := b.curlIn(t, "alice", "http://127.0.0.1:8080/api/workflow/status"); code != "200" {
			t.Errorf("alice reading status on 127.0.0.1:8080: %s %v", code, err)
		}
		if code, _ := b.curlIn(t, "alice", "-X", "POST", "--data-binary", apiManifest("x", "/srv/vms/web01.img"), "http://127.0.0.1:8080/api/workflow/manifest/submit"); code != "401" {
			t.Errorf("submit without token on TCP: %s, want 401", code)
		}
		if code, _ := b.curlIn(t, "alice", "-H", "Host: evil.example", "http://127.0.0.1:8080/api/workflow/status"); code != "403" {
			t.Errorf("a foreign Host header (DNS rebinding): %s, want 403", code)
		}
		for _, tok := range []string{"", "wrong"} {
			m := b.jsonCall(t, "POST", "/api/workflow/manifest/submit", apiManifest("x", "/srv/vms/web01.img"), tok, 401)
			if errorCode(t, m) != "unauthorized" {
				t.Errorf("token %q: %v", tok, m)
			}
		}
		// The Unix socket is for root and group hyper2kvm only.
		if code, _ := b.curlIn(t, "alice", "--unix-socket", apiSocket, "http://x/health"); code == "200" {
			t.Error("alice (not in group hyper2kvm) could use the Unix socket")
		}
		if code, err := b.curlIn(t, "bob", "--unix-socket", apiSocket, "http://x/api/workflow/status"); code != "200" {
			t.Errorf("bob (group hyper2kvm) on the Unix socket: %s %v", code, err)
		}
		// Nobody but root and the group reads the token.
		if _, _, err := b.ExecAs(b.ctx(time.Minute), "alice", "cat", "/etc/hyper2kvm/api.token"); err == nil {
			t.Error("alice can read the token")
		}
	})

	t.Run("validate", func(t *testing.T) {
		m := b.jsonCall(t, "POST", "/api/workflow/manifest/validate", apiManifest("web01", "/srv/vms/web01.img"), "", 200)
		if m["valid"] != true || len(m["errors"].([]any)) != 0 {
			t.Errorf("valid manifest: %v", m)
		}
		m = b.jsonCall(t, "POST", "/api/workflow/manifest/validate", `{"version":"1.0","name":"x","pipeline":{"load":{"source_type":"floppy","source_path":"/srv/vms/web01.img"}}}`, "", 200)
		errs, _ := m["errors"].([]any)
		if m["valid"] != false || len(errs) == 0 || !strings.HasPrefix(errs[0].(string), "pipeline.load.source_type") {
			t.Errorf("invalid manifest: %v", m)
		}
		// Valid means submit accepts it: the files are checked as the
		// caller (here the bridge's user), one problem for each fault.
		b.MustExec(t, "install", "-m", "0600", "/srv/vms/web01.img", "/srv/vms/private.img")
		for src, want := range map[string]string{
			"/srv/vms/gone.img":    "/srv/vms/gone.img does not exist",
			"/srv/vms/private.img": "the submitter cannot read it",
		} {
			m = b.jsonCall(t, "POST", "/api/workflow/manifest/validate", apiManifest("x", src), "", 200)
			errs, _ = m["errors"].([]any)
			if m["valid"] != false || len(errs) != 1 || !strings.HasPrefix(errs[0].(string), "pipeline.load.source_path: ") || !strings.Contains(errs[0].(string), want) {
				t.Errorf("validate %s over REST: %v; want one problem at pipeline.load.source_path: %s", src, m, want)
			}
		}
		// Over D-Bus as alice, the same.
		out, stderr, err := b.ExecAs(b.ctx(time.Minute), "alice", "busctl", "--system", "--json=short", "call", "io.hyper2kvm.Agent1", "/io/hyper2kvm/Agent1",
			"io.hyper2kvm.Agent1.Manager", "Validate", "s", apiManifest("x", "/srv/vms/private.img"))
		if err != nil || !strings.Contains(out, "false") || !strings.Contains(out, "pipeline.load.source_path: the submitter cannot read it") {
			t.Errorf("Validate over D-Bus as alice of a file she cannot read: %v %s %s", err, out, stderr)
		}
		m = b.jsonCall(t, "POST", "/api/workflow/manifest/validate", `{"version": "1.0",`, "", 400)
		if errorCode(t, m) != "bad-request" {
			t.Errorf("broken JSON: %v", m)
		}
		// A body over the limit, sent the way a user would (curl reads the
		// early answer; Go's client reports the closed connection instead).
		b.WriteFile(t, "/srv/big.json", []byte(`{"version":"1.0","name":"`+strings.Repeat("x", 2<<20)+`"}`), 0o644)
		if code, err := b.curlIn(t, "", "--unix-socket", apiSocket, "-X", "POST", "--data-binary", "@/srv/big.json", "http://x/api/workflow/manifest/validate"); code != "413" {
			t.Errorf("2 MiB body: %s %v, want 413", code, err)
		}
	})

	t.Run("errors", func(t *testing.T) {
		m := b.jsonCall(t, "POST", "/api/workflow/manifest/submit", `{"version":"1.0","name":"bad","pipeline":{"load":{"source_type":"raw"}}}`, apiToken, 422)
		d, _ := m["error"].(map[string]any)["details"].([]any)
		if errorCode(t, m) != "invalid-manifest" || len(d) == 0 || !strings.Contains(fmt.Sprint(d), "pipeline.load.source_path") {
			t.Errorf("invalid submit: %v", m)
		}
		if m := b.jsonCall(t, "POST", "/api/workflow/manifest/submit?name=..%2F..%2Fetc%2Fcron.d%2Fx.json", apiManifest("x", "/srv/vms/web01.img"), apiToken, 400); errorCode(t, m) != "invalid-args" {
			t.Errorf("a queue name with ../: %v", m)
		}
		if m := b.jsonCall(t, "GET", "/api/workflow/jobs/no-such-job", "", "", 404); errorCode(t, m) != "no-such-job" {
			t.Errorf("unknown job: %v", m)
		}
		if m := b.jsonCall(t, "POST", "/api/workflow/jobs/no-such-job/cancel", "", apiToken, 404); errorCode(t, m) != "no-such-job" {
			t.Errorf("cancel unknown job: %v", m)
		}
		if m := b.jsonCall(t, "DELETE", "/api/workflow/status", "", apiToken, 405); errorCode(t, m) != "method-not-allowed" {
			t.Errorf("DELETE status: %v", m)
		}
		if m := b.jsonCall(t, "GET", "/api/workflow/jobs?status=bogus", "", "", 400); errorCode(t, m) != "invalid-args" {
			t.Errorf("bad filter: %v", m)
		}
		// No path outside the API reaches a file.
		for _, p := range []string{"/../../etc/passwd", "/api/workflow/jobs/..%2F..%2Fetc%2Fpasswd/log", "/%2e%2e/%2e%2e/etc/hyper2kvm/api.token"} {
			code, _, data := b.call(t, "GET", p, "", "")
			if strings.Contains(string(data), "root:x:0:0") || strings.Contains(string(data), apiToken) {
				t.Errorf("GET %s leaked a file (%d)", p, code)
			}
		}
	})

	t.Run("cancel a running job", func(t *testing.T) {
		m := b.jsonCall(t, "POST", "/api/workflow/manifest/submit", apiManifest("held01", "/srv/vms/web01.img"), apiToken, 202)
		id := m["job_id"].(string)
		b.waitJob(t, id, "running")
		m = b.jsonCall(t, "POST", "/api/workflow/jobs/"+id+"/cancel", "", apiToken, 202)
		if m["success"] != true || m["job_id"] != id {
			t.Errorf("cancel: %v", m)
		}
		j := b.waitJob(t, id, "cancelled")
		if j["finished_at"] == nil {
			t.Errorf("cancelled job has no finished_at: %v", j)
		}
		if m := b.jsonCall(t, "POST", "/api/workflow/jobs/"+id+"/cancel", "", apiToken, 409); errorCode(t, m) != "invalid-state" {
			t.Errorf("second cancel: %v", m)
		}
		// The shipped rules grant the bridge's user every action (the
		// bridge demands the token): retry works out of the box.
		m = b.jsonCall(t, "POST", "/api/workflow/jobs/"+id+"/retry", "", apiToken, 202)
		newID, _ := m["job_id"].(string)
		if newID == "" || newID == id {
			t.Fatalf("retry: %v", m)
		}
		// the new job waits behind the gate; it runs once the gate opens
		t.Logf("job %s cancelled, retried as %s", id, newID)
	})

	// The fleet's controls through REST, against the real agent: the
	// queue drained and paused as hyperctl queue would (status and hosts
	// say so), a pending job reprioritized ahead of older ones (it starts
	// first once the queue resumes), and the schedules listed with their
	// next firing.
	t.Run("queue control, priority and schedules", func(t *testing.T) {
		queue := func(action, want string) {
			t.Helper()
			if m := b.jsonCall(t, "POST", "/api/workflow/queue/"+action, "", "", 401); errorCode(t, m) != "unauthorized" {
				t.Errorf("%s without the token: %v", action, m)
			}
			if m := b.jsonCall(t, "POST", "/api/workflow/queue/"+action, "", apiToken, 200); m["queue"] != want {
				t.Errorf("%s: %v", action, m)
			}
			if st := b.jsonCall(t, "GET", "/api/workflow/status", "", "", 200); st["queue"] != want {
				t.Errorf("after %s the status says queue %v, want %s", action, st["queue"], want)
			}
			hs := b.jsonCall(t, "GET", "/api/workflow/hosts", "", "", 200)
			if l, _ := hs["hosts"].([]any); len(l) != 1 || l[0].(map[string]any)["queue"] != want {
				t.Errorf("after %s the hosts say %v, want queue %s", action, hs, want)
			}
		}
		queue("drain", "draining")
		queue("pause", "paused")

		// Paused: submitted jobs wait. The newest, moved to priority 50,
		// starts before the two older ones once the queue resumes (one
		// worker slot is free or two: the retried job of the previous
		// subtest holds one, or, not started yet, is older and runs too).
		var ids []string
		for _, n := range []string{"prio-a", "prio-b", "prio-c"} {
			m := b.jsonCall(t, "POST", "/api/workflow/manifest/submit", apiManifest(n, "/srv/vms/web01.img"), apiToken, 202)
			ids = append(ids, m["job_id"].(string))
		}
		t.Cleanup(func() {
			for _, id := range ids {
				b.call(t, "POST", "/api/workflow/jobs/"+id+"/cancel", "", apiToken)
			}
		})
		c := ids[2]
		if m := b.jsonCall(t, "POST", "/api/workflow/jobs/"+c+"/priority", `{"priority": 50}`, "", 401); errorCode(t, m) != "unauthorized" {
			t.Errorf("priority without the token: %v", m)
		}
		if m := b.jsonCall(t, "POST", "/api/workflow/jobs/"+c+"/priority", `{"priority": 500}`, apiToken, 400); errorCode(t, m) != "invalid-args" {
			t.Errorf("priority 500: %v", m)
		}
		m := b.jsonCall(t, "POST", "/api/workflow/jobs/"+c+"/priority", `{"priority": 50}`, apiToken, 200)
		if j, _ := m["job"].(map[string]any); m["success"] != true || j["priority"] != 50.0 || j["status"] != "pending" {
			t.Fatalf("priority 50: %v", m)
		}
		queue("resume", "running")
		b.waitJob(t, c, "running")
		if j := b.jsonCall(t, "GET", "/api/workflow/jobs/"+ids[0], "", "", 200); j["status"] != "pending" {
			t.Errorf("the oldest job, priority 0, is %v while the reprioritized one runs; want it still pending", j["status"])
		}
		if m := b.jsonCall(t, "POST", "/api/workflow/jobs/"+c+"/priority", `{"priority": 10}`, apiToken, 409); errorCode(t, m) != "invalid-state" {
			t.Errorf("priority of a running job: %v", m)
		}
		for _, id := range ids {
			b.call(t, "POST", "/api/workflow/jobs/"+id+"/cancel", "", apiToken)
		}
		for _, id := range ids {
			b.waitJob(t, id, "cancelled")
		}

		// A job waiting for its window says so, and until when.
		later := strings.Replace(apiManifest("prio-later", "/srv/vms/web01.img"), `{"version":"1.0",`,
			`{"version":"1.0","schedule":{"not_before":"2099-01-01T00:00:00Z"},`, 1)
		lid := b.jsonCall(t, "POST", "/api/workflow/manifest/submit", later, apiToken, 202)["job_id"].(string)
		var note string
		if err := b.WaitFor(b.ctx(time.Minute), "the window note", func() (bool, error) {
			j := b.jsonCall(t, "GET", "/api/workflow/jobs/"+lid, "", "", 200)
			note, _ = j["status_text"].(string)
			return j["status"] == "pending" && note != "", nil
		}); err != nil || note != "waiting for its window: starts no earlier than 2099-01-01T00:00:00Z (schedule.not_before)" {
			t.Errorf("a job waiting for its window says %q (%v)", note, err)
		}
		b.jsonCall(t, "POST", "/api/workflow/jobs/"+lid+"/cancel", "", apiToken, 202)
		b.waitJob(t, lid, "cancelled")

		// Read at each call: a file written now is listed at once.
		b.WriteFile(t, "/etc/hyper2kvm/schedules.d/nightly.yaml", []byte("cron: '0 3 * * *'\nmanifest: /srv/vms/nightly.json\n"), 0o644)
		sm := b.jsonCall(t, "GET", "/api/workflow/schedules", "", "", 200)
		l, _ := sm["schedules"].([]any)
		if len(l) != 1 {
			t.Fatalf("schedules: %v", sm)
		}
		s0 := l[0].(map[string]any)
		next, err := time.Parse(time.RFC3339, fmt.Sprint(s0["next_run"]))
		if s0["name"] != "nightly" || s0["cron"] != "0 3 * * *" || err != nil || !next.After(time.Now()) || next.UTC().Minute() != 0 {
			t.Errorf("schedules: %v (next_run: %v)", sm, err)
		}
	})

	t.Run("submit, watch and finish", func(t *testing.T) {
		// Subscribe first, as a dashboard does.
		ctx := b.ctx(5 * time.Minute)
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://hyper2kvm/api/workflow/events", nil)
		stream := &http.Client{Transport: b.http.Transport}
		resp, err := stream.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("events: %d %v", resp.StatusCode, resp.Header)
		}
		events := make(chan map[string]any, 256)
		go func() {
			defer close(events)
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
					var ev map[string]any
					if json.Unmarshal([]byte(d), &ev) == nil {
						events <- ev
					}
				}
			}
		}()

		m := b.jsonCall(t, "POST", "/api/workflow/manifest/submit", apiManifest("web01", "/srv/vms/web01.img"), apiToken, 202)
		id, _ := m["job_id"].(string)
		if m["success"] != true || id == "" || !strings.HasSuffix(fmt.Sprint(m["manifest_path"]), ".json") {
			t.Fatalf("submit: %v", m)
		}
		b.MustExec(t, "touch", apiGateDir+"/open")

		// The stream reports the job, then its progress, then its end.
		sawNew, sawDone := false, false
		for !sawDone {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatal("the event stream ended")
				}
				j, _ := ev["job"].(map[string]any)
				if j["id"] != id {
					continue
				}
				sawNew = sawNew || ev["type"] == "job-new" || ev["type"] == "job-changed"
				sawDone = j["status"] == "completed" || j["status"] == "failed"
			case <-ctx.Done():
				t.Fatalf("no completion event for %s", id)
			}
		}
		if !sawNew {
			t.Error("no event before the end")
		}
		j := b.waitJob(t, id, "completed")
		outs, _ := j["outputs"].([]any)
		if len(outs) == 0 || j["finished_at"] == nil || j["started_at"] == nil || j["elapsed_seconds"].(float64) <= 0 || j["progress"] != 100.0 {
			t.Errorf("completed job: %v", j)
		}
		for _, o := range outs {
			if _, _, err := b.Exec(ctx, "test", "-s", o.(string)); err != nil {
				t.Errorf("output %v is missing", o)
			}
		}

		list := b.jsonCall(t, "GET", "/api/workflow/jobs?status=completed", "", "", 200)
		if !strings.Contains(fmt.Sprint(list["jobs"]), id) || list["total"].(float64) < 1 {
			t.Errorf("completed list lacks %s: %v", id, list)
		}
		active := b.jsonCall(t, "GET", "/api/workflow/jobs/active", "", "", 200)
		if strings.Contains(fmt.Sprint(active["jobs"]), id) {
			t.Errorf("the finished job is still active: %v", active)
		}
		st := b.jsonCall(t, "GET", "/api/workflow/status", "", "", 200)
		if st["processed_today"].(float64) < 1 {
			t.Errorf("processed_today after a completed job: %v", st)
		}

		// Its log, read by the bridge's user from the journal.
		code, _, text := b.call(t, "GET", "/api/workflow/jobs/"+id+"/log", "", "")
		if code != 200 || !strings.Contains(string(text), "hyper2kvm") {
			t.Errorf("log: %d %s", code, text)
		}
		lm := b.jsonCall(t, "GET", "/api/workflow/jobs/"+id+"/log?format=json", "", "", 200)
		if e, _ := lm["entries"].([]any); len(e) == 0 {
			t.Errorf("log entries: %v", lm)
		}

		if m := b.jsonCall(t, "POST", "/api/workflow/jobs/"+id+"/retry", "", apiToken, 409); errorCode(t, m) != "invalid-state" {
			t.Errorf("retry of a completed job: %v", m)
		}
	})

	t.Run("metrics and dashboard", func(t *testing.T) {
		code, h, data := b.call(t, "GET", "/metrics", "", "")
		text := string(data)
		if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") ||
			!strings.Contains(text, `hyper2kvm_jobs{state="completed"}`) || !strings.Contains(text, "hyper2kvm_queue_depth ") ||
			!strings.Contains(text, "hyper2kvm_converted_bytes_total ") || !strings.Contains(text, `hyper2kvm_stage_duration_seconds_sum{stage="convert"}`) {
			t.Errorf("metrics: %d\n%s", code, text)
		}
		if strings.Contains(text, `hyper2kvm_jobs{state="completed"} 0`) {
			t.Errorf("metrics count no completed job:\n%s", text)
		}
		// The stage durations and converted bytes come from what the agent
		// kept of the worker's report when the job ended (GetMetrics).
		if strings.Contains(text, "hyper2kvm_converted_bytes_total 0\n") {
			t.Errorf("a completed conversion counts no converted bytes:\n%s", text)
		}
		if !strings.Contains(text, "hyper2kvm_jobs_with_stage_times ") || strings.Contains(text, "hyper2kvm_jobs_with_stage_times 0\n") ||
			strings.Contains(text, `hyper2kvm_stage_duration_seconds_count{stage="convert"} 0`) {
			t.Errorf("the agent kept no stage times of the finished job:\n%s", text)
		}
		code, _, data = b.call(t, "GET", "/", "", "")
		if code != 200 || !strings.Contains(string(data), "hyper2kvm") {
			t.Errorf("dashboard: %d", code)
		}
		if m := b.jsonCall(t, "GET", "/api/workflow/schema", "", "", 200); m["$schema"] == nil && m["type"] == nil {
			t.Errorf("schema: %v", m)
		}
	})

	t.Run("exits when idle and comes back on the next request", func(t *testing.T) {
		bin := strings.TrimSpace(b.MustExec(t, "sh", "-c", "command -v hyper2kvmd"))
		b.WriteFile(t, "/etc/systemd/system/hyper2kvm-api.service.d/idle.conf",
			[]byte("[Service]\nExecStart=\nExecStart="+bin+" bridge --idle-timeout=2s\n"), 0o644)
		b.MustExec(t, "systemctl", "daemon-reload")
		b.MustExec(t, "systemctl", "restart", "hyper2kvm-api.service")
		b.jsonCall(t, "GET", "/health", "", "", 200)
		err := b.WaitFor(b.ctx(2*time.Minute), "the bridge to exit when idle", func() (bool, error) {
			out, _, _ := b.Exec(b.ctx(time.Minute), "systemctl", "is-active", "hyper2kvm-api.service")
			return strings.TrimSpace(out) == "inactive", nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if st := strings.TrimSpace(b.MustExec(t, "systemctl", "is-active", "hyper2kvm-api.socket")); st != "active" {
			t.Fatalf("socket after the idle exit: %s", st)
		}
		b.jsonCall(t, "GET", "/api/workflow/status", "", "", 200)
		if res := strings.TrimSpace(b.MustExec(t, "systemctl", "show", "-p", "Result", "--value", "hyper2kvm-api.service")); res != "success" {
			t.Errorf("the idle exit was not clean: Result=%s", res)
		}
	})
}

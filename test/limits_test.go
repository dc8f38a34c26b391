package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/dbusapi"
	"github.com/hyper2kvm/hyper2kvm/test/box"
)

// Issue 16, item 4: memory exhaustion by any local user. 300 connections
// each POSTing about 1 MiB to /api/workflow/manifest/validate (no token
// needed) got the bridge OOM-killed five times in 4 s; a D-Bus Validate of
// a 4 MiB YAML took the root agent to 434 MiB, four of them to 1.6 GiB.
// Here the same, in a box whose cgroups enforce MemoryMax=: the bridge
// must answer every request (200, 413 or 503 busy), never restart, and the
// agent must refuse the 4 MiB manifests without growing.

// limitsHostile is a syntactically valid YAML batch of about 1 MiB whose
// every VM is invalid: the most work per byte a parser can be given
// without a syntax error (which the bridge would answer 400 itself).
func limitsHostile(size int) []byte {
	var b bytes.Buffer
	b.WriteString("version: '1.0'\nbatch: true\nname: flood\nvms:\n")
	const vm = "- {name: '!', pipeline: {load: {source_type: x, source_path: y}}}\n"
	for b.Len()+len(vm) <= size {
		b.WriteString(vm)
	}
	return b.Bytes()
}

// limitsAliasYAML is the YAML of the issue: a batch whose vms are all
// aliases of one map holding a long name.
func limitsAliasYAML(size int) string {
	var b strings.Builder
	b.WriteString("version: '1.0'\nbatch: true\nname: bomb\nbase: &vm\n  name: ")
	b.WriteString(strings.Repeat("n", size-200000))
	b.WriteString("\n  pipeline: {load: {source_type: raw, source_path: /a}}\nvms:\n")
	for b.Len() < size-8 {
		b.WriteString("  - *vm\n")
	}
	return b.String()
}

// vmHWM is the peak resident memory (VmHWM, bytes) of unit's main process.
func vmHWM(t *testing.T, b *box.Box, unit string) (pid string, hwm int64) {
	t.Helper()
	pid = strings.TrimSpace(b.MustExec(t, "systemctl", "show", "-p", "MainPID", "--value", unit))
	if pid == "" || pid == "0" {
		t.Fatalf("%s has no main process", unit)
	}
	status := b.MustExec(t, "cat", "/proc/"+pid+"/status")
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM of %s: %q", unit, line)
			}
			return pid, kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%s/status", pid)
	return "", 0
}

func TestLimitsMemoryExhaustion(t *testing.T) {
	b := box.Start(t, box.Options{
		Install:         true,
		WritableCgroups: true, // so that MemoryMax= bites, as on a real machine
		Files: map[string]string{
			"/etc/hyper2kvm/agent.yaml": "stable_time: 200ms\n",
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b.WriteFile(t, "/etc/hyper2kvm/api.token", []byte(apiToken+"\n"), 0o640)
	b.MustExec(t, "chown", "root:hyper2kvm", "/etc/hyper2kvm/api.token")
	b.MustExec(t, "systemctl", "start", "hyper2kvm-api.socket")

	// The limits the units carry, as a user reads them.
	for _, tc := range []struct{ unit, prop, want string }{
		{"hyper2kvmd.service", "MemoryMax", strconv.Itoa(1 << 30)},
		{"hyper2kvmd.service", "MemoryHigh", strconv.Itoa(768 << 20)},
		{"hyper2kvm-api.service", "MemoryMax", strconv.Itoa(256 << 20)},
		{"hyper2kvm-api.service", "MemoryHigh", strconv.Itoa(192 << 20)},
	} {
		if got := strings.TrimSpace(b.MustExec(t, "systemctl", "show", "-p", tc.prop, "--value", tc.unit)); got != tc.want {
			t.Errorf("%s %s=%s, want %s", tc.unit, tc.prop, got, tc.want)
		}
	}

	// hyperctl validate of the alias bombs: refused at once, with a
	// short message (it went to 2 GB and "out of memory").
	b.MustExec(t, "useradd", "-m", "alice")
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"bomb-4m.yaml", limitsAliasYAML(3_950_000), "bomb-4m.yaml: manifest is larger than the limit of 1048576 bytes (1 MiB)"},
		{"bomb-1m.yaml", limitsAliasYAML(1_000_000), "line 4: YAML anchors and aliases are not allowed in a manifest"},
	} {
		b.WriteFile(t, "/tmp/"+tc.name, []byte(tc.yaml), 0o644)
		out, stderr, err := b.ExecAs(ctx, "alice", "hyperctl", "validate", "/tmp/"+tc.name)
		if err == nil || !strings.Contains(stderr, tc.want) || len(out)+len(stderr) > 1024 {
			t.Errorf("hyperctl validate %s: %v, %d bytes out, stderr %.500q; want exit 2 and %q", tc.name, err, len(out), stderr, tc.want)
		}
	}

	sock := b.Path(apiSocket)
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
	post := func(body []byte) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, "POST", "http://localhost/api/workflow/manifest/validate", bytes.NewReader(body))
		if err != nil {
			return 0, "", err
		}
		req.Header.Set("Content-Type", "application/yaml")
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, resp.Header.Get("Retry-After") + " " + string(data), nil
	}

	// Start the bridge (and through it the agent) with one small request.
	if code, body, err := post([]byte(apiManifest("warm", "/srv/none.img"))); err != nil || code != 200 {
		t.Fatalf("first request: %d %s %v\n%s", code, body, err, b.Journal(ctx, "-u", "hyper2kvm-api.service", "-n", "30"))
	}
	bridgePID, _ := vmHWM(t, b, "hyper2kvm-api.service")

	// D-Bus Validate of 4 MiB, four at once, from outside the bridge.
	bus, err := dbusapi.DialAddress(ctx, "unix:path="+b.Path("/run/dbus/system_bus_socket"))
	if err != nil {
		t.Fatalf("cannot reach the box's bus: %v", err)
	}
	defer bus.Close()
	agentPID, before := vmHWM(t, b, "hyper2kvmd.service")
	big := []byte(limitsAliasYAML(4 << 20))
	var dwg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			ok, problems, err := bus.Validate(ctx, big)
			switch {
			case err != nil:
				errs[i] = err
			case ok || len(problems) != 1 || !strings.Contains(problems[0], "larger than the limit of 1048576 bytes"):
				errs[i] = fmt.Errorf("Validate of 4 MiB = %v %.300q", ok, problems)
			}
		}()
	}
	dwg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Error(err)
	}
	pid, after := vmHWM(t, b, "hyper2kvmd.service")
	if pid != agentPID {
		t.Fatalf("the agent changed from PID %s to %s during the calls", agentPID, pid)
	}
	// The message arrives whole (4 MiB, plus godbus's copies); refusing it
	// must not cost more.
	if after-before > 48<<20 || after > 128<<20 {
		t.Errorf("four 4 MiB Validates took the agent's peak RSS from %d to %d MiB", before>>20, after>>20)
	}
	t.Logf("agent peak RSS %d MiB before four 4 MiB Validates, %d MiB after", before>>20, after>>20)

	// The flood.
	body := limitsHostile(1 << 20)
	const clients = 300
	type result struct {
		code int
		msg  string
		err  error
	}
	results := make([]result, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, msg, err := post(body)
			results[i] = result{code, msg, err}
		}()
	}
	wg.Wait()
	counts := map[string]int{}
	for _, r := range results {
		switch {
		case r.err != nil:
			counts["no answer"]++
			if counts["no answer"] == 1 {
				t.Errorf("a request got no answer: %v", r.err)
			}
		case r.code == 200, r.code == 413:
			counts[strconv.Itoa(r.code)]++
		case r.code == 503:
			counts["503"]++
			if !strings.HasPrefix(r.msg, "1 ") || !strings.Contains(r.msg, `"busy"`) {
				t.Errorf("503 without Retry-After or code busy: %.300s", r.msg)
			}
		default:
			counts[strconv.Itoa(r.code)]++
			t.Errorf("answer %d: %.300s", r.code, r.msg)
		}
	}
	if counts["200"] == 0 {
		t.Errorf("no request was served: %v", counts)
	}
	state := strings.TrimSpace(b.MustExec(t, "systemctl", "show", "-p", "ActiveState", "-p", "NRestarts", "-p", "Result", "hyper2kvm-api.service"))
	if !strings.Contains(state, "ActiveState=active") || !strings.Contains(state, "NRestarts=0") || !strings.Contains(state, "Result=success") {
		t.Errorf("the bridge after the flood: %s\n%s", strings.ReplaceAll(state, "\n", " "), b.Journal(ctx, "-u", "hyper2kvm-api.service", "-n", "30"))
	}
	pid, bridgeHWM := vmHWM(t, b, "hyper2kvm-api.service")
	if pid != bridgePID {
		t.Errorf("the bridge was restarted: PID %s, then %s", bridgePID, pid)
	}
	if bridgeHWM >= 256<<20 {
		t.Errorf("the bridge's peak RSS is %d MiB, at its MemoryMax", bridgeHWM>>20)
	}
	t.Logf("flood of %d × %d bytes: %v; bridge peak RSS %d MiB", clients, len(body), counts, bridgeHWM>>20)

	// At the cap a manifest is parsed: a hostile 1 MiB one, four at once,
	// is answered with a bounded list of problems within the agent's limit.
	hostile := limitsHostile(1 << 20)
	errs = make([]error, 4)
	for i := range errs {
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			ok, problems, err := bus.Validate(ctx, hostile)
			switch {
			case err != nil:
				errs[i] = err
			case ok || len(problems) != 101 || !strings.HasSuffix(problems[100], "more problems"):
				errs[i] = fmt.Errorf("Validate of a hostile 1 MiB batch = %v, %d problems", ok, len(problems))
			}
		}()
	}
	dwg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Error(err)
	}
	pid, peak := vmHWM(t, b, "hyper2kvmd.service")
	if pid != agentPID {
		t.Errorf("the agent changed from PID %s to %s", agentPID, pid)
	}
	if peak >= 768<<20 {
		t.Errorf("the agent's peak RSS reached %d MiB, its MemoryHigh", peak>>20)
	}
	state = strings.TrimSpace(b.MustExec(t, "systemctl", "show", "-p", "ActiveState", "-p", "NRestarts", "hyper2kvmd.service"))
	if !strings.Contains(state, "ActiveState=active") || !strings.Contains(state, "NRestarts=0") {
		t.Errorf("the agent: %s", strings.ReplaceAll(state, "\n", " "))
	}
	t.Logf("agent peak RSS %d MiB after four hostile 1 MiB Validates", peak>>20)
}

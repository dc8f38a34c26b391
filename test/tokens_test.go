package test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/test/box"
)

// TestAPITokens: per-user API tokens in the installed package. bob (group
// hyper2kvm) and alice (outside it) each make one with hyperctl; the agent
// keeps only hashes; the REST bridge acts as each token's owner, asking
// polkit as that user: bob's token submits a job that is bob's, alice's
// may not submit and does not see bob's paths; a revoked token is refused;
// the administrator token still works.
func TestAPITokens(t *testing.T) {
	t.Parallel()
	b := box.Start(t, box.Options{
		Install: true,
		Users:   []string{"alice", "bob"},
		Groups:  map[string][]string{"hyper2kvm": {"bob"}},
		Files:   map[string]string{"/etc/hyper2kvm/agent.yaml": apiAgentYAML, apiGateDir + "/worker": apiGateWorker},
	})
	b.MustExec(t, "chmod", "0755", apiGateDir+"/worker")
	b.MustExec(t, "touch", apiGateDir+"/open")
	b.WriteFile(t, "/etc/hyper2kvm/api.token", []byte(apiToken+"\n"), 0o640)
	b.MustExec(t, "chown", "root:hyper2kvm", "/etc/hyper2kvm/api.token")
	b.MustExec(t, "mkdir", "-p", "/srv/vms")
	b.MustExec(t, "qemu-img", "create", "-q", "-f", "raw", "/srv/vms/tok01.img", "16M")
	b.MustExec(t, "chmod", "-R", "a+rX", "/srv/vms")
	b.MustExec(t, "systemctl", "start", "hyper2kvm-api.socket")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	create := func(user string) (tok, id string) {
		out, stderr, err := b.Exec(ctx, "runuser", "-u", user, "--", "hyperctl", "-o", "json", "token", "create", "--name", user+"-laptop")
		var m struct{ ID, Token string }
		if err != nil || json.Unmarshal([]byte(out), &m) != nil || !strings.HasPrefix(m.Token, "h2k_") {
			t.Fatalf("%s: hyperctl token create: %v %s %s", user, err, out, stderr)
		}
		return m.Token, m.ID
	}
	bobTok, bobID := create("bob")
	aliceTok, _ := create("alice")

	// Only hashes, only for root.
	if st := strings.TrimSpace(b.MustExec(t, "stat", "-c", "%a %U", "/var/lib/hyper2kvm/tokens.json")); st != "600 root" {
		t.Errorf("tokens.json is %s, want 600 root", st)
	}
	if data := b.MustExec(t, "cat", "/var/lib/hyper2kvm/tokens.json"); strings.Contains(data, bobTok) || strings.Contains(data, aliceTok) {
		t.Errorf("tokens.json holds a token itself:\n%s", data)
	}
	if out := b.MustExec(t, "runuser", "-u", "bob", "--", "hyperctl", "token", "list"); !strings.Contains(out, bobID) || !strings.Contains(out, "bob-laptop") || strings.Contains(out, "alice") {
		t.Errorf("bob's token list:\n%s", out)
	}

	// curl as alice (any local user can reach loopback TCP; the token is
	// what counts).
	curl := func(tok string, args ...string) (string, string) {
		cmd := append([]string{"runuser", "-u", "alice", "--", "curl", "-sS", "--max-time", "60", "-w", "\n%{http_code}"}, args...)
		if tok != "" {
			cmd = append(cmd, "-H", "Authorization: Bearer "+tok)
		}
		out, _, _ := b.Exec(ctx, cmd...)
		out = strings.TrimRight(out, "\n")
		i := strings.LastIndex(out, "\n")
		return out[i+1:], out[:max(i, 0)]
	}
	api := "http://127.0.0.1:8080/api/workflow"
	if code, body := curl(bobTok, api+"/whoami"); code != "200" || !strings.Contains(body, `"user":"bob"`) {
		t.Errorf("whoami with bob's token: %s %s", code, body)
	}
	bobUID := strings.TrimSpace(b.MustExec(t, "id", "-u", "bob"))
	code, body := curl(bobTok, "-X", "POST", "--data-binary", apiManifest("tok01", "/srv/vms/tok01.img"), api+"/manifest/submit")
	var sub struct {
		JobID string `json:"job_id"`
		Jobs  []struct {
			SubmittedBy int64 `json:"submitted_by"`
		} `json:"jobs"`
	}
	if code != "202" || json.Unmarshal([]byte(body), &sub) != nil || len(sub.Jobs) != 1 || fmt.Sprint(sub.Jobs[0].SubmittedBy) != bobUID {
		t.Fatalf("submit with bob's token: %s %s; want 202 and the job bob's (uid %s)", code, body, bobUID)
	}
	if err := b.WaitFor(ctx, "job "+sub.JobID+" completed", func() (bool, error) {
		_, body := curl(bobTok, api+"/jobs/"+sub.JobID)
		return strings.Contains(body, `"status":"completed"`), nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, body := curl(bobTok, api+"/jobs/"+sub.JobID); !strings.Contains(body, "/var/lib/hyper2kvm/output/") {
		t.Errorf("bob reads his job with his token: %s", body)
	}

	// alice's token: polkit says no to her submit, and she sees no paths
	// of bob's job.
	if code, body := curl(aliceTok, "-X", "POST", "--data-binary", apiManifest("tok02", "/srv/vms/tok01.img"), api+"/manifest/submit"); code != "403" || !strings.Contains(body, "io.hyper2kvm.agent.submit") {
		t.Errorf("submit with alice's token: %s %s, want 403 naming the polkit action", code, body)
	}
	for _, p := range []string{"/jobs/" + sub.JobID, "/jobs?limit=0"} {
		if code, body := curl(aliceTok, api+p); code != "200" || strings.Contains(body, "/var/lib/hyper2kvm") || strings.Contains(body, "/srv/vms") {
			t.Errorf("GET %s with alice's token: %s %s; want 200 without bob's paths", p, code, body)
		}
	}
	if code, _ := curl(aliceTok, api+"/jobs/"+sub.JobID+"/log"); code != "403" {
		t.Errorf("bob's job's log with alice's token: %s, want 403", code)
	}

	// alice may not revoke bob's token; bob may, and then it is refused.
	if out, stderr, err := b.Exec(ctx, "runuser", "-u", "alice", "--", "hyperctl", "--no-ask-password", "token", "revoke", bobID); err == nil {
		t.Errorf("alice revoked bob's token: %s %s", out, stderr)
	}
	b.MustExec(t, "runuser", "-u", "bob", "--", "hyperctl", "token", "revoke", bobID)
	if code, body := curl(bobTok, api+"/jobs?limit=0"); code != "401" && code != "403" {
		t.Errorf("a revoked token: %s %s, want refused", code, body)
	}
	if code, body := curl(bobTok, api+"/jobs?limit=0"); code != "401" {
		t.Errorf("a revoked token, again: %s %s, want 401", code, body)
	}
	// The administrator token still works.
	if code, body := curl(apiToken, api+"/jobs/"+sub.JobID); code != "200" || !strings.Contains(body, "/var/lib/hyper2kvm/output/") {
		t.Errorf("the administrator token: %s %s", code, body)
	}
}

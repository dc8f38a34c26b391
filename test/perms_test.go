package test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/dbusapi"
	"github.com/hyper2kvm/hyper2kvm/test/box"
)

// TestPermissions walks issue 18's "permissions that don't line up" in the
// installed package: bob and dave are in group hyper2kvm, alice is not.
// A member retries their own cancelled job; job logs come from the agent
// to the submitter and the group but not to others; the REST log needs the
// token over loopback TCP; REST with the token cancels a job submitted
// with hyperctl and retries a failed one.
func TestPermissions(t *testing.T) {
	b := box.Start(t, box.Options{
		Install: true,
		Users:   []string{"alice", "bob", "dave"},
		Groups:  map[string][]string{"hyper2kvm": {"bob", "dave"}},
		Files: map[string]string{
			"/etc/hyper2kvm/agent.yaml": apiAgentYAML,
			apiGateDir + "/worker":      apiGateWorker,
		},
	})
	bb := &bridgeBox{Box: b, t: t}
	b.MustExec(t, "chmod", "0755", apiGateDir+"/worker")
	b.WriteFile(t, "/etc/hyper2kvm/api.token", []byte(apiToken+"\n"), 0o640)
	b.MustExec(t, "chown", "root:hyper2kvm", "/etc/hyper2kvm/api.token")
	b.MustExec(t, "mkdir", "-p", "/srv/vms")
	for _, n := range []string{"bob1", "dave1", "dave2"} {
		b.MustExec(t, "qemu-img", "create", "-q", "-f", "raw", "/srv/vms/"+n+".img", "32M")
		b.WriteFile(t, "/srv/vms/"+n+".json", []byte(apiManifest(n, "/srv/vms/"+n+".img")), 0o644)
	}
	b.MustExec(t, "chmod", "-R", "a+rX", "/srv/vms")
	b.MustExec(t, "systemctl", "start", "hyper2kvm-api.socket")
	sock := b.Path(apiSocket)
	bb.http = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	hyperctl := func(user string, args ...string) (string, string, error) {
		cmd := append([]string{"runuser", "-u", user, "--", "hyperctl", "--no-ask-password"}, args...)
		return b.Exec(ctx, cmd...)
	}
	submit := func(user, name string) string {
		out, stderr, err := hyperctl(user, "-o", "json", "submit", "/srv/vms/"+name+".json")
		var res struct {
			Jobs []struct {
				ID string `json:"id"`
			} `json:"jobs"`
		}
		if err != nil || json.Unmarshal([]byte(out), &res) != nil || len(res.Jobs) == 0 {
			t.Fatalf("%s submits %s: %v %s %s", user, name, err, out, stderr)
		}
		return res.Jobs[0].ID
	}
	// curl runs curl in the box as alice (outside the group) and returns
	// the status and the body.
	curl := func(args ...string) (string, string) {
		cmd := append([]string{"runuser", "-u", "alice", "--", "curl", "-sS", "--max-time", "60", "-w", "\n%{http_code}"}, args...)
		out, _, _ := b.Exec(ctx, cmd...)
		out = strings.TrimRight(out, "\n")
		i := strings.LastIndex(out, "\n")
		return out[i+1:], out[:max(i, 0)]
	}
	auth := "Authorization: Bearer " + apiToken

	bob1 := submit("bob", "bob1")
	dave1 := submit("dave", "dave1")
	dave2 := submit("dave", "dave2")

	t.Run("a member retries their own cancelled job", func(t *testing.T) {
		if out, stderr, err := hyperctl("bob", "cancel", bob1); err != nil {
			t.Fatalf("bob cancels his job: %v %s %s", err, out, stderr)
		}
		bb.waitJob(t, bob1, "cancelled")
		out, stderr, err := hyperctl("bob", "-o", "json", "retry", bob1)
		if err != nil {
			t.Fatalf("bob retries his own cancelled job: %v (want exit 0)\n%s%s", err, out, stderr)
		}
		var j struct{ ID string }
		if json.Unmarshal([]byte(out), &j) != nil || j.ID == "" || j.ID == bob1 {
			t.Errorf("retry answered %s", out)
		}
	})

	t.Run("hyperctl logs: the submitter and the group read, others do not", func(t *testing.T) {
		out, stderr, err := hyperctl("bob", "logs", bob1)
		if err != nil || !strings.Contains(out, bob1) {
			t.Errorf("bob reads his job's log: %v\n%s%s", err, out, stderr)
		}
		if out, stderr, err := hyperctl("bob", "logs", "-n", "1", bob1); err != nil || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("bob reads the last line of his job's log: %v\n%s%s", err, out, stderr)
		}
		if out, stderr, err := hyperctl("bob", "logs", dave1); err != nil || !strings.Contains(out, dave1) {
			t.Errorf("bob (group hyper2kvm) reads dave's job's log: %v\n%s%s", err, out, stderr)
		}
		out, stderr, err = hyperctl("alice", "logs", dave1)
		if err == nil || strings.Contains(out, dave1) || !strings.Contains(stderr, "io.hyper2kvm.agent.read") {
			t.Errorf("alice (outside the group) reads dave's job's log: %v\n%s%s", err, out, stderr)
		}
	})

	t.Run("REST log needs the token on loopback", func(t *testing.T) {
		for _, p := range []string{"/log", ""} {
			u := "http://127.0.0.1:8080/api/workflow/jobs/" + dave1 + p
			if code, body := curl(u); code != "401" || strings.Contains(body, "/srv/vms") {
				t.Errorf("GET %s without the token: %s %s, want 401", u, code, body)
			}
			if code, body := curl("-H", auth, u); code != "200" || !strings.Contains(body, dave1) {
				t.Errorf("GET %s with the token: %s %s, want 200", u, code, body)
			}
		}
		if code, body := curl("http://127.0.0.1:8080/api/workflow/jobs"); code != "200" {
			t.Errorf("job list without the token: %s %s", code, body)
		}
	})

	t.Run("REST with the token cancels a hyperctl job and retries a failed one", func(t *testing.T) {
		if code, body := curl("-X", "POST", "-H", auth, "http://127.0.0.1:8080/api/workflow/jobs/"+dave1+"/cancel"); code != "202" {
			t.Errorf("cancel dave's job over REST: %s %s, want 202", code, body)
		}
		bb.waitJob(t, dave1, "cancelled")
		// dave2 fails: its source is gone when the worker starts.
		b.MustExec(t, "mv", "/srv/vms/dave2.img", "/srv/vms/dave2.away")
		b.MustExec(t, "touch", apiGateDir+"/open")
		bb.waitJob(t, dave2, "failed")
		b.MustExec(t, "mv", "/srv/vms/dave2.away", "/srv/vms/dave2.img")
		code, body := curl("-X", "POST", "-H", auth, "http://127.0.0.1:8080/api/workflow/jobs/"+dave2+"/retry")
		if code != "202" {
			t.Fatalf("retry dave's failed job over REST: %s %s, want 202", code, body)
		}
		var m struct {
			JobID string `json:"job_id"`
		}
		if err := json.Unmarshal([]byte(body), &m); err != nil || m.JobID == "" {
			t.Fatalf("retry answered %s", body)
		}
		bb.waitJob(t, m.JobID, "completed")
	})

	t.Run("job details: outside the group no paths through any door", func(t *testing.T) {
		// alice follows the REST event stream over loopback without the
		// token while bob's job runs to its end.
		b.MustExec(t, "sh", "-c", "runuser -u alice -- curl -sN --max-time 600 http://127.0.0.1:8080/api/workflow/events >/tmp/alice-events 2>&1 & echo $! >/tmp/alice-events.pid")
		if err := b.WaitFor(ctx, "alice's event stream to open", func() (bool, error) {
			out, _, _ := b.Exec(ctx, "cat", "/tmp/alice-events")
			return strings.Contains(out, "subscribed"), nil
		}); err != nil {
			t.Fatal(err)
		}
		id := submit("bob", "bob1")
		bb.waitJob(t, id, "completed")
		var events string
		if err := b.WaitFor(ctx, "alice's stream to tell the end of "+id, func() (bool, error) {
			events, _, _ = b.Exec(ctx, "cat", "/tmp/alice-events")
			return strings.Contains(events, `"id":"`+id+`"`) && strings.Contains(events, `"status":"completed"`), nil
		}); err != nil {
			t.Fatalf("%v\n%s", err, events)
		}
		b.Exec(ctx, "sh", "-c", "kill $(cat /tmp/alice-events.pid)")

		// bob (the submitter and a member) sees where his disk went.
		own, stderr, err := hyperctl("bob", "-o", "json", "show", id)
		if err != nil || !strings.Contains(own, "/var/lib/hyper2kvm/output/") {
			t.Fatalf("bob reads his own job: %v\n%s%s", err, own, stderr)
		}
		secret := []string{"/var/lib/hyper2kvm", "/srv/vms"}
		shows := map[string]string{"REST events without the token (alice)": events}
		shows["hyperctl show (alice)"], _, _ = hyperctl("alice", "-o", "json", "show", id)
		shows["hyperctl jobs (alice)"], _, _ = hyperctl("alice", "-o", "json", "jobs", "--all")
		for _, prop := range []string{"Outputs", "ReportPath", "Manifest", "Error"} {
			shows["busctl get-property "+prop+" (alice)"], _, _ = b.Exec(ctx, "runuser", "-u", "alice", "--",
				"busctl", "--system", "get-property", "io.hyper2kvm.Agent1", string(dbusapi.JobPath(id)), "io.hyper2kvm.Agent1.Job", prop)
		}
		_, shows["REST job list without the token (alice)"] = curl("http://127.0.0.1:8080/api/workflow/jobs?limit=0")
		_, shows["REST active list without the token (alice)"] = curl("http://127.0.0.1:8080/api/workflow/jobs/active")
		for door, out := range shows {
			if !strings.Contains(out, id) && !strings.Contains(door, "busctl") && !strings.Contains(door, "active") {
				t.Errorf("%s does not list job %s at all:\n%s", door, id, out)
			}
			for _, p := range secret {
				if strings.Contains(out, p) {
					t.Errorf("%s shows %s to a user outside group hyper2kvm:\n%s", door, p, out)
				}
			}
		}
		// With the token, the same list has the paths.
		if _, body := curl("-H", auth, "http://127.0.0.1:8080/api/workflow/jobs?limit=0"); !strings.Contains(body, "/var/lib/hyper2kvm/output/") {
			t.Errorf("the job list with the token lacks the outputs:\n%s", body)
		}
	})
}

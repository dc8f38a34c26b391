package test

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/test/box"
)

// hyperctlManifest converts a blank VMDK with inspection and fixes off, so
// the job needs no guest access and goes load -> convert -> validate.
const hyperctlManifest = `version: "1.0"
name: NAME
pipeline:
  load:
    source_type: vmdk
    source_path: /srv/h2k/web01.vmdk
  inspect:
    enabled: false
  fix:
    enabled: false
  convert:
    output_format: qcow2
`

// hyperctlRun runs the installed hyperctl in the box as user ("" is root)
// and returns its output and exit code.
func hyperctlRun(ctx context.Context, t *testing.T, b *box.Box, user string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	full := append([]string{"hyperctl"}, args...)
	var err error
	if user == "" {
		stdout, stderr, err = b.Exec(ctx, full...)
	} else {
		stdout, stderr, err = b.ExecAs(ctx, user, full...)
	}
	var xe *exec.ExitError
	switch {
	case err == nil:
		return stdout, stderr, 0
	case errors.As(err, &xe):
		return stdout, stderr, xe.ExitCode()
	}
	t.Fatalf("hyperctl %v: %v", args, err)
	return "", "", -1
}

// TestHyperctl runs every hyperctl command against the real agent in a real
// systemd box, as root and as the unprivileged alice.
func TestHyperctl(t *testing.T) {
	t.Parallel()
	b := box.Start(t, box.Options{
		Install: true,
		Users:   []string{"alice"},
		Groups:  map[string][]string{"hyper2kvm": {"bob"}},
	})
	ctx := hyperctlCtx(t, 20*time.Minute)

	b.MustExec(t, "mkdir", "-p", "/srv/h2k")
	// Random data, so that CONVERT and VALIDATE take long enough to be seen
	// with their progress.
	b.MustExec(t, "sh", "-c", "head -c 48M /dev/urandom >/srv/h2k/web01.raw && qemu-img convert -O vmdk /srv/h2k/web01.raw /srv/h2k/web01.vmdk && rm /srv/h2k/web01.raw")
	for _, name := range []string{"web01", "web02", "web03"} {
		b.WriteFile(t, "/srv/h2k/"+name+".yaml", []byte(strings.Replace(hyperctlManifest, "NAME", name, 1)), 0o644)
	}
	b.WriteFile(t, "/srv/h2k/missing.yaml", []byte(strings.NewReplacer("NAME", "missing", "web01.vmdk", "gone.vmdk").Replace(hyperctlManifest)), 0o644)

	expect := func(t *testing.T, user string, wantCode int, wantOut string, args ...string) string {
		t.Helper()
		out, errOut, code := hyperctlRun(ctx, t, b, user, args...)
		if code != wantCode || !strings.Contains(out+errOut, wantOut) {
			t.Fatalf("hyperctl %s as %q: exit %d (want %d), output lacks %q?\nstdout: %s\nstderr: %s",
				strings.Join(args, " "), user, code, wantCode, wantOut, out, errOut)
		}
		return out
	}

	t.Run("validate needs no agent", func(t *testing.T) {
		for _, user := range []string{"", "alice"} {
			expect(t, user, 0, "valid:", "manifest", "validate", "-file", "/srv/h2k/web01.yaml")
			expect(t, user, 0, "valid:", "validate", "--check-files", "/srv/h2k/web01.yaml")
			expect(t, user, 1, "pipeline.load.source_path", "manifest", "validate", "--check-files", "-file=/srv/h2k/missing.yaml")
		}
		if out, _, _ := b.Exec(ctx, "systemctl", "is-active", "hyper2kvmd.service"); strings.TrimSpace(out) == "active" {
			t.Errorf("validate started the agent")
		}
	})

	t.Run("status starts the agent by D-Bus activation", func(t *testing.T) {
		out := expect(t, "", 0, "", "status", "-o", "json")
		var st struct {
			Mode    string `json:"mode"`
			Running bool   `json:"running"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil || !st.Running || st.Mode != "manifest" {
			t.Errorf("status json %v: %s", err, out)
		}
		if out := b.MustExec(t, "systemctl", "is-active", "hyper2kvmd.service"); strings.TrimSpace(out) != "active" {
			t.Errorf("hyper2kvmd.service is %q after hyperctl status", out)
		}
		expect(t, "alice", 0, "Agent:", "status")
		expect(t, "", 0, "Agent:", "workflow", "-op", "status")
	})

	t.Run("alice may not submit", func(t *testing.T) {
		for _, args := range [][]string{
			{"submit", "/srv/h2k/web01.yaml"},
			{"manifest", "submit", "-file", "/srv/h2k/web01.yaml"},
		} {
			_, errOut, code := hyperctlRun(ctx, t, b, "alice", args...)
			if code != 4 || !strings.Contains(errOut, "io.hyper2kvm.agent.submit") || !strings.Contains(errOut, "not authorized") {
				t.Errorf("%v as alice: exit %d, stderr %q; want 4 naming io.hyper2kvm.agent.submit", args, code, errOut)
			}
		}
		out := expect(t, "", 0, "", "jobs", "-o", "json")
		if !strings.Contains(out, `"total": 0`) {
			t.Errorf("a refused submit left a job:\n%s", out)
		}
	})

	t.Run("a submitted manifest with a missing source is refused", func(t *testing.T) {
		expect(t, "", 1, "pipeline.load.source_path", "submit", "/srv/h2k/missing.yaml")
	})

	var id string
	t.Run("watch on a terminal shows the job move through its stages", func(t *testing.T) {
		t.Cleanup(func() {
			if t.Failed() {
				out, errOut, _ := hyperctlRun(context.Background(), t, b, "", "jobs")
				t.Logf("hyperctl jobs:\n%s%s", out, errOut)
				t.Logf("journal of the agent and the job:\n%s", b.Journal(context.Background(), "_SYSTEMD_UNIT=hyper2kvmd.service", "+", "HYPER2KVM_JOB_ID="+id))
			}
		})
		ctx := hyperctlCtx(t, 5*time.Minute) // a 64 MiB blank disk converts in seconds
		// exec keeps the shell's pid, so the test can interrupt hyperctl
		// itself (^C on the pty would also kill nsenter).
		term := startTerm(t, boxTermCommand(b, "", "sh", "-c", "echo watch-pid=$$; exec hyperctl watch"))
		// Subscribed and listed: from here on no change is missed.
		at := term.WaitFor(ctx, 0, "waiting for jobs")
		m := regexp.MustCompile(`watch-pid=(\d+)`).FindStringSubmatch(term.Text())
		if m == nil {
			t.Fatalf("no pid:\n%s", term.Text())
		}
		out := expect(t, "", 0, "", "submit", "-o", "json", "/srv/h2k/web01.yaml")
		var res struct{ Jobs []jobs.Job }
		if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Jobs) != 1 {
			t.Fatalf("submit json %v: %s", err, out)
		}
		id = res.Jobs[0].ID
		done := "✔ web01 (" + id + ") completed"
		if got, _ := term.WaitForAny(ctx, at, done, "✘ web01 ("+id+")"); got != done {
			t.Fatalf("the job did not complete:\n%s", term.Text())
		}
		// Ctrl-C (SIGINT) ends a watch of all jobs normally.
		b.MustExec(t, "kill", "-INT", m[1])
		if code := term.Wait(ctx); code != 0 {
			t.Errorf("watch ended with %d after SIGINT", code)
		}
		text := term.Text()[at:]
		t.Logf("hyperctl watch showed:\n%s", text)
		// The live bars show the stages in pipeline order, then the result.
		// systemd may fold quick STATUS= updates into one signal, so a
		// short stage can be missed; CONVERT of 48 MiB of random data
		// cannot.
		bar := regexp.MustCompile(`web01 +\[[^\]]*\] +(\?|\d+)% +([a-z]+)`)
		var stages []string
		for _, m := range bar.FindAllStringSubmatch(text, -1) {
			if len(stages) == 0 || stages[len(stages)-1] != m[2] {
				stages = append(stages, m[2])
			}
		}
		order := map[string]int{"pending": 0, "load": 1, "inspect": 2, "fix": 3, "convert": 4, "validate": 5}
		for i := 1; i < len(stages); i++ {
			if order[stages[i]] < order[stages[i-1]] {
				t.Errorf("stages out of order %v in the watch output:\n%s", stages, text)
			}
		}
		if !slices.Contains(stages, "convert") {
			t.Errorf("no live bar of the convert stage (saw %v):\n%s", stages, text)
		}
		if strings.Index(text, done) < strings.LastIndex(text, "convert") {
			t.Errorf("result printed before the last bar:\n%s", text)
		}
		if !strings.Contains(term.Raw(), "\x1b[") {
			t.Errorf("no terminal control (colour, redraw) on a terminal")
		}
	})
	if id == "" {
		t.Fatal("no job to look at")
	}

	t.Run("read commands as root and alice", func(t *testing.T) {
		for _, user := range []string{"", "alice"} {
			expect(t, user, 0, id, "jobs")
			expect(t, user, 0, id, "jobs", "--state", "completed")
			expect(t, user, 0, id, "workflow", "-op", "list")
			if out := expect(t, user, 0, "", "workflow", "-op", "queue", "-o", "json"); strings.Contains(out, id) {
				t.Errorf("finished job in the queue: %s", out)
			}
			expect(t, user, 0, "completed", "show", id)
			out := expect(t, user, 0, "", "show", id, "--output", "json")
			var j jobs.Job
			// alice is outside group hyper2kvm and did not submit the job:
			// its details (outputs, paths) are not hers to read.
			if err := json.Unmarshal([]byte(out), &j); err != nil || j.ID != id || j.State != jobs.Completed || (len(j.Outputs) == 0) != (user == "alice") {
				t.Errorf("show json as %q: %v %+v", user, err, j)
			}
			// Finished already: watch ID exits at once with the job's result.
			expect(t, user, 0, "completed", "watch", id)
			expect(t, user, 1, "ffffffff", "show", "ffffffff")
		}
		expect(t, "", 0, "hyper2kvm-job-"+id, "logs", id)
	})

	t.Run("alice may not cancel or retry root's job", func(t *testing.T) {
		_, errOut, code := hyperctlRun(ctx, t, b, "alice", "cancel", id)
		if code != 4 || !strings.Contains(errOut, "io.hyper2kvm.agent.cancel-any") {
			t.Errorf("cancel as alice: exit %d, stderr %q", code, errOut)
		}
		_, errOut, code = hyperctlRun(ctx, t, b, "alice", "retry", id)
		if code != 4 || !strings.Contains(errOut, "io.hyper2kvm.agent.manage") {
			t.Errorf("retry as alice: exit %d, stderr %q", code, errOut)
		}
	})

	t.Run("cancel of a finished job is refused", func(t *testing.T) {
		expect(t, "", 1, "", "cancel", id)
	})

	t.Run("submit --wait exits with the result", func(t *testing.T) {
		expect(t, "", 0, "completed", "submit", "--wait", "/srv/h2k/web02.yaml")
		expect(t, "", 0, "completed", "manifest", "submit", "--wait", "-file=/srv/h2k/web03.yaml")
	})

	t.Run("unreachable agent is exit 3", func(t *testing.T) {
		_, errOut, err := b.Exec(ctx, "env", "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/no-such-bus", "hyperctl", "status")
		var xe *exec.ExitError
		if !errors.As(err, &xe) || xe.ExitCode() != 3 || !strings.Contains(errOut, "system D-Bus") {
			t.Errorf("status without a bus: %v, stderr %q; want exit 3 naming the system D-Bus", err, errOut)
		}
		b.MustExec(t, "systemctl", "stop", "hyper2kvmd.service")
		b.MustExec(t, "systemctl", "mask", "--runtime", "hyper2kvmd.service")
		expect(t, "", 3, "cannot reach the hyper2kvm agent", "status")
		b.MustExec(t, "systemctl", "unmask", "--runtime", "hyper2kvmd.service")
		expect(t, "", 0, "Agent:", "status")
	})

	t.Run("completion and man pages are installed", func(t *testing.T) {
		for _, p := range []string{
			"/usr/share/bash-completion/completions/hyperctl",
			"/usr/share/zsh/vendor-completions/_hyperctl",
			"/usr/share/fish/vendor_completions.d/hyperctl.fish",
		} {
			if _, _, err := b.Exec(ctx, "test", "-s", p); err != nil {
				t.Errorf("%s not installed by make install (packaging/install.sh: hyperctl completion bash|zsh|fish)", p)
			}
		}
		if out, _, err := b.Exec(ctx, "sh", "-c", "ls /usr/share/man/man1/ | grep -c '^hyperctl'"); err != nil || strings.TrimSpace(out) == "0" {
			t.Errorf("no hyperctl man pages under /usr/share/man/man1 (packaging/install.sh: hyperctl man DIR)")
		}
	})
}

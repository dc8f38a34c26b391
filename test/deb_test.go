package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/config"
	"github.com/hyper2kvm/hyper2kvm/test/box"
)

// TestPackagedConfigIsTheDefaults checks that the commented agent.yaml the
// package installs parses and says exactly what the agent does without it,
// so the comments never drift from the code.
func TestPackagedConfigIsTheDefaults(t *testing.T) {
	got, err := config.Load(filepath.Join(box.RepoRoot(), "packaging", "agent.yaml"))
	if err != nil {
		t.Fatalf("packaging/agent.yaml does not load: %v", err)
	}
	if want := config.Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("packaging/agent.yaml differs from config.Default():\n got %+v\nwant %+v", got, want)
	}
}

// TestInstallLayout runs packaging/install.sh (what `make install` runs)
// with PREFIX=/usr/local into an empty DESTDIR, with stand-in binaries so it
// is fast and needs no root; TestDebInstall installs the real ones.
func TestInstallLayout(t *testing.T) {
	bin := t.TempDir()
	for name, script := range map[string]string{
		"hyperctl": "#!/bin/sh\ncase $1 in\ncompletion) echo \"# $2 completion\" ;;\n" +
			"man) mkdir -p \"$2\" && echo .TH HYPERCTL 1 >\"$2/hyperctl.1\" ;;\n*) exit 1 ;;\nesac\n",
		"hyper2kvmd": "#!/bin/sh\nexit 1\n", // no man subcommand: packaging/hyper2kvmd.8 is used
	} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dest := t.TempDir()
	install := func() string {
		cmd := exec.Command(filepath.Join(box.RepoRoot(), "packaging", "install.sh"), dest, "/usr/local", "/usr/local/etc", bin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("install.sh: %v\n%s", err, out)
		}
		return string(out)
	}
	install()
	read := func(p string) string {
		data, err := os.ReadFile(filepath.Join(dest, p))
		if err != nil {
			t.Errorf("not installed: %v", err)
		}
		return string(data)
	}
	for _, p := range []string{
		"/usr/local/bin/hyper2kvmd", "/usr/local/bin/hyperctl",
		"/usr/local/lib/sysusers.d/hyper2kvm.conf", "/usr/local/lib/tmpfiles.d/hyper2kvm.conf",
		"/usr/local/share/dbus-1/system.d/io.hyper2kvm.Agent1.conf",
		"/usr/local/share/dbus-1/interfaces/io.hyper2kvm.Agent1.xml",
		"/usr/local/share/polkit-1/actions/io.hyper2kvm.agent.policy",
		"/usr/local/share/bash-completion/completions/hyperctl",
		"/usr/local/share/zsh/site-functions/_hyperctl",
		"/usr/local/share/fish/vendor_completions.d/hyperctl.fish",
		"/usr/local/share/man/man1/hyperctl.1.gz", "/usr/local/share/man/man8/hyper2kvmd.8.gz",
		"/usr/local/share/doc/hyper2kvm/README.md",
	} {
		read(p)
	}
	units, _ := filepath.Glob(filepath.Join(box.RepoRoot(), "units", "*"))
	for _, u := range units {
		got := read("/usr/local/lib/systemd/system/" + filepath.Base(u))
		if strings.Contains(got, "/usr/bin/hyper2kvmd") {
			t.Errorf("%s still runs /usr/bin/hyper2kvmd with PREFIX=/usr/local", filepath.Base(u))
		}
	}
	if got := read("/usr/local/lib/systemd/system/hyper2kvmd.service"); !strings.Contains(got, "ExecStart=/usr/local/bin/hyper2kvmd agent") {
		t.Errorf("hyper2kvmd.service does not run /usr/local/bin/hyper2kvmd:\n%s", got)
	}
	if got := read("/usr/local/share/dbus-1/system-services/io.hyper2kvm.Agent1.service"); !strings.Contains(got, "Exec=/usr/local/bin/hyper2kvmd") {
		t.Errorf("D-Bus activation file not rewritten for PREFIX:\n%s", got)
	}
	if got := read("/usr/local/etc/hyper2kvm/agent.yaml"); !strings.Contains(got, "max_concurrent_jobs: 3") {
		t.Errorf("agent.yaml is not the commented default")
	}

	// A second install (an upgrade by hand) keeps the admin's config.
	conf := filepath.Join(dest, "/usr/local/etc/hyper2kvm/agent.yaml")
	if err := os.WriteFile(conf, []byte("max_concurrent_jobs: 7\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := install(); !strings.Contains(out, "keeping existing") {
		t.Errorf("install.sh did not say it kept the config: %s", out)
	}
	if got := read("/usr/local/etc/hyper2kvm/agent.yaml"); got != "max_concurrent_jobs: 7\n" {
		t.Errorf("a second install overwrote agent.yaml: %q", got)
	}
}

// buildDeb runs `make deb` into a fresh directory and returns the package.
func buildDeb(t *testing.T, version string) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "hyper2kvm-deb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cmd := exec.Command("make", "-C", box.RepoRoot(), "deb", "BIN="+dir, "VERSION="+version)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "hyper2kvm_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v, want one hyper2kvm_*.deb\n%s", debs, out)
	}
	// lintian runs inside deb.sh when it is installed: no errors allowed.
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "E: ") {
			t.Errorf("lintian: %s", l)
		}
	}
	return debs[0]
}

// stepContext bounds one step of a test: generous, so that a slow machine
// passes, but a hung step does not eat the time of the steps after it.
func stepContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestDebInstall is the README's install section: `dpkg -i` of the package
// into a fresh real-systemd box and nothing else, then it is used as a
// sysadmin would, upgraded, removed and purged.
func TestDebInstall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds a .deb and boots a systemd-nspawn box")
	}
	t.Parallel()
	deb1 := buildDeb(t, "0.0.1")
	b := box.Start(t, box.Options{Users: []string{"alice"}})
	ctx := stepContext(t)
	data, err := os.ReadFile(deb1)
	if err != nil {
		t.Fatal(err)
	}
	b.WriteFile(t, "/root/hyper2kvm_0.0.1.deb", data, 0o644)

	b.MustExec(t, "dpkg", "-i", "/root/hyper2kvm_0.0.1.deb")

	if out, _, err := b.Exec(ctx, "systemctl", "is-active", "hyper2kvmd.path", "hyper2kvm-api.socket"); err != nil || out != "active\nactive\n" {
		t.Errorf("after dpkg -i, systemctl is-active hyper2kvmd.path hyper2kvm-api.socket: %q, %v\n%s", out, err,
			b.Journal(ctx, "-n", "40"))
	}
	if out := b.MustExec(t, "systemctl", "is-enabled", "hyper2kvmd.path", "hyper2kvm-api.socket"); out != "enabled\nenabled\n" {
		t.Errorf("units not enabled for boot: %q", out)
	}

	t.Run("files and permissions", func(t *testing.T) {
		ctx := stepContext(t)
		for p, want := range map[string]string{
			"/etc/hyper2kvm/api.token":                              "640 root hyper2kvm",
			"/etc/hyper2kvm/agent.yaml":                             "644 root root",
			"/var/lib/hyper2kvm/manifest-workflow/to_be_processed":  "3770 root hyper2kvm",
			"/var/lib/hyper2kvm/manifest-workflow/processed":        "750 root hyper2kvm",
			"/var/lib/hyper2kvm/output":                             "750 root hyper2kvm",
			"/var/lib/hyper2kvm/jobs":                               "700 root root",
			"/usr/share/dbus-1/system.d/io.hyper2kvm.Agent1.conf":   "644 root root",
			"/usr/share/polkit-1/actions/io.hyper2kvm.agent.policy": "644 root root",
		} {
			out, stderr, err := b.Exec(ctx, "stat", "-c", "%a %U %G", p)
			if got := strings.TrimSpace(out); err != nil || got != want {
				t.Errorf("%s: %q %s%v, want %q", p, got, stderr, err, want)
			}
		}
		if tok := strings.TrimSpace(b.MustExec(t, "cat", "/etc/hyper2kvm/api.token")); len(tok) < 32 {
			t.Errorf("api.token is %d characters, want a real secret", len(tok))
		}
		if out := b.MustExec(t, "id", "-nG", "hyper2kvm-api"); !strings.Contains(out, "hyper2kvm") {
			t.Errorf("hyper2kvm-api is not in group hyper2kvm: %q", out)
		}
		if out := b.MustExec(t, "dpkg-query", "-W", "-f", "${Conffiles}", "hyper2kvm"); !strings.Contains(out, "/etc/hyper2kvm/agent.yaml") {
			t.Errorf("agent.yaml is not a conffile: %q", out)
		}
	})

	t.Run("systemd-analyze verify", func(t *testing.T) {
		ctx := stepContext(t)
		var units []string
		for _, l := range strings.Split(b.MustExec(t, "dpkg", "-L", "hyper2kvm"), "\n") {
			if strings.HasPrefix(l, "/usr/lib/systemd/system/") && strings.Contains(filepath.Base(l), ".") {
				units = append(units, l)
			}
		}
		if len(units) < 5 {
			t.Errorf("the package installs only these units: %v", units)
		}
		for _, u := range units {
			out, stderr, err := b.Exec(ctx, "systemd-analyze", "verify", u)
			if err != nil || strings.TrimSpace(out+stderr) != "" {
				t.Errorf("systemd-analyze verify %s: %v\n%s%s", u, err, out, stderr)
			}
			// Documentation=file:... must point at something installed.
			doc := b.MustExec(t, "systemctl", "show", "-p", "Documentation", "--value", filepath.Base(u))
			for _, d := range strings.Fields(doc) {
				if p, ok := strings.CutPrefix(d, "file:"); ok {
					if _, _, err := b.Exec(ctx, "test", "-e", p); err != nil {
						t.Errorf("%s: Documentation=%s is not installed", filepath.Base(u), d)
					}
				}
			}
		}
	})

	t.Run("a dropped manifest is converted", func(t *testing.T) {
		ctx := stepContext(t)
		const q = "/var/lib/hyper2kvm/manifest-workflow"
		b.MustExec(t, "mkdir", "-p", "/srv/src")
		b.MustExec(t, "qemu-img", "create", "-q", "-f", "raw", "/srv/src/deb01.raw", "32M")
		b.MustExec(t, "chmod", "0644", "/srv/src/deb01.raw")
		manifest := fmt.Sprintf(`{"version":"1.0","name":"deb01","pipeline":{"load":{"source_type":"raw","source_path":%q},`+
			`"inspect":{"enabled":false},"fix":{"enabled":false},"convert":{"output_format":"qcow2"},"validate":{"enabled":false}}}`,
			"/srv/src/deb01.raw")
		b.WriteFile(t, q+"/to_be_processed/.deb01.json", []byte(manifest), 0o644)
		b.MustExec(t, "mv", q+"/to_be_processed/.deb01.json", q+"/to_be_processed/deb01.json")
		day := strings.TrimSpace(b.MustExec(t, "date", "+%Y-%m-%d"))
		var where string
		err := b.WaitFor(ctx, "deb01.json to settle", func() (bool, error) {
			for _, dir := range []string{"processed", "failed"} {
				if _, err := os.Stat(b.Path(filepath.Join(q, dir, day, "deb01.json"))); err == nil {
					where = dir
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil || where != "processed" {
			errj, _ := os.ReadFile(b.Path(filepath.Join(q, "failed", day, "deb01.json.error.json")))
			var rep struct {
				Unit string `json:"unit"`
			}
			_ = json.Unmarshal(errj, &rep)
			job := "(no unit)"
			if rep.Unit != "" {
				job = b.Journal(ctx, "-u", rep.Unit, "-n", "60")
			}
			t.Fatalf("manifest not converted (%v, ended in %q) %s\nagent:\n%s\njob unit %s:\n%s", err, where, errj,
				b.Journal(ctx, "-u", "hyper2kvmd.service", "-n", "40"), rep.Unit, job)
		}
		out := b.MustExec(t, "find", "/var/lib/hyper2kvm/output", "-name", "*.qcow2")
		if !strings.Contains(out, ".qcow2") {
			t.Errorf("no qcow2 under /var/lib/hyper2kvm/output after conversion:\n%s", b.MustExec(t, "find", "/var/lib/hyper2kvm/output"))
		}
	})

	t.Run("hyperctl status", func(t *testing.T) {
		ctx := stepContext(t)
		out, stderr, err := b.Exec(ctx, "hyperctl", "status")
		if err != nil {
			t.Errorf("hyperctl status as root: %v\n%s%s", err, out, stderr)
		}
	})

	t.Run("dashboard on port 8080", func(t *testing.T) {
		ctx := stepContext(t)
		out, stderr, err := b.Exec(ctx, "curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:8080/")
		if err != nil || out != "200" {
			t.Errorf("GET http://127.0.0.1:8080/ in the box: %q %s %v\n%s", out, stderr, err,
				b.Journal(ctx, "-u", "hyper2kvm-api.service", "-n", "30"))
		}
		out, stderr, err = b.Exec(ctx, "curl", "-sS", "-f", "http://127.0.0.1:8080/health")
		if err != nil {
			t.Errorf("GET /health: %q %s %v", out, stderr, err)
		}
	})

	t.Run("upgrade keeps config, token and queue", func(t *testing.T) {
		ctx := stepContext(t)
		deb2 := buildDeb(t, "0.0.2")
		data, err := os.ReadFile(deb2)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteFile(t, "/root/hyper2kvm_0.0.2.deb", data, 0o644)
		b.MustExec(t, "sh", "-c", "echo '# edited by the admin' >> /etc/hyper2kvm/agent.yaml")
		// keep_finished (30 days) would forget the old jobs of January
		// below at the first start; this admin keeps every job.
		b.MustExec(t, "sh", "-c", "echo 'keep_finished: 0' >> /etc/hyper2kvm/agent.yaml")
		token := b.MustExec(t, "cat", "/etc/hyper2kvm/api.token")
		queued := "/var/lib/hyper2kvm/manifest-workflow/processed/keep-me.json"
		b.MustExec(t, "sh", "-c", "echo {} > "+queued)
		// The job store as the agent before River left it: a snapshot,
		// its log and the history. The upgrade must keep every job.
		b.MustExec(t, "systemctl", "stop", "hyper2kvmd.service")
		b.MustExec(t, "sh", "-c", "rm -f /var/lib/hyper2kvm/jobs.db*")
		oldJobs := map[string]string{"01d00001": "completed", "01d00002": "failed", "01d00003": "cancelled", "01d00004": "completed"}
		b.WriteFile(t, "/var/lib/hyper2kvm/state.json", []byte(`{"version":2,"generation":1,"jobs":{`+
			`"01d00004":{"id":"01d00004","name":"old4","state":"running","claim":"old4.json","created_at":"2026-01-02T03:04:05Z"}},"claims":{}}`), 0o600)
		b.WriteFile(t, "/var/lib/hyper2kvm/changes.jsonl", []byte(`{"generation":1}
{"job":{"id":"01d00004","name":"old4","state":"completed","claim":"old4.json","created_at":"2026-01-02T03:04:05Z","finished_at":"2026-01-02T03:05:05Z"}}
`), 0o600)
		b.WriteFile(t, "/var/lib/hyper2kvm/history.jsonl", []byte(
			`{"id":"01d00001","name":"old1","state":"completed","claim":"old1.json","created_at":"2026-01-01T03:04:05Z","finished_at":"2026-01-01T03:05:05Z"}
{"id":"01d00002","name":"old2","state":"failed","error":"disk unreadable","claim":"old2.json","created_at":"2026-01-01T04:04:05Z","finished_at":"2026-01-01T04:05:05Z"}
{"id":"01d00003","name":"old3","state":"cancelled","error":"cancelled by root","claim":"old3.json","created_at":"2026-01-01T05:04:05Z","finished_at":"2026-01-01T05:05:05Z"}
`), 0o600)

		b.MustExec(t, "dpkg", "-i", "--force-confold", "/root/hyper2kvm_0.0.2.deb")

		if out := b.MustExec(t, "dpkg-query", "-W", "-f", "${Version}", "hyper2kvm"); out != "0.0.2" {
			t.Errorf("installed version %q after upgrade", out)
		}
		if out := b.MustExec(t, "cat", "/etc/hyper2kvm/agent.yaml"); !strings.Contains(out, "# edited by the admin") {
			t.Errorf("upgrade replaced the admin's agent.yaml")
		}
		if got := b.MustExec(t, "cat", "/etc/hyper2kvm/api.token"); got != token {
			t.Errorf("upgrade changed the API token")
		}
		if _, _, err := b.Exec(ctx, "test", "-e", queued); err != nil {
			t.Errorf("upgrade lost %s", queued)
		}
		if out, _, err := b.Exec(ctx, "systemctl", "is-active", "hyper2kvmd.path", "hyper2kvm-api.socket"); err != nil || out != "active\nactive\n" {
			t.Errorf("after upgrade: %q %v", out, err)
		}
		out, stderr, err := b.Exec(ctx, "hyperctl", "jobs", "--all", "-o", "json")
		if err != nil {
			t.Fatalf("hyperctl jobs after the upgrade: %v\n%s\n%s", err, stderr, b.Journal(ctx, "-u", "hyper2kvmd.service", "-n", "30"))
		}
		var listed struct {
			Jobs []struct {
				ID    string `json:"id"`
				State string `json:"state"`
			} `json:"jobs"`
		}
		if err := json.Unmarshal([]byte(out), &listed); err != nil {
			t.Fatalf("hyperctl jobs -o json: %v\n%s", err, out)
		}
		got := map[string]string{}
		for _, j := range listed.Jobs {
			if _, old := oldJobs[j.ID]; old {
				got[j.ID] = j.State
			}
		}
		if !reflect.DeepEqual(got, oldJobs) {
			t.Errorf("after the upgrade the old store's jobs are %v, want %v", got, oldJobs)
		}
		for _, f := range []string{"state.json", "changes.jsonl", "history.jsonl"} {
			if _, _, err := b.Exec(ctx, "test", "-e", "/var/lib/hyper2kvm/"+f+".imported"); err != nil {
				t.Errorf("the imported %s is not kept beside as %s.imported", f, f)
			}
			if _, _, err := b.Exec(ctx, "test", "-e", "/var/lib/hyper2kvm/"+f); err == nil {
				t.Errorf("%s is still in place after the import", f)
			}
		}
	})

	t.Run("remove stops every unit, purge removes state", func(t *testing.T) {
		ctx := stepContext(t)
		b.MustExec(t, "apt-get", "remove", "-y", "-q", "hyper2kvm")
		out := b.MustExec(t, "systemctl", "list-units", "--no-legend", "--plain", "--state=active,activating,deactivating,reloading",
			"hyper2kvm*", "hyper2kvmd*")
		if strings.TrimSpace(out) != "" {
			t.Errorf("after apt-get remove these units still run:\n%s", out)
		}
		if out, _, err := b.Exec(ctx, "pgrep", "-a", "hyper2kvmd"); err == nil {
			t.Errorf("after apt-get remove hyper2kvmd processes remain:\n%s", out)
		}
		for _, p := range []string{"/etc/hyper2kvm/agent.yaml", "/var/lib/hyper2kvm/manifest-workflow/processed/keep-me.json"} {
			if _, _, err := b.Exec(ctx, "test", "-e", p); err != nil {
				t.Errorf("apt-get remove deleted %s (only purge may)", p)
			}
		}
		b.MustExec(t, "apt-get", "purge", "-y", "-q", "hyper2kvm")
		for _, p := range []string{"/etc/hyper2kvm", "/var/lib/hyper2kvm", "/usr/bin/hyper2kvmd"} {
			if _, _, err := b.Exec(ctx, "test", "-e", p); err == nil {
				t.Errorf("%s is still there after purge", p)
			}
		}
	})
}

package test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/test/box"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// TestSecurity attacks an installed agent in one real box (systemd, dbus,
// polkitd): hostile things dropped into the queue, manifests that point
// where they must not, users without rights, users trying to make the root
// worker read what they cannot read, and the REST bridge without its token.
// docs/RELIABILITY.md lists every attack and what is promised for it.
//
// Users: carol is in no group; alice and bob are in group hyper2kvm (may
// submit and cancel their own jobs, polkit rule 50-hyper2kvm.rules).
func TestSecurity(t *testing.T) {
	t.Parallel()
	b := relStart(t, box.Options{
		Users:  []string{"carol"},
		Groups: map[string][]string{"hyper2kvm": {"alice", "bob"}},
	}, true, "")
	ctx := relCtx(t, 8*time.Minute)

	marker := b.privateFiles(t)
	shadowBefore := b.MustExec(t, "sha256sum", "/etc/shadow")

	t.Run("drop-folder attacks", func(t *testing.T) {
		tbp := relQueue + "/to_be_processed/"
		// Made under dot-names (ignored by the agent), then renamed in
		// together, so the agent sees each hostile thing whole.
		b.MustExec(t, "mkdir", "-p", "/srv/stage")
		b.MustExec(t, "ln", "-s", "/etc/shadow", tbp+".shadow.json")
		b.MustExec(t, "ln", "-s", "/etc", tbp+".etcdir.json")
		b.MustExec(t, "ln", "-s", "../processing", tbp+".loop.json")
		b.MustExec(t, "ln", "/srv/src/disk.raw", tbp+".hard.raw")
		b.MustExec(t, "mkfifo", tbp+".pipe.json")
		devices := true
		if _, stderr, err := b.Exec(ctx, "mknod", tbp+".null.raw", "c", "1", "3"); err != nil {
			// nspawn may not let the box make device nodes: a FIFO-free
			// stand-in would prove nothing, so the case is left out.
			t.Logf("cannot make a device node in the box (%v: %s); not testing that case", err, stderr)
			devices = false
		}
		b.MustExec(t, "mkdir", tbp+".dir.json")
		b.MustExec(t, "truncate", "-s", "10G", tbp+".huge.json")
		b.MustExec(t, "sh", "-c", "head -c 2097152 /dev/zero | tr '\\0' ' ' > "+tbp+".big.json")
		b.MustExec(t, "sh", "-c", "echo '{}' > \""+tbp+".nl\"")
		b.MustExec(t, "cp", "/srv/src/disk.raw", tbp+".dots.raw")
		// Manifests whose paths lead where no job may read or write.
		b.MustExec(t, "install", "-D", "-m", "0644", "/srv/src/disk.raw", "/var/lib/hyper2kvm/output/2000-01-01/deadbeef/disk1.qcow2")
		b.MustExec(t, "ln", "-s", "/etc/shadow", "/srv/src/shadow-link.raw")
		hostile := map[string]string{
			"src-queue.json":      relManifest("q", relQueue+"/processing/whatever.raw", "raw", ""),
			"src-etc.json":        relManifest("e", "/etc/passwd", "raw", ""),
			"src-link-etc.json":   relManifest("l", "/srv/src/shadow-link.raw", "raw", ""),
			"src-output.json":     relManifest("o", "/var/lib/hyper2kvm/output/2000-01-01/deadbeef/disk1.qcow2", "qcow2", ""),
			"src-state.json":      relManifest("s", "/var/lib/hyper2kvm/state.json", "raw", ""),
			"out-etc.json":        strings.Replace(relManifest("oe", "/srv/src/disk.raw", "raw", ""), `"output_format":"qcow2"`, `"output_format":"qcow2","output_dir":"/etc/cron.d"`, 1),
			"out-queue.json":      strings.Replace(relManifest("oq", "/srv/src/disk.raw", "raw", ""), `"output_format":"qcow2"`, `"output_format":"qcow2","output_dir":"`+relQueue+`/to_be_processed"`, 1),
			"out-other-job.json":  strings.Replace(relManifest("oo", "/srv/src/disk.raw", "raw", ""), `"output_format":"qcow2"`, `"output_format":"qcow2","output_dir":"/var/lib/hyper2kvm/output/2000-01-01/deadbeef"`, 1),
			"out-traversal.json":  strings.Replace(relManifest("ot", "/srv/src/disk.raw", "raw", ""), `"output_format":"qcow2"`, `"output_format":"qcow2","output_dir":"/srv/out/../../etc/cron.d"`, 1),
			"out-name-slash.json": strings.Replace(relManifest("on", "/srv/src/disk.raw", "raw", ""), `"output_format":"qcow2"`, `"output_format":"qcow2","output_path":"../../../etc/cron.d/x"`, 1),
		}
		for name, m := range hostile {
			b.WriteFile(t, tbp+"."+name, []byte(m), 0o644)
		}
		script := `set -e; cd ` + tbp + `
for f in shadow.json etcdir.json loop.json hard.raw pipe.json $DEV dir.json huge.json big.json ` + strings.Join(relKeys(hostile), " ") + `; do mv ".$f" "$f"; done
mv .nl "$(printf 'evil\nname.json')"
mv .dots.raw 'a..b.raw'`
		dev := ""
		if devices {
			dev = "null.raw"
		}
		b.MustExec(t, "env", "DEV="+dev, "sh", "-c", script)

		want := map[string]string{ // settled name -> what its report must say
			"shadow.json":    "symbolic link",
			"etcdir.json":    "symbolic link",
			"loop.json":      "symbolic link",
			"hard.raw":       "hard link",
			"pipe.json":      "FIFO",
			"null.raw":       "device",
			"dir.json":       "director",
			"huge.json":      "larger than the limit",
			"big.json":       "larger than the limit",
			"evil_name.json": "control characters",
			"a__b.raw":       `".."`,

			"src-queue.json":      "drop folder",
			"src-etc.json":        "/etc",
			"src-link-etc.json":   "/etc",
			"src-output.json":     "output directory",
			"src-state.json":      "state directory",
			"out-etc.json":        "/etc",
			"out-queue.json":      "drop folder",
			"out-other-job.json":  "output directory",
			"out-traversal.json":  "/etc",
			"out-name-slash.json": "output_path",
		}
		if !devices {
			delete(want, "null.raw")
		}
		for name, text := range want {
			dir, rep := b.waitSettled(ctx, name)
			msg := fmt.Sprint(rep["error"], " ", rep["validation_errors"])
			if dir != "failed" || rep["status"] != "failed" || !strings.Contains(msg, text) {
				t.Errorf("%s: settled in %s/ with %v; want failed/ with an error mentioning %q", name, dir, msg, text)
			}
		}
		if after := b.MustExec(t, "sha256sum", "/etc/shadow"); after != shadowBefore {
			t.Errorf("/etc/shadow changed")
		}
		if out := b.MustExec(t, "stat", "-c", "%F %s", "/etc", "/srv/src/disk.raw"); !strings.Contains(out, "directory") || !strings.Contains(out, "regular file 16777216") {
			t.Errorf("targets of the links changed: %s", out)
		}
		if out := b.MustExec(t, "find", "/etc/cron.d", relQueue+"/to_be_processed", "-newer", "/srv/stage"); strings.Contains(out, "qcow2") || strings.Contains(out, "/x") {
			t.Errorf("something was written where a manifest pointed: %s", out)
		}
		if u := b.jobUnits(); len(u) != 0 {
			t.Errorf("hostile input started job units: %v", u)
		}
		if out := b.find(relQueue + "/to_be_processed"); strings.TrimSpace(out) != strings.TrimSuffix(tbp, "/") {
			t.Errorf("to_be_processed/ not empty after the agent refused everything:\n%s", out)
		}
		// And the agent still serves: a good manifest goes through.
		b.MustExec(t, "touch", "/srv/relgate/open")
		defer b.MustExec(t, "rm", "-f", "/srv/relgate/open")
		b.drop("", "good.json", relManifest("good", "/srv/src/disk.raw", "raw", ""))
		if dir, rep := b.waitSettled(ctx, "good.json"); dir != "processed" {
			t.Errorf("a good manifest after the attacks: %s %v", dir, rep)
		}
	})

	t.Run("access", func(t *testing.T) {
		aliceJob, out, err := b.submit(ctx, "alice", relManifest("alice-vm", "/srv/src/disk.raw", "raw", ""))
		if err != nil {
			t.Fatalf("alice (group hyper2kvm) cannot submit: %v\n%s", err, out)
		}
		if out, err := b.call(ctx, "carol", "GetStatus", ""); err != nil {
			t.Errorf("carol cannot read the status: %v %s", err, out)
		}
		if out, err := b.call(ctx, "carol", "ListJobs", "a{sv}", "0"); err != nil || !strings.Contains(out, relEscapePath(aliceJob)) {
			t.Errorf("carol cannot list jobs: %v %s", err, out)
		}
		_, out, err = b.submit(ctx, "carol", relManifest("carol-vm", "/srv/src/disk.raw", "raw", ""))
		relWantDenied(t, "Submit as carol", out, err, "io.hyper2kvm.agent.submit")
		out, err = b.hyperctl(ctx, "carol", "cancel", aliceJob)
		relWantDenied(t, "Cancel of alice's job as carol", out, err, "io.hyper2kvm.agent.cancel-any")
		out, err = b.hyperctl(ctx, "bob", "cancel", aliceJob)
		relWantDenied(t, "Cancel of alice's job as bob", out, err, "io.hyper2kvm.agent.cancel-any")
		// carol cannot drop either: the folder is group hyper2kvm's.
		if _, _, err := b.ExecAs(ctx, "carol", "touch", relQueue+"/to_be_processed/carol.json"); err == nil {
			t.Errorf("carol could create a file in to_be_processed/")
		}
		if st := b.jobState(ctx, aliceJob); st == "cancelled" {
			t.Errorf("alice's job was cancelled by refused calls")
		}
		// Allowed: it is cancelled, or (had it ended already) refused for
		// its state, never for want of authorization.
		if out, err := b.hyperctl(ctx, "alice", "cancel", aliceJob); err != nil && (strings.Contains(out, "not authorized") || !strings.Contains(out, "already")) {
			t.Errorf("alice cannot cancel her own job: %v %s", err, out)
		}
	})

	t.Run("submitter's own access to sources", func(t *testing.T) {
		// bob's home holds symlinks to the unreachable-but-world-readable
		// file and to its directory.
		b.ExecAs(ctx, "bob", "ln", "-s", "/srv/private/open.raw", "/home/bob/link.raw")
		b.ExecAs(ctx, "bob", "ln", "-s", "/srv/private", "/home/bob/privdir")

		// Refused at once: a file bob cannot read.
		_, out, err := b.submit(ctx, "bob", relManifest("direct", "/srv/private/secret.raw", "raw", ""))
		if err == nil || !strings.Contains(out, "cannot read") {
			t.Errorf("bob submitting root's 0600 file: %v %s; want InvalidManifest saying he cannot read it", err, out)
		}
		// The same file dropped by bob into the folder.
		b.drop("bob", "bob-direct.json", relManifest("direct", "/srv/private/secret.raw", "raw", ""))
		if dir, rep := b.waitSettled(ctx, "bob-direct.json"); dir != "failed" || !strings.Contains(fmt.Sprint(rep["error"]), "cannot read") {
			t.Errorf("bob dropping a manifest for root's file: %s %v", dir, rep["error"])
		}

		// Links to what bob cannot reach are refused before anything runs.
		for _, c := range []struct{ name, manifest string }{
			{"symlink", relManifest("link", "/home/bob/link.raw", "raw", "")},
			{"dir-symlink", relManifest("dirlink", "/home/bob/privdir/open.raw", "raw", "")},
		} {
			if _, out, err := b.submit(ctx, "bob", c.manifest); err == nil || !strings.Contains(out, "invalid manifest") {
				t.Errorf("%s to root's file: %v %s; want an invalid manifest", c.name, err, out)
			}
		}
	})

	t.Run("polkit gone", func(t *testing.T) {
		before := b.jobCount(ctx)
		b.MustExec(t, "systemctl", "mask", "--runtime", "polkit.service")
		b.MustExec(t, "systemctl", "stop", "polkit.service")
		_, out, err := b.submit(ctx, "alice", relManifest("nopolkit", "/srv/src/disk.raw", "raw", ""))
		relWantDenied(t, "Submit as alice without polkitd", out, err, "io.hyper2kvm.agent.submit")
		_, out, err = b.submit(ctx, "carol", relManifest("nopolkit", "/srv/src/disk.raw", "raw", ""))
		relWantDenied(t, "Submit as carol without polkitd", out, err, "io.hyper2kvm.agent.submit")
		if out, err := b.call(ctx, "carol", "GetStatus", ""); err != nil {
			t.Errorf("reads need no polkit, but GetStatus failed: %v %s", err, out)
		}
		if n := b.jobCount(ctx); n != before {
			t.Errorf("the agent lists %d jobs without polkitd, %d before", n, before)
		}
		b.MustExec(t, "systemctl", "unmask", "--runtime", "polkit.service")
		b.MustExec(t, "systemctl", "start", "polkit.service")
		if id, out, err := b.submit(ctx, "alice", relManifest("polkit-back", "/srv/src/disk.raw", "raw", "")); err != nil {
			t.Errorf("Submit as alice once polkitd is back: %v %s", err, out)
		} else if out, err := b.hyperctl(ctx, "alice", "cancel", id); err != nil && (strings.Contains(out, "not authorized") || !strings.Contains(out, "already")) {
			t.Errorf("Cancel as alice once polkitd is back: %v %s", err, out)
		}
	})

	t.Run("bridge", func(t *testing.T) {
		b.MustExec(t, "sh", "-c", "umask 027; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /etc/hyper2kvm/api.token; chgrp hyper2kvm /etc/hyper2kvm/api.token")
		token := strings.TrimSpace(b.MustExec(t, "cat", "/etc/hyper2kvm/api.token"))
		b.MustExec(t, "systemctl", "start", "hyper2kvm-api.socket")
		base := "http://127.0.0.1:8080"
		curl := func(user string, args ...string) (code, body string) {
			t.Helper()
			cmd := append([]string{"curl", "-sS", "--path-as-is", "-o", "/dev/stderr", "-w", "%{http_code}"}, args...)
			var out, stderr string
			if user == "" {
				out, stderr, _ = b.Exec(ctx, cmd...)
			} else {
				out, stderr, _ = b.ExecAs(ctx, user, cmd...)
			}
			return strings.TrimSpace(out), stderr
		}
		if code, body := curl("carol", base+"/api/workflow/status"); code != "200" {
			t.Errorf("carol reading the status over TCP: %s %s", code, body)
		}
		if _, _, err := b.ExecAs(ctx, "carol", "cat", "/etc/hyper2kvm/api.token"); err == nil {
			t.Errorf("carol can read the bridge's token")
		}
		if code, _ := curl("carol", "--unix-socket", "/run/hyper2kvm/api.sock", "http://x/api/workflow/status"); code == "200" {
			t.Errorf("carol reached the Unix socket (mode 0660, group hyper2kvm)")
		}
		good := relManifest("rest", "/srv/src/disk.raw", "raw", "")
		writes := []struct{ what, path, body string }{
			{"submit", "/api/workflow/manifest/submit", good},
			{"cancel", "/api/workflow/jobs/00000000/cancel", ""},
			{"retry", "/api/workflow/jobs/00000000/retry", ""},
		}
		for _, w := range writes {
			for _, auth := range []string{"", "Authorization: Bearer wrong", "Authorization: Basic " + token} {
				args := []string{"-X", "POST", "-H", "Content-Type: application/json", "--data-binary", w.body + " ", base + w.path}
				if auth != "" {
					args = append([]string{"-H", auth}, args...)
				}
				if code, body := curl("carol", args...); code != "401" {
					t.Errorf("%s with %q: %s %s; want 401", w.what, auth, code, body)
				}
			}
		}
		b.MustExec(t, "sh", "-c", "head -c 2097153 /dev/zero | tr '\\0' ' ' > /srv/big-body")
		if code, body := curl("", "-H", "Authorization: Bearer "+token, "-H", "Content-Type: application/json",
			"--data-binary", "@/srv/big-body", base+"/api/workflow/manifest/submit"); code != "413" {
			t.Errorf("2 MiB body: %s %s; want 413", code, body)
		}
		if code, body := curl("", "-H", "Authorization: Bearer "+token, "-H", "Content-Type: application/json",
			"--data-binary", good, base+"/api/workflow/manifest/submit"); code != "200" && code != "201" && code != "202" {
			t.Errorf("submit with the token: %s %s", code, body)
		}
		for _, p := range []string{
			"/../../../../etc/passwd",
			"/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
			"/web/../../../etc/passwd",
			"/api/workflow/jobs/..%2f..%2f..%2fetc%2fpasswd",
			"/api/workflow/jobs/..%2f..%2f..%2fetc%2fpasswd/log",
			"/api/workflow/jobs/%2e%2e/log",
			"/api/workflow/jobs/x%00y/log",
			"/api/workflow/jobs/x/log?format=../../etc/passwd",
			"/..%5c..%5c..%5cetc%5cpasswd",
			"//etc/passwd",
			"/static/..%2f..%2f..%2fetc%2fshadow",
		} {
			for _, auth := range [][]string{nil, {"-H", "Authorization: Bearer " + token}} {
				code, body := curl("", append(auth, base+p)...)
				if strings.Contains(body, "root:x:0:0") || strings.Contains(body, "root:*:") || strings.Contains(body, "root:!") || strings.Contains(body, marker) {
					t.Errorf("GET %s leaked a file outside the output directories (%s)", p, code)
				}
				if code == "200" && p != "//etc/passwd" {
					t.Errorf("GET %s: 200, want an error", p)
				}
			}
		}
	})
}

func relKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// relWantDenied checks that a call failed with AccessDenied naming action.
func relWantDenied(t *testing.T, what, out string, err error, action string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s succeeded, want a refusal (AccessDenied):\n%s", what, out)
		return
	}
	if !strings.Contains(out, "not authorized") || !strings.Contains(out, action) {
		t.Errorf("%s: %q, want a refusal (AccessDenied) naming %s", what, out, action)
	}
}

// privateFiles makes /srv/private (0700 root) holding open.raw (0644, but
// nobody else can reach it) and secret.raw (0600), both starting with a
// marker that must never show up in a converted disk a user can read. It
// returns the marker.
func (b *relBox) privateFiles(t *testing.T) string {
	t.Helper()
	marker := "HYPER2KVM-TOPSECRET-" + strings.ReplaceAll(fixture.NewUUID(t), "-", "")
	b.MustExec(t, "install", "-d", "-m", "0700", "/srv/private")
	for _, f := range []struct{ name, mode string }{{"open.raw", "0644"}, {"secret.raw", "0600"}} {
		p := "/srv/private/" + f.name
		b.MustExec(t, "qemu-img", "create", "-q", "-f", "raw", p, "4M")
		b.MustExec(t, "sh", "-c", fmt.Sprintf("printf %%s %s | dd of=%s conv=notrunc status=none", marker, p))
		b.MustExec(t, "chmod", f.mode, p)
	}
	return marker
}

// outputsContain reports whether any file the job left under the output
// directory holds text (disks are read as raw through qemu-img).
func (b *relBox) outputsContain(ctx context.Context, id, text string) bool {
	out, _, _ := b.Exec(ctx, "find", "/var/lib/hyper2kvm/output", "-path", "*/"+id+"/*", "-type", "f")
	for _, f := range strings.Fields(out) {
		raw := filepath.Join("/var/tmp", "rel-"+id+"-"+filepath.Base(f)+".raw")
		if _, _, err := b.Exec(ctx, "qemu-img", "convert", "-O", "raw", f, raw); err != nil {
			raw = f
		}
		if _, _, err := b.Exec(ctx, "grep", "-q", "-a", "-F", text, raw); err == nil {
			return true
		}
	}
	return false
}

func (b *relBox) jobCount(ctx context.Context) int {
	out, _, _ := b.Exec(ctx, "busctl", "call", relDest, relManager, relIface, "ListJobs", "a{sv}", "0")
	var n int
	fmt.Sscanf(strings.TrimSpace(out), "ao %d", &n)
	return n
}

package test

import (
	"context"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5/introspect"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/progress"
	"github.com/hyper2kvm/hyper2kvm/dbusapi"
	"github.com/hyper2kvm/hyper2kvm/test/box"
)

// The D-Bus API in a real box: dbus-daemon with the installed policy and
// activation file, systemd starting the agent on the first call, and the
// real polkitd reading the installed policy and rules. The unit tests in
// dbusapi cover every method and signal against a fake backend; these prove
// the installed system behaves as docs/DBUS.md says.

// dbusAgentYAML: jobs whose worker waits at a gate (so they stay running
// until cancelled), quick pipelines, and no idle exit during a test.
const dbusAgentYAML = `max_concurrent_jobs: 4
idle_timeout: 10m
stable_time: 200ms
worker_path: /srv/dbus-gate/worker
default_pipeline:
  inspect: {enabled: false}
  fix: {enabled: false}
  convert: {output_format: qcow2}
  validate: {enabled: false}
`

// dbusGateWorker tells systemd the job is up, holds it until
// /srv/dbus-gate/open exists, then runs the real worker.
const dbusGateWorker = `#!/bin/sh
systemd-notify --pid=$$ --ready --status="load ?: waiting at the test's gate"
while [ ! -e /srv/dbus-gate/open ]; do sleep 0.1; done
exec /usr/bin/hyper2kvmd "$@"
`

const (
	busDest    = "io.hyper2kvm.Agent1"
	busManager = "/io/hyper2kvm/Agent1"
	busIface   = "io.hyper2kvm.Agent1.Manager"
)

func startDBusBox(t *testing.T, gate bool) *box.Box {
	t.Helper()
	files := map[string]string{"/srv/dbus-gate/worker": dbusGateWorker}
	cfg := dbusAgentYAML
	if !gate {
		cfg = strings.Replace(cfg, "worker_path: /srv/dbus-gate/worker\n", "", 1)
		cfg = strings.Replace(cfg, "validate: {enabled: false}", "validate: {enabled: true}", 1)
	}
	files["/etc/hyper2kvm/agent.yaml"] = cfg
	b := box.Start(t, box.Options{
		Install: true,
		Users:   []string{"alice", "bob"},
		Groups:  map[string][]string{"hyper2kvm": {"bob"}},
		Files:   files,
	})
	b.MustExec(t, "chmod", "0755", "/srv/dbus-gate/worker")
	b.MustExec(t, "mkdir", "-p", "/srv/src")
	b.MustExec(t, "qemu-img", "create", "-q", "-f", "raw", "/srv/src/disk.raw", "64M")
	// Some data, so that conversion has something to copy.
	b.MustExec(t, "dd", "if=/dev/urandom", "of=/srv/src/disk.raw", "bs=1M", "count=16", "conv=notrunc", "status=none")
	b.MustExec(t, "chmod", "0644", "/srv/src/disk.raw")
	return b
}

func dbusManifest(name string) string {
	return fmt.Sprintf(`{"version":"1.0","name":%q,"pipeline":{"load":{"source_type":"raw","source_path":"/srv/src/disk.raw"},`+
		`"inspect":{"enabled":false},"fix":{"enabled":false},"convert":{"output_format":"qcow2"},"validate":{"enabled":false}}}`, name)
}

func dbusCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// gdbusCall calls a Manager method as user ("" for root) with gdbus, which
// prints the D-Bus error name of a failure, unlike busctl.
func gdbusCall(ctx context.Context, b *box.Box, user, path, method string, args ...string) (string, error) {
	cmd := append([]string{"gdbus", "call", "--system", "--dest", busDest, "--object-path", path, "--method", method}, args...)
	var out, stderr string
	var err error
	if user == "" {
		out, stderr, err = b.Exec(ctx, cmd...)
	} else {
		out, stderr, err = b.ExecAs(ctx, user, cmd...)
	}
	return out + stderr, err
}

// gvariantString quotes s as a GVariant text string (the manifests here
// hold no single quotes or backslashes).
func gvariantString(s string) string { return "'" + s + "'" }

var submittedRE = regexp.MustCompile(`^\(\['([^']+)'\], \[objectpath '([^']+)'\]\)`)

// submitAs submits a manifest as user and returns the job id and path.
func submitAs(t *testing.T, b *box.Box, user, name string) (string, string) {
	t.Helper()
	out, err := gdbusCall(dbusCtx(t), b, user, busManager, busIface+".Submit", gvariantString(dbusManifest(name)), "{}")
	if err != nil {
		t.Fatalf("Submit as %q: %v\n%s", user, err, out)
	}
	m := submittedRE.FindStringSubmatch(strings.TrimSpace(out))
	if m == nil {
		t.Fatalf("Submit as %q answered %q, want ([id], [path])", user, out)
	}
	return m[1], m[2]
}

// wantDenied checks that out is the named AccessDenied error naming action.
func wantDenied(t *testing.T, what, out string, err error, action string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s succeeded, want AccessDenied:\n%s", what, out)
		return
	}
	if !strings.Contains(out, "io.hyper2kvm.Agent1.Error.AccessDenied") || !strings.Contains(out, action) {
		t.Errorf("%s: %q, want io.hyper2kvm.Agent1.Error.AccessDenied naming %s", what, out, action)
	}
}

func jobProperty(ctx context.Context, b *box.Box, user, path, prop string) (string, error) {
	args := []string{"busctl", "get-property", busDest, path, "io.hyper2kvm.Agent1.Job", prop}
	var out, stderr string
	var err error
	if user == "" {
		out, stderr, err = b.Exec(ctx, args...)
	} else {
		out, stderr, err = b.ExecAs(ctx, user, args...)
	}
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, stderr)
	}
	return strings.TrimSpace(out), nil
}

// TestDBusActivationAndIntrospection: nothing runs the agent until a bus
// call needs it; busctl introspect then shows the interface, and what the
// running agent exports is the installed XML.
func TestDBusActivationAndIntrospection(t *testing.T) {
	t.Parallel()
	b := startDBusBox(t, true)
	ctx := dbusCtx(t)

	if out, _, _ := b.Exec(ctx, "systemctl", "is-active", "hyper2kvmd.service"); strings.TrimSpace(out) == "active" {
		t.Fatalf("hyper2kvmd.service is already active before any bus call")
	}
	out, stderr, err := b.ExecAs(ctx, "alice", "busctl", "introspect", busDest, busManager)
	if err != nil {
		t.Fatalf("busctl introspect as alice: %v\n%s%s\nagent log:\n%s", err, out, stderr, b.Journal(ctx, "-u", "hyper2kvmd.service", "-n", "40"))
	}
	for _, want := range []string{"io.hyper2kvm.Agent1.Manager", "org.freedesktop.DBus.ObjectManager", ".Submit", ".GetStatus", ".JobNew"} {
		if !strings.Contains(out, want) {
			t.Errorf("busctl introspect lacks %s:\n%s", want, out)
		}
	}
	if out := b.MustExec(t, "systemctl", "is-active", "hyper2kvmd.service"); strings.TrimSpace(out) != "active" {
		t.Errorf("after the call hyper2kvmd.service is %q, want active (started by D-Bus activation)", out)
	}
	if owner := b.MustExec(t, "busctl", "status", "--no-pager", busDest); !strings.Contains(owner, "Unit=hyper2kvmd.service") {
		t.Errorf("%s is not owned by hyper2kvmd.service:\n%s", busDest, owner)
	}

	// Only root may own the name (io.hyper2kvm.Agent1.conf): nobody can
	// pose as the agent.
	out, stderr, err = b.ExecAs(ctx, "alice", "gdbus", "call", "--system", "--dest", "org.freedesktop.DBus",
		"--object-path", "/org/freedesktop/DBus", "--method", "org.freedesktop.DBus.RequestName", busDest, "4")
	if err == nil || !strings.Contains(out+stderr, "org.freedesktop.DBus.Error.AccessDenied") {
		t.Errorf("RequestName %s as alice: %v %q, want org.freedesktop.DBus.Error.AccessDenied", busDest, err, out+stderr)
	}

	xmlOut := b.MustExec(t, "busctl", "introspect", "--xml-interface", busDest, busManager)
	var n introspect.Node
	if err := xml.Unmarshal([]byte(xmlOut), &n); err != nil {
		t.Fatalf("introspection is not XML: %v\n%s", err, xmlOut)
	}
	wantManager, _, err := dbusapi.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(n.Interfaces, func(i introspect.Interface) bool { return i.Name == busIface })
	if i < 0 || !reflect.DeepEqual(n.Interfaces[i], wantManager) {
		t.Errorf("the running agent's %s differs from io.hyper2kvm.Agent1.xml", busIface)
	}
	installed := b.MustExec(t, "cat", "/usr/share/dbus-1/interfaces/io.hyper2kvm.Agent1.xml")
	if installed != dbusapi.IntrospectionXML {
		t.Errorf("the installed interface file differs from dbusapi/io.hyper2kvm.Agent1.xml")
	}
}

// TestDBusAuthorization runs the authorization model through the real
// polkitd: alice (no group) reads only; bob (group hyper2kvm) submits and
// cancels his own jobs; nobody but root cancels others' jobs or retries.
func TestDBusAuthorization(t *testing.T) {
	t.Parallel()
	b := startDBusBox(t, true)
	checkAuthorization(t, b)
}

// TestDBusAuthorizationTestBackend runs the same checks with the agent
// replaced by dbusapi/internal/testagent (the real server, polkit client,
// bus policy, polkit policy and rules, over an in-memory job list whose jobs
// stay pending), so the authorization model is proven apart from the job
// engine.
func TestDBusAuthorizationTestBackend(t *testing.T) {
	t.Parallel()
	bin := buildTestAgent(t)
	b := startDBusBox(t, true)
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	b.WriteFile(t, "/usr/local/libexec/hyper2kvm-testagent", data, 0o755)
	b.MustExec(t, "systemd-run", "--unit=hyper2kvm-testagent", "-p", "Type=dbus", "-p", "BusName="+busDest,
		"/usr/local/libexec/hyper2kvm-testagent")
	checkAuthorization(t, b)
	if out := b.MustExec(t, "busctl", "status", "--no-pager", busDest); !strings.Contains(out, "Unit=hyper2kvm-testagent.service") {
		t.Errorf("%s was not served by the test backend:\n%s", busDest, out)
	}
}

var testAgentBin = struct {
	sync.Mutex
	path string
}{}

func buildTestAgent(t *testing.T) string {
	t.Helper()
	testAgentBin.Lock()
	defer testAgentBin.Unlock()
	if testAgentBin.path != "" {
		return testAgentBin.path
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to boot a systemd-nspawn box (run `make test-e2e` as root)")
	}
	dir, err := os.MkdirTemp("/var/tmp", "hyper2kvm-testagent-")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "testagent")
	cmd := exec.Command("go", "build", "-o", out, "./dbusapi/internal/testagent")
	cmd.Dir = box.RepoRoot()
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build testagent: %v\n%s", err, msg)
	}
	testAgentBin.path = out
	return out
}

// checkAuthorization: alice (no group) reads only; bob (group hyper2kvm)
// submits and cancels his own jobs; nobody but root cancels others' jobs or
// retries.
func checkAuthorization(t *testing.T, b *box.Box) {
	ctx := dbusCtx(t)
	bobUID := strings.TrimSpace(b.MustExec(t, "id", "-u", "bob"))

	t.Run("alice reads", func(t *testing.T) {
		for _, m := range []string{"GetStatus", "ListJobs"} {
			args := []string{}
			if m == "ListJobs" {
				args = []string{"{}"}
			}
			if out, err := gdbusCall(ctx, b, "alice", busManager, busIface+"."+m, args...); err != nil {
				t.Errorf("%s as alice: %v\n%s", m, err, out)
			}
		}
		out, err := gdbusCall(ctx, b, "alice", busManager, busIface+".Validate", gvariantString(dbusManifest("v")))
		if err != nil || !strings.HasPrefix(strings.TrimSpace(out), "(true,") {
			t.Errorf("Validate as alice: %v %q, want (true, [])", err, out)
		}
	})
	t.Run("alice cannot submit", func(t *testing.T) {
		out, err := gdbusCall(ctx, b, "alice", busManager, busIface+".Submit", gvariantString(dbusManifest("alice-vm")), "{}")
		wantDenied(t, "Submit as alice", out, err, "io.hyper2kvm.agent.submit")
		if list := b.MustExec(t, "busctl", "call", busDest, busManager, busIface, "ListJobs", "a{sv}", "0"); !strings.HasPrefix(strings.TrimSpace(list), "ao 0") {
			t.Errorf("a refused Submit left jobs: %s", list)
		}
	})

	bobID, bobPath := submitAs(t, b, "bob", "bob-vm")
	rootID, rootPath := submitAs(t, b, "", "root-vm")
	_, bobPath2 := submitAs(t, b, "bob", "bob-vm2")

	t.Run("job properties", func(t *testing.T) {
		if got, err := jobProperty(ctx, b, "alice", bobPath, "SubmittedBy"); err != nil || got != "x "+bobUID {
			t.Errorf("SubmittedBy of bob's job, read by alice: %q, %v; want x %s", got, err, bobUID)
		}
		if got, err := jobProperty(ctx, b, "alice", rootPath, "SubmittedBy"); err != nil || got != "x 0" {
			t.Errorf("SubmittedBy of root's job: %q, %v; want x 0", got, err)
		}
		if got, err := jobProperty(ctx, b, "alice", bobPath, "Id"); err != nil || got != fmt.Sprintf("s %q", bobID) {
			t.Errorf("Id of bob's job: %q, %v", got, err)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		out, err := gdbusCall(ctx, b, "alice", busManager, busIface+".Cancel", gvariantString(bobID))
		wantDenied(t, "Cancel of bob's job as alice", out, err, "io.hyper2kvm.agent.cancel-any")
		out, err = gdbusCall(ctx, b, "alice", bobPath, "io.hyper2kvm.Agent1.Job.Cancel")
		wantDenied(t, "Job.Cancel of bob's job as alice", out, err, "io.hyper2kvm.agent.cancel-any")
		out, err = gdbusCall(ctx, b, "bob", busManager, busIface+".Cancel", gvariantString(rootID))
		wantDenied(t, "Cancel of root's job as bob", out, err, "io.hyper2kvm.agent.cancel-any")
		for _, p := range []string{bobPath, rootPath} {
			if st, _ := jobProperty(ctx, b, "", p, "State"); st == `s "cancelled"` {
				t.Errorf("%s was cancelled by a refused call", p)
			}
		}

		if out, err := gdbusCall(ctx, b, "bob", busManager, busIface+".Cancel", gvariantString(bobID)); err != nil {
			t.Fatalf("Cancel of his own job as bob: %v\n%s\nagent log:\n%s", err, out, b.Journal(ctx, "-n", "80"))
		}
		if out, err := gdbusCall(ctx, b, "bob", bobPath2, "io.hyper2kvm.Agent1.Job.Cancel"); err != nil {
			t.Errorf("Job.Cancel of his own job as bob: %v\n%s", err, out)
		}
		if out, err := gdbusCall(ctx, b, "", busManager, busIface+".Cancel", gvariantString(rootID)); err != nil {
			t.Errorf("Cancel as root: %v\n%s", err, out)
		}
		for _, p := range []string{bobPath, bobPath2, rootPath} {
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			err := b.WaitFor(ctx, p+" cancelled", func() (bool, error) {
				st, err := jobProperty(ctx, b, "alice", p, "State")
				return st == `s "cancelled"`, err
			})
			if err != nil {
				t.Error(err)
			}
		}
	})
	t.Run("retry of another's job needs manage, of one's own submit", func(t *testing.T) {
		out, err := gdbusCall(ctx, b, "alice", busManager, busIface+".Retry", gvariantString(bobID))
		wantDenied(t, "Retry as alice", out, err, "io.hyper2kvm.agent.manage")
		out, err = gdbusCall(ctx, b, "bob", busManager, busIface+".Retry", gvariantString(bobID))
		if err != nil || !strings.Contains(out, "objectpath '/io/hyper2kvm/Agent1/job/") {
			t.Errorf("Retry of his own job as bob (group hyper2kvm, submit): %v %q", err, out)
		}
		out, err = gdbusCall(ctx, b, "", busManager, busIface+".Retry", gvariantString(bobID))
		if err != nil || !strings.Contains(out, "objectpath '/io/hyper2kvm/Agent1/job/") {
			t.Errorf("Retry as root: %v %q", err, out)
		}
	})
	t.Run("errors are named", func(t *testing.T) {
		out, err := gdbusCall(ctx, b, "alice", busManager, busIface+".GetJob", "'no-such-job'")
		if err == nil || !strings.Contains(out, "io.hyper2kvm.Agent1.Error.NoSuchJob") {
			t.Errorf("GetJob of nothing: %v %q, want io.hyper2kvm.Agent1.Error.NoSuchJob", err, out)
		}
		out, err = gdbusCall(ctx, b, "bob", busManager, busIface+".Submit", "'{\"version\":\"1.0\"}'", "{}")
		if err == nil || !strings.Contains(out, "io.hyper2kvm.Agent1.Error.InvalidManifest") {
			t.Errorf("Submit of a bad manifest: %v %q, want io.hyper2kvm.Agent1.Error.InvalidManifest", err, out)
		}
	})
}

// TestDBusWatchProgress: a client watching the bus (the Go client hyperctl
// and the bridge use) sees a real conversion go through its stages with
// rising progress to its end. The test only reads what arrives; it never
// assumes how fast.
func TestDBusWatchProgress(t *testing.T) {
	t.Parallel()
	b := startDBusBox(t, false)
	ctx := dbusCtx(t)

	// Root on the host is root on the box's bus: same uid, no user namespace.
	c, err := dbusapi.DialAddress(ctx, "unix:path="+b.Path("/run/dbus/system_bus_socket"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	events, err := c.Watch(ctx)
	if err != nil {
		t.Fatalf("Watch: %v\nagent log:\n%s", err, b.Journal(ctx, "-u", "hyper2kvmd.service", "-n", "40"))
	}
	manifest := strings.Replace(dbusManifest("watched"), `"validate":{"enabled":false}`, `"validate":{"enabled":true}`, 1)
	submitted, err := c.Submit(ctx, []byte(manifest), apitype.SubmitOptions{}, false)
	if err != nil || len(submitted) != 1 {
		t.Fatalf("Submit: %v %+v", err, submitted)
	}
	id := submitted[0].ID

	var stages []string
	var progressSeen []int
	var final jobs.Job
	for final.ID == "" {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("the watch ended before the job did")
			}
			if ev.Job.ID != id {
				continue
			}
			j := ev.Job
			if j.Stage != "" && (len(stages) == 0 || stages[len(stages)-1] != j.Stage) {
				stages = append(stages, j.Stage)
			}
			if j.Progress >= 0 && j.State == jobs.Running {
				progressSeen = append(progressSeen, j.Progress)
			}
			if j.State.Ready() {
				final = j
			}
		case <-ctx.Done():
			t.Fatalf("the job did not end; stages so far %v\nagent log:\n%s", stages, b.Journal(context.Background(), "-u", "hyper2kvmd.service", "-n", "60"))
		}
	}
	if final.State != jobs.Completed {
		t.Fatalf("job ended %s (%s), want completed\nagent log:\n%s", final.State, final.Error, b.Journal(ctx, "-u", "hyper2kvmd.service", "-n", "60"))
	}
	// Stages arrive in pipeline order, each once, and every enabled one shows.
	last := -1
	for _, s := range stages {
		i := slices.Index(progress.Stages, s)
		if i < 0 || i <= last {
			t.Errorf("stages %v are not in pipeline order %v", stages, progress.Stages)
			break
		}
		last = i
	}
	for _, want := range []string{"load", "convert", "validate"} {
		if !slices.Contains(stages, want) {
			t.Errorf("stages seen %v lack %s", stages, want)
		}
	}
	if !slices.IsSorted(progressSeen) {
		t.Errorf("progress went back: %v", progressSeen)
	}
	if final.Progress != 100 || len(final.Outputs) == 0 || final.FinishedAt.IsZero() {
		t.Errorf("final job %+v, want progress 100, outputs and a finish time", final)
	}
	// What the watcher ended with is what the agent reports.
	got, err := c.GetJob(ctx, id)
	if err != nil || got.State != final.State || got.Progress != final.Progress || !slices.Equal(got.Outputs, final.Outputs) {
		t.Errorf("GetJob = %+v, %v; the watcher ended with %+v", got, err, final)
	}
	t.Logf("stages %v, progress %v", stages, progressSeen)
}

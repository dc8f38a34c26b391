package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/test/box"
)

// Helpers shared by the reliability and security tests (docs/RELIABILITY.md).
// Every name starts with rel so that they never clash with the other e2e
// files of package test.

const relQueue = "/var/lib/hyper2kvm/manifest-workflow"

// relAgentYAML: quick jobs (INSPECT, FIX and VALIDATE off unless a manifest
// turns them on), jobs held at a gate when the worker wrapper is used, and no
// idle exit while a test runs.
const relAgentYAML = `max_concurrent_jobs: 4
idle_timeout: 10m
stable_time: 200ms
%s
job:
  runtime_max_sec: 900
default_pipeline:
  inspect: {enabled: false}
  fix: {enabled: false}
  convert: {output_format: qcow2}
  validate: {enabled: false}
`

// relGateWorker holds a job in its unit until /srv/relgate/open exists, then
// becomes the real worker.
const relGateWorker = `#!/bin/sh
while [ ! -e /srv/relgate/open ]; do sleep 0.1; done
exec /usr/bin/hyper2kvmd "$@"
`

type relBox struct {
	*box.Box
	t testing.TB
}

// relStart boots a box with the project installed and the agent configured;
// gate puts the gate wrapper in front of the worker. extraYAML is appended
// to the configuration's top level.
func relStart(t *testing.T, o box.Options, gate bool, extraYAML string) *relBox {
	t.Helper()
	worker := ""
	if gate {
		worker = "worker_path: /srv/relgate/worker"
	}
	if o.Files == nil {
		o.Files = map[string]string{}
	}
	o.Files["/etc/hyper2kvm/agent.yaml"] = fmt.Sprintf(relAgentYAML, worker+"\n"+extraYAML)
	o.Files["/srv/relgate/worker"] = relGateWorker
	o.Install = true
	b := &relBox{Box: box.Start(t, o), t: t}
	b.MustExec(t, "chmod", "0755", "/srv/relgate/worker")
	b.MustExec(t, "mkdir", "-p", "/srv/src", relQueue+"/to_be_processed")
	b.MustExec(t, "qemu-img", "create", "-q", "-f", "raw", "/srv/src/disk.raw", "16M")
	b.MustExec(t, "sh", "-c", "printf 'hyper2kvm reliability source' | dd of=/srv/src/disk.raw conv=notrunc status=none")
	b.MustExec(t, "chmod", "0644", "/srv/src/disk.raw")
	// As the package does: the path unit starts the agent for the queue.
	b.MustExec(t, "systemctl", "start", "hyper2kvmd.path")
	return b
}

func relCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func relManifest(name, src, srcType, extra string) string {
	return fmt.Sprintf(`{"version":"1.0","name":%q,%s"pipeline":{"load":{"source_type":%q,"source_path":%q},`+
		`"inspect":{"enabled":false},"fix":{"enabled":false},"convert":{"output_format":"qcow2"},"validate":{"enabled":false}}}`,
		name, extra, srcType, src)
}

func (b *relBox) day() string { return strings.TrimSpace(b.MustExec(b.t, "date", "+%Y-%m-%d")) }

// drop writes a manifest into to_be_processed/ as user ("" for root) the
// careful way: a dot-name first, then a rename.
func (b *relBox) drop(user, name, content string) {
	b.t.Helper()
	tmp := relQueue + "/to_be_processed/." + name
	b.WriteFile(b.t, tmp, []byte(content), 0o644)
	if user != "" {
		b.MustExec(b.t, "chown", user, tmp)
	}
	b.MustExec(b.t, "mv", tmp, relQueue+"/to_be_processed/"+name)
}

// settledIn reports where NAME settled today: "processed", "failed" or "".
func (b *relBox) settledIn(name string) (string, map[string]any) {
	day := b.day()
	for _, d := range []struct{ dir, suffix string }{{"processed", ".report.json"}, {"failed", ".error.json"}} {
		p := filepath.Join(relQueue, d.dir, day, name)
		data, err := os.ReadFile(b.Path(p + d.suffix))
		if err != nil {
			continue
		}
		var rep map[string]any
		if json.Unmarshal(data, &rep) != nil {
			continue // being written
		}
		return d.dir, rep
	}
	return "", nil
}

// waitSettled waits for NAME and its report in processed/ or failed/.
func (b *relBox) waitSettled(ctx context.Context, name string) (string, map[string]any) {
	b.t.Helper()
	var dir string
	var rep map[string]any
	err := b.WaitFor(ctx, name+" settled", func() (bool, error) {
		dir, rep = b.settledIn(name)
		return dir != "", nil
	})
	if err != nil {
		b.t.Fatalf("%v\nqueue:\n%s\nagent log:\n%s", err, b.find(relQueue), b.Journal(ctx, "-u", "hyper2kvmd.service", "-n", "80"))
	}
	return dir, rep
}

func (b *relBox) find(dir string) string {
	out, stderr, _ := b.Exec(context.Background(), "find", dir)
	return out + stderr
}

func (b *relBox) show(unit, prop string) string {
	out, _, _ := b.Exec(context.Background(), "systemctl", "show", "-p", prop, "--value", unit)
	return strings.TrimSpace(out)
}

// jobUnits lists hyper2kvm-job-*.service units systemd knows, with their
// active state.
func (b *relBox) jobUnits() map[string]string {
	out, _, _ := b.Exec(context.Background(), "systemctl", "list-units", "--no-legend", "--plain", "--all", "hyper2kvm-job-*.service")
	units := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 3 {
			units[f[0]] = f[2]
		}
	}
	return units
}

func (b *relBox) activeJobUnits() int {
	n := 0
	for _, st := range b.jobUnits() {
		if st == "active" || st == "activating" || st == "deactivating" {
			n++
		}
	}
	return n
}

// agentCounts reads the agent's STATUS= line, "N queued, M running".
func (b *relBox) agentCounts() (queued, running int, ok bool) {
	_, err := fmt.Sscanf(b.show("hyper2kvmd.service", "StatusText"), "%d queued, %d running", &queued, &running)
	return queued, running, err == nil
}

const (
	relDest    = "io.hyper2kvm.Agent1"
	relManager = "/io/hyper2kvm/Agent1"
	relIface   = "io.hyper2kvm.Agent1.Manager"
)

// call calls a Manager method with busctl as user ("" for root); on an
// error busctl prints the message, which names the polkit action.
func (b *relBox) call(ctx context.Context, user, method, sig string, args ...string) (string, error) {
	cmd := []string{"busctl", "--allow-interactive-authorization=no", "call", relDest, relManager, relIface, method}
	if sig != "" {
		cmd = append(append(cmd, sig), args...)
	}
	if user != "" {
		cmd = append([]string{"runuser", "-u", user, "--"}, cmd...)
	}
	out, stderr, err := b.Exec(ctx, cmd...)
	return out + stderr, err
}

// hyperctl runs hyperctl as user ("" for root), never asking for a password.
func (b *relBox) hyperctl(ctx context.Context, user string, args ...string) (string, error) {
	cmd := append([]string{"hyperctl", "--no-ask-password"}, args...)
	if user != "" {
		cmd = append([]string{"runuser", "-u", user, "--"}, cmd...)
	}
	out, stderr, err := b.Exec(ctx, cmd...)
	return out + stderr, err
}

var relSubmitSeq int

// submit submits a manifest as user with hyperctl (which prints the
// agent's refusal with its details) and returns the first job id, or the
// error text.
func (b *relBox) submit(ctx context.Context, user, manifest string) (string, string, error) {
	relSubmitSeq++
	f := fmt.Sprintf("/srv/rel/in/s%03d.json", relSubmitSeq)
	b.WriteFile(b.t, f, []byte(manifest), 0o644)
	out, err := b.hyperctl(ctx, user, "-o", "json", "submit", f)
	if err != nil {
		return "", out, err
	}
	var res struct {
		Jobs []struct {
			ID string `json:"id"`
		} `json:"jobs"`
	}
	if jerr := json.Unmarshal([]byte(out), &res); jerr != nil || len(res.Jobs) == 0 {
		return "", out, fmt.Errorf("hyperctl submit answered %q", out)
	}
	return res.Jobs[0].ID, out, nil
}

// jobState is the job's State property, read as root.
func (b *relBox) jobState(ctx context.Context, id string) string {
	out, _, _ := b.Exec(ctx, "busctl", "get-property", relDest, "/io/hyper2kvm/Agent1/job/"+relEscapePath(id), "io.hyper2kvm.Agent1.Job", "State")
	return strings.Trim(strings.TrimPrefix(strings.TrimSpace(out), "s "), `"`)
}

// relEscapePath escapes a job id the way sd_bus_path_encode does (ids are
// hex, which needs no escape unless it starts with a digit).
func relEscapePath(id string) string {
	var sb strings.Builder
	for i, c := range []byte(id) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || (c >= '0' && c <= '9' && i > 0) {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "_%02x", c)
		}
	}
	return sb.String()
}

// unitOf is the job unit of a job id.
func relUnitOf(id string) string { return "hyper2kvm-job-" + id + ".service" }

package test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/test/box"
)

// workflowYAML is the agent's configuration for the workflow tests: real
// workers (no gate), quick jobs.
const workflowYAML = `max_concurrent_jobs: 2
idle_timeout: 5m
verbose: true
stable_time: 200ms
`

// staleTemplate is an admin's template written for an older manifest: a
// misspelt field the agent must name at start.
const staleTemplate = `description: an admin's template with a field that no longer exists
parameters:
  - {name: load.source_path, description: the source, required: true, example: /srv/x.vmdk}
manifest:
  version: "1.0"
  pipeline:
    load: {source_type: vmdk}
    convert: {output_fromat: qcow2}
`

// workflowBox is an installed box with root's hyperctl, a blank 32 MiB raw
// image and a VMDK made from it in /srv/wf, and the agent configured.
func workflowBox(t *testing.T, files map[string]string) *box.Box {
	t.Helper()
	b := box.Start(t, box.Options{Install: true, Users: []string{"alice"}})
	b.WriteFile(t, "/etc/hyper2kvm/agent.yaml", []byte(workflowYAML), 0o644)
	for p, c := range files {
		b.WriteFile(t, p, []byte(c), 0o644)
	}
	b.MustExec(t, "mkdir", "-p", "/srv/wf")
	b.MustExec(t, "qemu-img", "create", "-q", "-f", "raw", "/srv/wf/disk.raw", "32M")
	b.MustExec(t, "qemu-img", "convert", "-O", "vmdk", "/srv/wf/disk.raw", "/srv/wf/disk.vmdk")
	b.MustExec(t, "chmod", "0644", "/srv/wf/disk.raw", "/srv/wf/disk.vmdk")
	return b
}

// TestWorkflowTemplates submits from a shipped template in a real box and
// checks that a stale admin template is named, with its field, by the
// agent at start and by hyperctl template list.
func TestWorkflowTemplates(t *testing.T) {
	t.Parallel()
	b := workflowBox(t, map[string]string{"/etc/hyper2kvm/templates/stale.yaml": staleTemplate})
	ctx := hyperctlCtx(t, 10*time.Minute)

	out, errOut, code := hyperctlRun(ctx, t, b, "alice", "template", "list")
	if code != 1 || !strings.Contains(out, "quick-no-fix") || !strings.Contains(out, "linux-default") ||
		!strings.Contains(errOut, "template stale (/etc/hyper2kvm/templates/stale.yaml) does not validate: pipeline.convert.output_fromat") {
		t.Fatalf("template list: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	out, errOut, code = hyperctlRun(ctx, t, b, "", "submit", "--wait", "-o", "json", "--template", "quick-no-fix",
		"--set", "load.source_path=/srv/wf/disk.vmdk", "--set", "load.source_type=vmdk", "--set", "name=fromtmpl")
	if code != 0 {
		t.Fatalf("submit --template: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	var res struct {
		Jobs []struct {
			ID, Name, State string
		} `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Jobs) != 1 || res.Jobs[0].Name != "fromtmpl" || res.Jobs[0].State != "completed" {
		t.Fatalf("submit --template: %v\n%s", err, out)
	}
	// The template turned INSPECT and FIX off: the report says so.
	rep := b.MustExec(t, "sh", "-c", "cat /var/lib/hyper2kvm/output/*/"+res.Jobs[0].ID+"/report.json")
	if !strings.Contains(rep, `"name": "inspect"`) || !strings.Contains(rep, `"status": "skipped"`) {
		t.Errorf("report of the template's job:\n%s", rep)
	}
	// The agent named the stale template when it started.
	j := b.Journal(context.Background(), "-u", "hyper2kvmd.service")
	if !strings.Contains(j, "template stale") || !strings.Contains(j, "pipeline.convert.output_fromat") {
		t.Errorf("the agent's journal does not name the stale template's field:\n%s", j)
	}
}

package test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/test/box"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// TestSecurityRootWorkerReadsForUser: a member of group hyper2kvm must not
// get the root worker to convert a file they cannot read, by any path the
// agent does not check when the manifest arrives:
//   - an OVF whose disk href goes through a symlinked directory: the agent
//     checks only the .ovf file;
//   - a source file swapped for a symlink after the agent's check and before
//     the worker opens it.
//
// The worker checks every file it opens against the submitter's uid
// (agent/engine userfiles.go): both jobs fail in LOAD saying why, and no
// output holds root's secret.
func TestSecurityRootWorkerReadsForUser(t *testing.T) {
	t.Parallel()
	b := relStart(t, box.Options{Groups: map[string][]string{"hyper2kvm": {"bob"}}}, true, "")
	ctx := relCtx(t, 5*time.Minute)
	marker := b.privateFiles(t)
	b.MustExec(t, "install", "-d", "-o", "bob", "-m", "0755", "/home/bob/vm")
	b.ExecAs(ctx, "bob", "ln", "-s", "/srv/private", "/home/bob/vm/sub")
	ovf := fixture.OVFXML(fixture.VM{Name: "bobvm"}, []fixture.OVFDisk{{File: "sub/open.raw", Size: 4 << 20, Capacity: 4 << 20, Format: "monolithicFlat"}})
	b.WriteFile(t, "/home/bob/vm/vm.ovf", []byte(ovf), 0o644)
	b.MustExec(t, "chown", "bob", "/home/bob/vm/vm.ovf")
	b.MustExec(t, "install", "-o", "bob", "-m", "0644", "/srv/src/disk.raw", "/home/bob/swap.raw")

	ids := map[string]string{}
	for name, m := range map[string]string{
		"ovf-href": relManifest("ovf", "/home/bob/vm/vm.ovf", "ovf", ""),
		"swap":     relManifest("swap", "/home/bob/swap.raw", "raw", ""),
	} {
		id, out, err := b.submit(ctx, "bob", m)
		switch {
		case err != nil && strings.Contains(out, "invalid manifest"):
			t.Logf("%s: refused at submit: %s", name, strings.TrimSpace(out))
		case err != nil:
			t.Fatalf("%s: submit failed oddly: %v %s", name, err, out)
		default:
			ids[name] = id
		}
	}
	if ids["swap"] == "" {
		t.Fatalf("bob's own readable file was refused")
	}
	// The job units wait at the gate: bob now swaps his checked file for a
	// link to root's secret.
	if err := b.WaitFor(ctx, "bob's jobs in their units", func() (bool, error) {
		for _, id := range ids {
			st := b.jobState(ctx, id)
			if b.show(relUnitOf(id), "ActiveState") != "activating" && st != "failed" && st != "completed" {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	b.ExecAs(ctx, "bob", "mv", "/home/bob/swap.raw", "/home/bob/swap.old")
	b.ExecAs(ctx, "bob", "ln", "-s", "/srv/private/secret.raw", "/home/bob/swap.raw")
	b.MustExec(t, "touch", "/srv/relgate/open")
	for name, id := range ids {
		if err := b.WaitFor(ctx, "job "+id+" final", func() (bool, error) {
			st := b.jobState(ctx, id)
			return st == "completed" || st == "failed" || st == "cancelled", nil
		}); err != nil {
			t.Fatal(err)
		}
		st := b.jobState(ctx, id)
		if leaked := b.outputsContain(ctx, id, marker); st == "completed" || leaked {
			t.Errorf("%s: bob's job %s ended %s, its output (readable by group hyper2kvm) holds root's secret: %v; "+
				"the root worker read a file bob cannot read", name, id, st, leaked)
		}
		if msg := b.jobProperty(ctx, id, "Error"); st != "failed" || !strings.Contains(msg, "is a symbolic link") {
			t.Errorf("%s: bob's job %s ended %s with error %q; want failed, naming the symbolic link it did not follow", name, id, st, msg)
		} else {
			t.Logf("%s: job %s failed: %s", name, id, msg)
		}
	}
}

// jobProperty is a string property of the job's D-Bus object, read as root.
func (b *relBox) jobProperty(ctx context.Context, id, prop string) string {
	out, _, _ := b.Exec(ctx, "busctl", "get-property", "--json=short", relDest, "/io/hyper2kvm/Agent1/job/"+relEscapePath(id), "io.hyper2kvm.Agent1.Job", prop)
	var v struct {
		Data string `json:"data"`
	}
	json.Unmarshal([]byte(out), &v)
	return v.Data
}

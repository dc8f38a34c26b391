package test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/test/box"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// TestReferencesStayBesideSource reproduces issue 16's items 2, 3 and 8 on
// the installed package, for root's jobs and for hyper2kvmd convert (the
// submitters the worker trusted with every file before):
//
//   - a qcow2 whose backing file is a 0600 host file holding a canary;
//   - a qcow2 whose external data file is that file;
//   - a sparse VMDK whose header defers to its embedded descriptor, naming
//     that file as its extent;
//   - an OVA holding a qcow2 whose backing file is that file.
//
// Each fails in LOAD naming the image, the file and allow_references, and no
// output holds the canary; the same manifest listing the file in
// load.allow_references converts, into outputs 0640 root:hyper2kvm in a
// 0750 directory. A 16 MiB VHDX claiming 64 TiB fails at once, naming
// limits.max_virtual_size. And a root job for a user's image that the user
// swaps for a symbolic link to a root-only file while the job waits fails,
// naming the link.
func TestReferencesStayBesideSource(t *testing.T) {
	t.Parallel()
	b := relStart(t, box.Options{Users: []string{"alice"}}, true, "")
	ctx := relCtx(t, 15*time.Minute)
	marker := "HYPER2KVM-CANARY-" + strings.ReplaceAll(fixture.NewUUID(t), "-", "")
	secret := "/root/host-secret.raw"
	b.MustExec(t, "qemu-img", "create", "-q", "-f", "raw", secret, "4M")
	b.MustExec(t, "sh", "-c", fmt.Sprintf("printf %%s %s | dd of=%s conv=notrunc status=none", marker, secret))
	b.MustExec(t, "chmod", "0600", secret)
	b.MustExec(t, "install", "-d", "-m", "0755", "/srv/vm", "/srv/rel/in")

	// Item 3 first, while the gate holds every job: alice's image, checked
	// when root submits it, becomes a link to root's file before the
	// worker opens it.
	b.MustExec(t, "install", "-d", "-o", "alice", "-m", "0755", "/home/alice/up")
	b.MustExec(t, "install", "-o", "alice", "-m", "0644", "/srv/src/disk.raw", "/home/alice/up/vm.raw")
	swapID, out, err := b.submit(ctx, "", relManifest("swapped", "/home/alice/up/vm.raw", "raw", ""))
	if err != nil {
		t.Fatalf("root's submit of alice's image: %v %s", err, out)
	}
	if err := b.WaitFor(ctx, "job "+swapID+" at the gate", func() (bool, error) {
		return b.show(relUnitOf(swapID), "ActiveState") == "activating", nil
	}); err != nil {
		t.Fatal(err)
	}
	b.ExecAs(ctx, "alice", "mv", "/home/alice/up/vm.raw", "/home/alice/up/vm.old")
	b.ExecAs(ctx, "alice", "ln", "-s", secret, "/home/alice/up/vm.raw")
	b.MustExec(t, "touch", "/srv/relgate/open")
	st, msg := b.waitJob(ctx, swapID)
	if st != "failed" || !strings.Contains(msg, "/home/alice/up/vm.raw is a symbolic link") {
		t.Errorf("swap: root's job ended %s with %q; want failed, naming the link it did not follow", st, msg)
	}
	if stage := b.jobProperty(ctx, swapID, "ErrorStage"); stage != "load" {
		t.Errorf("swap: root's job failed in stage %q, want load", stage)
	}
	if b.outputsContain(ctx, swapID, marker) {
		t.Errorf("swap: the output of root's job holds root's secret, read through alice's link")
	}

	// The images.
	b.MustExec(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw", "/srv/vm/backed.qcow2")
	dataSecret := "/root/host-data.raw"
	b.MustExec(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+dataSecret+",data_file_raw=on", "/srv/vm/external.qcow2", "4M")
	b.MustExec(t, "cp", "--preserve=mode", secret, dataSecret)
	b.WriteFile(t, "/srv/vm/sparse.vmdk", fixture.DeferringVMDK(fixture.FlatDescriptor(secret, 8192)), 0o644)
	b.MustExec(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw", "/var/tmp/member.qcow2")
	b.WriteFile(t, "/srv/vm/appliance.ova", refsOVA(t, b.Path("/var/tmp/member.qcow2")), 0o644)
	b.MustExec(t, "qemu-img", "create", "-q", "-f", "vhdx", "/srv/vm/huge.vhdx", "64T")
	t.Logf("huge.vhdx: %s bytes on disk, claiming 64 TiB", strings.TrimSpace(b.MustExec(t, "stat", "-c", "%s", "/srv/vm/huge.vhdx")))

	attacks := []struct {
		name, src, typ, kind, file string
	}{
		{"backing", "/srv/vm/backed.qcow2", "qcow2", "backing file", secret},
		{"datafile", "/srv/vm/external.qcow2", "qcow2", "external data file", dataSecret},
		{"sparse", "/srv/vm/sparse.vmdk", "vmdk", "extent", secret},
		{"ova", "/srv/vm/appliance.ova", "ova", "backing file", secret},
	}
	for _, a := range attacks {
		for _, allowed := range []bool{false, true} {
			name := "refs-" + a.name
			extra := ""
			if allowed {
				name += "-allowed"
				extra = fmt.Sprintf(`,"allow_references":[%q]`, a.file)
			}
			m := refsManifest(name, a.src, a.typ, extra)
			image := a.src
			if a.typ == "ova" {
				image = a.src + ":disk1.qcow2"
			}

			// As root's job, through the agent and a job unit.
			id, out, err := b.submit(ctx, "", m)
			if err != nil {
				t.Fatalf("%s: submit: %v %s", name, err, out)
			}
			st, msg := b.waitJob(ctx, id)
			leaked := b.outputsContain(ctx, id, marker)
			if !allowed {
				if st != "failed" || !strings.Contains(msg, image) || !strings.Contains(msg, a.kind) || !strings.Contains(msg, a.file) || !strings.Contains(msg, "allow_references") {
					t.Errorf("%s: root's job ended %s with %q; want failed in LOAD naming %s, its %s %s and allow_references", name, st, msg, image, a.kind, a.file)
				} else {
					t.Logf("%s: root's job failed: %s", name, msg)
				}
				if stage := b.jobProperty(ctx, id, "ErrorStage"); stage != "load" {
					t.Errorf("%s: root's job failed in stage %q, want load", name, stage)
				}
				if leaked {
					t.Errorf("%s: an output of root's job holds the canary of %s", name, a.file)
				}
			} else {
				if st != "completed" || !leaked {
					t.Errorf("%s: root's job with allow_references ended %s (%q), canary converted: %v; want completed with the allowed file's data", name, st, msg, leaked)
				}
				b.checkModes(t, name, strings.TrimSpace(b.MustExec(t, "sh", "-c", "ls -d /var/lib/hyper2kvm/output/*/"+id)))
			}

			// As hyper2kvmd convert, in the foreground.
			b.WriteFile(t, "/srv/rel/in/"+name+".json", []byte(m), 0o644)
			outDir := "/srv/convert-" + name
			cout, cerr, err := b.Exec(ctx, "hyper2kvmd", "convert", "-f", "/srv/rel/in/"+name+".json", "-o", outDir)
			convDir := outDir + "/" + name
			cleaked := b.dirContains(ctx, convDir, marker)
			if !allowed {
				if err == nil || !strings.Contains(cerr, image) || !strings.Contains(cerr, a.file) || !strings.Contains(cerr, "allow_references") {
					t.Errorf("%s: hyper2kvmd convert: %v\n%s%s\nwant a failure naming %s, %s and allow_references", name, err, cout, cerr, image, a.file)
				}
				if stage := b.reportStage(t, convDir+"/"+name+".report.json"); stage != "load" {
					t.Errorf("%s: hyper2kvmd convert failed in stage %q, want load", name, stage)
				}
				if cleaked {
					t.Errorf("%s: an output of hyper2kvmd convert holds the canary of %s", name, a.file)
				}
			} else {
				if err != nil || !cleaked {
					t.Errorf("%s: hyper2kvmd convert with allow_references: %v (canary converted: %v)\n%s%s", name, err, cleaked, cout, cerr)
				}
				b.checkModes(t, name+" (convert)", convDir)
			}
		}
	}

	// Item 8: the virtual size limit, before anything is converted.
	id, out, err := b.submit(ctx, "", refsManifest("huge", "/srv/vm/huge.vhdx", "vhdx", ""))
	if err != nil {
		t.Fatalf("huge: submit: %v %s", err, out)
	}
	st, msg = b.waitJob(ctx, id)
	if st != "failed" || !strings.Contains(msg, "64 TiB") || !strings.Contains(msg, "limits.max_virtual_size") {
		t.Errorf("huge: root's job ended %s with %q; want failed naming 64 TiB and limits.max_virtual_size", st, msg)
	} else {
		t.Logf("huge: %s", msg)
	}
	if stage := b.jobProperty(ctx, id, "ErrorStage"); stage != "load" {
		t.Errorf("huge: failed in stage %q, want load", stage)
	}
	b.WriteFile(t, "/srv/rel/in/huge.json", []byte(refsManifest("huge", "/srv/vm/huge.vhdx", "vhdx", "")), 0o644)
	if _, cerr, err := b.Exec(ctx, "hyper2kvmd", "convert", "-f", "/srv/rel/in/huge.json", "-o", "/srv/convert-huge"); err == nil || !strings.Contains(cerr, "limits.max_virtual_size") {
		t.Errorf("huge: hyper2kvmd convert: %v %s; want a failure naming limits.max_virtual_size", err, cerr)
	}
}

// refsManifest is a manifest converting src with the quick pipeline; extra
// goes into load.
func refsManifest(name, src, srcType, extra string) string {
	return fmt.Sprintf(`{"version":"1.0","name":%q,"pipeline":{"load":{"source_type":%q,"source_path":%q%s},`+
		`"inspect":{"enabled":false},"fix":{"enabled":false},"convert":{"output_format":"qcow2"},"validate":{"enabled":false}}}`,
		name, srcType, src, extra)
}

// refsOVA is an OVA holding an OVF and one qcow2 disk, disk1.qcow2, with
// the bytes of the file at path (on the host).
func refsOVA(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, make([]byte, (512-len(data)%512)%512)...) // whole sectors, for qemu's raw driver
	ovf := fixture.OVFXML(fixture.VM{Name: "refs"}, []fixture.OVFDisk{{File: "disk1.qcow2", Size: int64(len(data)), Capacity: 4 << 20}})
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range []struct {
		name string
		data []byte
	}{{"refs.ovf", []byte(ovf)}, {"disk1.qcow2", data}} {
		if err := tw.WriteHeader(&tar.Header{Name: m.name, Mode: 0o644, Size: int64(len(m.data)), Format: tar.FormatUSTAR}); err != nil {
			t.Fatal(err)
		}
		tw.Write(m.data)
	}
	tw.Close()
	return buf.Bytes()
}

// waitJob waits for the job to end and returns its state and error.
func (b *relBox) waitJob(ctx context.Context, id string) (string, string) {
	b.t.Helper()
	if err := b.WaitFor(ctx, "job "+id+" final", func() (bool, error) {
		st := b.jobState(ctx, id)
		return st == "completed" || st == "failed" || st == "cancelled", nil
	}); err != nil {
		b.t.Fatalf("%v\n%s", err, b.Journal(ctx, "-n", "60"))
	}
	return b.jobState(ctx, id), b.jobProperty(ctx, id, "Error")
}

// reportStage is the failed stage NAME.report.json names ("" when none).
func (b *relBox) reportStage(t *testing.T, path string) string {
	data, err := os.ReadFile(b.Path(path))
	if err != nil {
		t.Errorf("no report: %v", err)
		return ""
	}
	var rep struct {
		Error *struct {
			Stage string `json:"stage"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &rep) != nil || rep.Error == nil {
		return ""
	}
	return rep.Error.Stage
}

// dirContains reports whether a file in dir holds text (disks read as raw).
func (b *relBox) dirContains(ctx context.Context, dir, text string) bool {
	out, _, _ := b.Exec(ctx, "find", dir, "-type", "f")
	for _, f := range strings.Fields(out) {
		raw := "/var/tmp/refs-" + strings.ReplaceAll(strings.TrimPrefix(f, "/"), "/", "_") + ".raw"
		if _, _, err := b.Exec(ctx, "qemu-img", "convert", "-O", "raw", f, raw); err != nil {
			raw = f
		}
		if _, _, err := b.Exec(ctx, "grep", "-q", "-a", "-F", text, raw); err == nil {
			return true
		}
	}
	return false
}

// checkModes wants every output in dir 0640 root:hyper2kvm and dir itself
// 0750 root:hyper2kvm.
func (b *relBox) checkModes(t *testing.T, what, dir string) {
	t.Helper()
	out := b.MustExec(t, "find", dir, "-printf", "%y %m %u:%g %p\n")
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) != 4 {
			continue
		}
		want := "640 root:hyper2kvm"
		if f[0] == "d" {
			want = "750 root:hyper2kvm"
		}
		if f[1]+" "+f[2] != want {
			t.Errorf("%s: %s is %s %s, want %s", what, f[3], f[1], f[2], want)
		}
		n++
	}
	if n < 4 {
		t.Errorf("%s: %s holds %d entries, want the directory, a disk, NAME.xml and NAME.report.json:\n%s", what, dir, n, out)
	}
}

// leaseHoldQemuImg is the real qemu-img, except that for a job the test
// holds (relStageLib: /srv/relgate/hold/NAME says "load" or "convert") it
// waits, at LOAD's first qemu-img info or before CONVERT's qemu-img convert
// starts, until /srv/relgate/go/NAME exists. The worker keeps running
// meanwhile: it is the worker that must notice a writer.
const leaseHoldQemuImg = `#!/bin/bash
real=/usr/bin/qemu-img
` + relStageLib + `
point=
if [ "$1" = info ]; then point=load; elif [ "$1 $2" = "convert -p" ]; then point=convert; fi
if [ -n "$point" ] && relhold "$point"; then
	relheld "$point"
	while [ ! -e "/srv/relgate/go/$relname" ]; do sleep 0.1; done
fi
exec "$real" "$@"
`

// TestReferencesSourceWrittenWhileHeld: a user who may write a source
// writes it while the job reads it, the job held by a qemu-img wrapper:
//
//   - carol (outside group hyper2kvm) opens her image for writing while
//     root's job of it waits in LOAD;
//   - bob (in group hyper2kvm) rewrites his own job's image, while it waits
//     to start CONVERT, with a qcow2 header keeping its data in a root-only
//     file holding a canary; he had planted the partial output in his
//     output directory, with a second name to keep it.
//
// Each job fails in its stage naming the image ("... was opened for
// writing while the job read it; the job was stopped and its outputs
// removed"); no output or report holds the canary; the partial output was
// root's 0600 file while held, one bob cannot read, and the file he
// planted was never written to.
func TestReferencesSourceWrittenWhileHeld(t *testing.T) {
	t.Parallel()
	b := relStart(t, box.Options{Users: []string{"carol"}, Groups: map[string][]string{"hyper2kvm": {"bob"}}}, false, "")
	ctx := relCtx(t, 10*time.Minute)
	b.WriteFile(t, "/usr/local/bin/qemu-img", []byte(leaseHoldQemuImg), 0o755)
	b.MustExec(t, "mkdir", "-p", "/srv/relgate/hold", "/srv/relgate/held", "/srv/relgate/go", "/srv/rel/in")
	marker := "HYPER2KVM-LEASE-CANARY-" + strings.ReplaceAll(fixture.NewUUID(t), "-", "")
	secret := "/root/lease-secret.raw"
	// The header bob writes: a qcow2 of the same size keeping its data in
	// secret (made by qemu-img create, which writes the data file: the
	// canary goes in afterwards).
	b.MustExec(t, "/usr/bin/qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+secret+",data_file_raw=on", "/var/tmp/evil.qcow2", "4M")
	b.MustExec(t, "sh", "-c", fmt.Sprintf("printf %%s %s | dd of=%s conv=notrunc status=none", marker, secret))
	b.MustExec(t, "chmod", "0600", secret)
	b.MustExec(t, "chmod", "0644", "/var/tmp/evil.qcow2")
	for _, u := range []string{"carol", "bob"} {
		b.MustExec(t, "install", "-d", "-o", u, "-m", "0755", "/home/"+u+"/up")
		b.MustExec(t, "/usr/bin/qemu-img", "create", "-q", "-f", "qcow2", "/home/"+u+"/up/vm.qcow2", "4M")
		b.MustExec(t, "chown", u+":", "/home/"+u+"/up/vm.qcow2")
	}
	hold := func(name, point string) {
		b.WriteFile(t, "/srv/relgate/hold/"+name, []byte(point), 0o644)
	}
	waitHeld := func(name, id string) {
		t.Helper()
		if err := b.WaitFor(ctx, name+" held", func() (bool, error) {
			if st := b.jobState(ctx, id); st == "completed" || st == "failed" || st == "cancelled" {
				return false, fmt.Errorf("job %s ended %s before it was held: %s", id, st, b.jobProperty(ctx, id, "Error"))
			}
			_, err := os.Stat(b.Path("/srv/relgate/held/" + name))
			return err == nil, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	want := func(name, id, src, stage string) {
		t.Helper()
		st, msg := b.waitJob(ctx, id)
		sentence := src + " was opened for writing while the job read it; the job was stopped and its outputs removed"
		if st != "failed" || !strings.Contains(msg, sentence) {
			t.Errorf("%s: the job ended %s with %q; want failed with %q", name, st, msg, sentence)
		} else {
			t.Logf("%s: %s", name, msg)
		}
		if got := b.jobProperty(ctx, id, "ErrorStage"); got != stage {
			t.Errorf("%s: failed in stage %q, want %s", name, got, stage)
		}
		if b.outputsContain(ctx, id, marker) {
			t.Errorf("%s: an output or the report holds the canary", name)
		}
	}

	// carol opens her image for writing while root's job of it is in LOAD.
	hold("lease-carol", "load")
	carolID, out, err := b.submit(ctx, "", refsManifest("lease-carol", "/home/carol/up/vm.qcow2", "qcow2", ""))
	if err != nil {
		t.Fatalf("root's submit of carol's image: %v %s", err, out)
	}
	waitHeld("lease-carol", carolID)
	// The open waits until the worker lets go of its lease.
	if _, stderr, err := b.ExecAs(ctx, "carol", "sh", "-c", "exec 3>>/home/carol/up/vm.qcow2"); err != nil {
		t.Fatalf("carol cannot open her image for writing: %v %s", err, stderr)
	}
	b.MustExec(t, "touch", "/srv/relgate/go/lease-carol")
	want("carol", carolID, "/home/carol/up/vm.qcow2", "load")

	// bob plants his job's partial output, keeping a second name for it,
	// then rewrites his image's header while the job waits in CONVERT.
	// (Outside /home, which job units see read-only.)
	b.MustExec(t, "install", "-d", "-o", "bob", "-m", "0755", "/srv/bob", "/srv/bob/out")
	part := "/srv/bob/out/lease-bob.qcow2.part"
	if _, stderr, err := b.ExecAs(ctx, "bob", "sh", "-c", "umask 0; : >"+part+" && ln "+part+" /srv/bob/keep"); err != nil {
		t.Fatalf("bob cannot plant the partial output: %v %s", err, stderr)
	}
	hold("lease-bob", "convert")
	bobM := strings.Replace(refsManifest("lease-bob", "/home/bob/up/vm.qcow2", "qcow2", ""), `"output_format":"qcow2"`, `"output_format":"qcow2","output_dir":"/srv/bob/out"`, 1)
	bobID, out, err := b.submit(ctx, "bob", bobM)
	if err != nil {
		t.Fatalf("bob's submit: %v %s", err, out)
	}
	waitHeld("lease-bob", bobID)
	if got := strings.TrimSpace(b.MustExec(t, "stat", "-c", "%a %U %h", part)); got != "600 root 1" {
		t.Errorf("bob: the partial output is %q while qemu-img is about to write it, want a new file: 600 root 1 (mode, owner, links)", got)
	}
	if _, _, err := b.ExecAs(ctx, "bob", "head", "-c", "1", part); err == nil {
		t.Errorf("bob can read the partial output of his job while it is written")
	}
	if _, stderr, err := b.ExecAs(ctx, "bob", "dd", "if=/var/tmp/evil.qcow2", "of=/home/bob/up/vm.qcow2", "conv=notrunc", "status=none"); err != nil {
		t.Fatalf("bob cannot rewrite his image: %v %s", err, stderr)
	}
	b.MustExec(t, "touch", "/srv/relgate/go/lease-bob")
	want("bob", bobID, "/home/bob/up/vm.qcow2", "convert")
	if b.dirContains(ctx, "/srv/bob", marker) {
		t.Errorf("bob: his output directory or the file he kept holds the canary of %s", secret)
	}
	if got := strings.TrimSpace(b.MustExec(t, "stat", "-c", "%s %U", "/srv/bob/keep")); got != "0 bob" {
		t.Errorf("bob: the partial output he planted is now %q (size, owner), want untouched: 0 bob", got)
	}
	if _, err := os.Stat(b.Path(part)); err == nil {
		t.Errorf("bob: %s is left behind", part)
	}
}

package test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/test/box"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// The vSphere source end to end (docs/SOURCES.md): govmomi's simulator
// runs in the box as a service of its own (test/vcsim), serving the
// fixture guest's disk as its VM's disk; the agent reads the VM through a
// registered source whose password is a systemd credential.

const vsPassword = "Sim-Pa55-e2e-7f3a91"

// vcsimBin builds test/vcsim once per test binary.
func vcsimBin(t *testing.T) []byte {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	out := filepath.Join(t.TempDir(), "vcsim")
	cmd := exec.Command(goBin, "build", "-o", out, "./test/vcsim")
	cmd.Dir = box.RepoRoot()
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build vcsim: %v\n%s", err, msg)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

type vcsimInfo struct {
	URL, Thumbprint, User, VM string
}

// startVcsim runs the simulator in the box as unit NAME.service on port,
// its first VM shaped by args, and waits for it.
func startVcsim(t *testing.T, b *relBox, name string, port int, args ...string) vcsimInfo {
	t.Helper()
	info := "/srv/vcsim/" + name + ".json"
	cmd := append([]string{"systemd-run", "--unit=" + name, "--service-type=exec", "/usr/local/bin/vcsim", "serve",
		fmt.Sprintf("--listen=127.0.0.1:%d", port), "--user=svc-hyper2kvm", "--password-file=/srv/vcsim/password", "--info=" + info}, args...)
	b.MustExec(t, cmd...)
	var in vcsimInfo
	err := b.WaitFor(relCtx(t, 2*time.Minute), name+" serving", func() (bool, error) {
		data, err := os.ReadFile(b.Path(info))
		if err != nil {
			return false, nil
		}
		return true, json.Unmarshal(data, &in)
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, b.Journal(relCtx(t, time.Minute), "-u", name))
	}
	return in
}

func (b *relBox) vcsim(t *testing.T, name string, args ...string) string {
	t.Helper()
	return b.MustExec(t, append([]string{"/usr/local/bin/vcsim", args[0], "--info=/srv/vcsim/" + name + ".json", "--password-file=/srv/vcsim/password"}, args[1:]...)...)
}

// addSource writes a source file; the password is set with hyper2kvmd
// source set-password from standard input, as an admin would.
func addSource(t *testing.T, b *relBox, name, url, thumbprint, password string) {
	t.Helper()
	b.WriteFile(t, "/etc/hyper2kvm/sources.d/"+name+".yaml", []byte(fmt.Sprintf("type: vsphere\nurl: %s\nusername: svc-hyper2kvm\nthumbprint: %q\n", url, thumbprint)), 0o644)
	b.WriteFile(t, "/root/pw-"+name, []byte(password+"\n"), 0o600)
	b.MustExec(t, "sh", "-c", "hyper2kvmd source set-password "+name+" < /root/pw-"+name+" && rm /root/pw-"+name)
}

func vsManifest(name, source, vm, extra string) string {
	return fmt.Sprintf(`{"version":"1.0","name":%q,"pipeline":{"load":{"source_type":"vsphere","source":%q,"vm":%q%s},`+
		`"inspect":{"enabled":false},"fix":{"enabled":false},"convert":{"output_format":"qcow2"},"validate":{"enabled":false}}}`, name, source, vm, extra)
}

func reportError(rep map[string]any) string {
	b, _ := json.Marshal(rep)
	return string(b)
}

func TestVSphereSource(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to boot a systemd-nspawn box")
	}
	t.Parallel()
	bin := vcsimBin(t)
	dir := t.TempDir()
	raw := fixture.LinuxDisk(t, dir, fixture.Options{SizeMB: 16})
	vmdk := fixture.Convert(t, raw, "vmdk", "streamOptimized")
	vmdkData, err := os.ReadFile(vmdk)
	if err != nil {
		t.Fatal(err)
	}
	rawData, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	b := relStart(t, box.Options{Users: []string{"alice", "bob"}, Groups: map[string][]string{"hyper2kvm": {"alice"}}}, false, "")
	ctx := relCtx(t, 15*time.Minute)
	b.WriteFile(t, "/usr/local/bin/vcsim", bin, 0o755)
	b.WriteFile(t, "/srv/vcsim/password", []byte(vsPassword+"\n"), 0o600)
	b.WriteFile(t, "/srv/vcsim/web01.vmdk", vmdkData, 0o644)
	b.WriteFile(t, "/srv/vcsim/web01.raw", rawData, 0o644)
	macs := "00:50:56:aa:bb:01,00:50:56:aa:bb:02"
	vc := startVcsim(t, b, "vcsim-vc", 18443, "--disk=/srv/vcsim/web01.vmdk", "--cpus=4", "--cores=2", "--memory=3072", "--firmware=efi", "--macs="+macs, "--power=off", "--hold-nfc=/srv/vcsim/hold")
	esx := startVcsim(t, b, "vcsim-esx", 18444, "--esx", "--disk=/srv/vcsim/web01.vmdk", "--cpus=2", "--memory=1024", "--power=off")
	addSource(t, b, "vc1", vc.URL, vc.Thumbprint, vsPassword)
	addSource(t, b, "esx1", esx.URL, esx.Thumbprint, vsPassword)
	addSource(t, b, "badpw", vc.URL, vc.Thumbprint, "not-the-password")
	addSource(t, b, "badtp", vc.URL, strings.Repeat("AB:", 31)+"AB", vsPassword)

	day := b.day()
	t.Run("powered off VM from a vCenter, dropped", func(t *testing.T) {
		b.drop("", "web01.json", vsManifest("web01", "vc1", vc.VM, ""))
		where, rep := b.waitSettled(ctx, "web01.json")
		if where != "processed" {
			t.Fatalf("settled in %s: %s\njournal:\n%s", where, reportError(rep), b.Journal(ctx, "-n", "80"))
		}
		out := strings.TrimSpace(b.MustExec(t, "sh", "-c", "ls -d /var/lib/hyper2kvm/output/"+day+"/*/ | head -1"))
		domain := b.MustExec(t, "cat", out+"web01.xml")
		if !strings.Contains(domain, `firmware="efi"`) && !strings.Contains(domain, "OVMF") {
			t.Errorf("web01.xml boots with neither UEFI autoselection nor an OVMF loader:\n%s", domain)
		}
		for _, want := range []string{"00:50:56:aa:bb:01", "00:50:56:aa:bb:02", `<vcpu>4</vcpu>`, `<memory unit="MiB">3072</memory>`, `sockets="2"`} {
			if !strings.Contains(domain, want) {
				t.Errorf("domain.xml lacks %s:\n%s", want, domain)
			}
		}
		report := b.MustExec(t, "cat", out+"web01.report.json")
		for _, want := range []string{`"export_method": "datastore"`, `"mac": "00:50:56:aa:bb:02"`, `"network": "VM Network"`, `"controller": "scsi0:0"`} {
			if !strings.Contains(report, want) {
				t.Errorf("report.json lacks %s", want)
			}
		}
		// The conversion holds the guest's very bytes.
		if _, stderr, err := b.Exec(ctx, "qemu-img", "compare", "-q", "/srv/vcsim/web01.raw", out+"web01.qcow2"); err != nil {
			t.Errorf("the output differs from the VM's disk: %v %s", err, stderr)
		}
	})

	t.Run("standalone ESXi", func(t *testing.T) {
		b.drop("", "esx01.json", vsManifest("esx01", "esx1", esx.VM, ""))
		if where, rep := b.waitSettled(ctx, "esx01.json"); where != "processed" {
			t.Fatalf("settled in %s: %s", where, reportError(rep))
		}
	})

	t.Run("running VM refused without snapshot, exported from one with it", func(t *testing.T) {
		b.vcsim(t, "vcsim-vc", "power", "on")
		b.drop("", "on.json", vsManifest("on", "vc1", vc.VM, ""))
		where, rep := b.waitSettled(ctx, "on.json")
		if where != "failed" || !strings.Contains(reportError(rep), "set load.snapshot: true") {
			t.Errorf("running VM: %s %s", where, reportError(rep))
		}
		b.drop("", "snap.json", vsManifest("snap", "vc1", vc.VM, `,"snapshot":true`))
		where, rep = b.waitSettled(ctx, "snap.json")
		if where != "processed" || !strings.Contains(reportError(rep), `"export_method":"nfc"`) {
			t.Errorf("snapshot export: %s %s", where, reportError(rep))
		}
		if snaps := strings.TrimSpace(b.vcsim(t, "vcsim-vc", "snapshots")); snaps != "" {
			t.Errorf("snapshots left on the VM: %q", snaps)
		}
		b.vcsim(t, "vcsim-vc", "power", "off")
	})

	t.Run("a worker killed mid-export leaves no snapshot", func(t *testing.T) {
		b.vcsim(t, "vcsim-vc", "power", "on")
		defer b.vcsim(t, "vcsim-vc", "power", "off")
		// The simulator holds the export's download until the file goes.
		b.MustExec(t, "touch", "/srv/vcsim/hold")
		b.drop("", "killed.json", vsManifest("killed", "vc1", vc.VM, `,"snapshot":true`))
		var record string
		err := b.WaitFor(ctx, "the job's snapshot record", func() (bool, error) {
			out, _, _ := b.Exec(ctx, "sh", "-c", "ls /var/lib/hyper2kvm/jobs/*/vsphere-snapshot 2>/dev/null")
			record = strings.TrimSpace(out)
			return record != "", nil
		})
		if err != nil {
			t.Fatalf("%v\n%s", err, b.Journal(ctx, "-n", "40"))
		}
		id := filepath.Base(filepath.Dir(record))
		if snaps := strings.TrimSpace(b.vcsim(t, "vcsim-vc", "snapshots")); snaps != "hyper2kvm-"+id {
			t.Fatalf("snapshots while the export waits: %q", snaps)
		}
		unit := relUnitOf(id)
		pid := strings.TrimSpace(b.MustExec(t, "systemctl", "show", "-p", "MainPID", "--value", unit))
		// The running worker: the password is in neither its environment,
		// its command line nor its unit's properties.
		seen := b.MustExec(t, "sh", "-c", "tr '\\0' '\\n' < /proc/"+pid+"/environ; tr '\\0' ' ' < /proc/"+pid+"/cmdline; systemctl show "+unit)
		if strings.Contains(seen, vsPassword) {
			t.Error("the password is in the running worker's environment, command line or unit")
		}
		// It has it as a credential: in the unit's own credentials
		// directory, a ramfs only the unit sees.
		if !strings.Contains(seen, "CREDENTIALS_DIRECTORY=/run/credentials/"+unit) {
			t.Errorf("the worker has no credentials directory:\n%s", seen)
		}
		if got := strings.TrimSpace(b.MustExec(t, "cat", "/run/credentials/"+unit+"/source-vc1")); got != vsPassword {
			t.Errorf("the unit's credential source-vc1 is not the password")
		}
		b.MustExec(t, "kill", "-9", pid)
		b.MustExec(t, "rm", "/srv/vcsim/hold")
		where, rep := b.waitSettled(ctx, "killed.json")
		err = b.WaitFor(ctx, "no snapshot left", func() (bool, error) {
			return strings.TrimSpace(b.vcsim(t, "vcsim-vc", "snapshots")) == "", nil
		})
		if err != nil {
			t.Errorf("a snapshot is left after the worker was killed (job settled in %s: %s)", where, reportError(rep))
		}
		if j := b.Journal(ctx, "-u", unit); !strings.Contains(j, "removed snapshot") {
			t.Errorf("the job unit's journal does not say it removed the snapshot:\n%s", j)
		}
		if out, _, _ := b.Exec(ctx, "sh", "-c", "ls /var/lib/hyper2kvm/jobs/*/vsphere-snapshot 2>/dev/null"); strings.TrimSpace(out) != "" {
			t.Errorf("snapshot records left: %s", out)
		}
	})

	t.Run("errors say what to do", func(t *testing.T) {
		for _, tc := range []struct{ name, source, vm, want string }{
			{"badpw", "badpw", vc.VM, "hyper2kvmd source set-password badpw"},
			{"badtp", "badtp", vc.VM, "thumbprint: " + vc.Thumbprint},
			{"novm", "vc1", vc.VM + "X", "nearest: " + vc.VM},
		} {
			b.drop("", tc.name+".json", vsManifest(tc.name, tc.source, tc.vm, ""))
			where, rep := b.waitSettled(ctx, tc.name+".json")
			if where != "failed" || !strings.Contains(reportError(rep), tc.want) {
				t.Errorf("%s: %s, want failed with %q: %s", tc.name, where, tc.want, reportError(rep))
			}
		}
		// validate --check-files asks the agent whether the VM is there.
		b.WriteFile(t, "/srv/vcsim/novm.json", []byte(vsManifest("novm", "vc1", vc.VM+"X", "")), 0o644)
		out, err := b.hyperctl(ctx, "alice", "validate", "--check-files", "/srv/vcsim/novm.json")
		if err == nil || !strings.Contains(out, "pipeline.load.vm: source vc1 has no VM "+vc.VM+"X; nearest: "+vc.VM) {
			t.Errorf("validate --check-files of a missing VM: %v\n%s", err, out)
		}
		// An unknown source is refused before any job starts.
		b.drop("", "nosource.json", vsManifest("nosource", "nosuch", vc.VM, ""))
		where, rep := b.waitSettled(ctx, "nosource.json")
		if where != "failed" || !strings.Contains(reportError(rep), `source \"nosuch\" is not defined`) {
			t.Errorf("unknown source: %s %s", where, reportError(rep))
		}
	})

	t.Run("browse and import through hyperctl, by group", func(t *testing.T) {
		out, err := b.hyperctl(ctx, "alice", "sources")
		if err != nil || !strings.Contains(out, "vc1") || !strings.Contains(out, vc.URL) || strings.Contains(out, vsPassword) {
			t.Errorf("hyperctl sources as a member: %v\n%s", err, out)
		}
		out, err = b.hyperctl(ctx, "alice", "vms", "vc1", "--recursive", "--filter", "H0_VM0")
		if err != nil || !strings.Contains(out, vc.VM) || !strings.Contains(out, "3072 MiB") {
			t.Errorf("hyperctl vms as a member: %v\n%s", err, out)
		}
		out, err = b.hyperctl(ctx, "bob", "vms", "vc1")
		if err == nil || !strings.Contains(out, "io.hyper2kvm.agent.use-source") {
			t.Errorf("hyperctl vms as a non-member: %v\n%s", err, out)
		}
		out, err = b.hyperctl(ctx, "bob", "import", "vc1", vc.VM)
		if err == nil || !strings.Contains(out, "not authorized") {
			t.Errorf("hyperctl import as a non-member: %v\n%s", err, out)
		}
		// The template turns off the stages that need the guest's file
		// systems (this box has no FUSE): the test is about the source.
		b.WriteFile(t, "/srv/vcsim/template.json", []byte(vsManifest("t", "vc1", vc.VM, "")), 0o644)
		out, err = b.hyperctl(ctx, "alice", "-o", "json", "import", "--template", "/srv/vcsim/template.json", "vc1", vc.VM)
		if err != nil {
			t.Fatalf("hyperctl import as a member: %v\n%s", err, out)
		}
		var res struct {
			Jobs []struct{ ID string } `json:"jobs"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Jobs) != 1 {
			t.Fatalf("import answered %s", out)
		}
		err = b.WaitFor(ctx, "imported job", func() (bool, error) {
			s := b.jobState(ctx, res.Jobs[0].ID)
			return s == "completed" || s == "failed", nil
		})
		if s := b.jobState(ctx, res.Jobs[0].ID); err != nil || s != "completed" {
			t.Errorf("imported job: %s %v\n%s", s, err, b.Journal(ctx, "-n", "40"))
		}
	})

	t.Run("the password is in no journal, report, state or unit", func(t *testing.T) {
		if j := b.Journal(ctx, "-o", "verbose"); strings.Contains(j, vsPassword) {
			t.Error("the password is in the journal")
		}
		if out, _, _ := b.Exec(ctx, "grep", "-rl", vsPassword, "/var/lib/hyper2kvm", "/etc/hyper2kvm", "/run/hyper2kvm"); strings.TrimSpace(out) != "" {
			t.Errorf("the password is in %s", out)
		}
		out, _, _ := b.Exec(ctx, "sh", "-c", "systemctl show '*' 2>/dev/null; cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n'")
		if strings.Contains(out, vsPassword) {
			t.Error("the password is in a unit's properties or a process's environment or command line")
		}
	})
}

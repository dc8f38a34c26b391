package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/hyper2kvm/hyper2kvm/agent/boot"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
	"github.com/hyper2kvm/hyper2kvm/test/box"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// The vSphere source end to end (docs/SOURCES.md): govmomi's simulator
// runs in the box as a service of its own (test/vcsim), serving the
// fixture guest's disk as its VM's disk; the agent reads the VM through a
// registered source whose password is a systemd credential. Through the
// drop folder, hyperctl import and REST, with FIX on; the fixture Debian
// guest, read from a simulator of its own, boots (docs/TESTING.md).

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
	// Devices: FIX mounts the guest's file systems (qemu-storage-daemon's
	// FUSE export, loop devices), which a box without /dev/fuse and
	// /dev/loop* cannot do.
	b := relStart(t, box.Options{Devices: true, Users: []string{"alice", "bob"}, Groups: map[string][]string{"hyper2kvm": {"alice"}}}, false, "")
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
	addSource(t, b, "vc2", vc.URL, vc.Thumbprint, vsPassword)
	// The REST bridge as the package leaves it.
	b.WriteFile(t, "/etc/hyper2kvm/api.token", []byte(apiToken+"\n"), 0o640)
	b.MustExec(t, "chown", "root:hyper2kvm", "/etc/hyper2kvm/api.token")
	b.MustExec(t, "systemctl", "start", "hyper2kvm-api.socket")

	vcHW := vsHardware{MACs: strings.Split(macs, ","), CPUs: 4, Cores: 2, MemoryMB: 3072, Firmware: "efi"}

	// The bootable guest is dropped first and converted (FIX on) while
	// the other subtests run; "... boots" waits for it at the end.
	deb := vsDropBootable(t, b)

	day := b.day()
	t.Run("powered off VM from a vCenter, dropped", func(t *testing.T) {
		b.drop("", "web01.json", vsManifest("web01", "vc1", vc.VM, ""))
		where, rep := b.waitSettled(ctx, "web01.json")
		if where != "processed" {
			t.Fatalf("settled in %s: %s\njournal:\n%s", where, reportError(rep), b.Journal(ctx, "-n", "80"))
		}
		out := vsOutputDir(day, rep)
		vsCheckDomain(t, b.MustExec(t, "cat", out+"web01.xml"), vcHW)
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
		// A stream-optimized disk cannot be read before its footer: it
		// was downloaded whole first, and the report says so.
		if strings.Contains(report, `"overlapped"`) || !strings.Contains(report, `"overlap": "no: `) {
			t.Errorf("report.json does not say the stream-optimized disk was downloaded before CONVERT:\n%s", report)
		}
	})

	t.Run("a flat disk converts while it downloads", func(t *testing.T) {
		flat := startVcsim(t, b, "vcsim-flat", 18446, "--flat=/srv/vcsim/web01.raw", "--power=off")
		addSource(t, b, "flat1", flat.URL, flat.Thumbprint, vsPassword)
		// INSPECT and FIX off, VALIDATE's compare on: it reads the source
		// through the same export after CONVERT.
		m := strings.Replace(vsManifest("flat01", "flat1", flat.VM, ""), `"validate":{"enabled":false}`, `"validate":{"enabled":true,"compare":true}`, 1)
		b.drop("", "flat01.json", m)
		where, rep := b.waitSettled(ctx, "flat01.json")
		if where != "processed" {
			t.Fatalf("settled in %s: %s\njournal:\n%s", where, reportError(rep), b.Journal(ctx, "-n", "80"))
		}
		out := vsOutputDir(day, rep)
		report := b.MustExec(t, "cat", out+"flat01.report.json")
		for _, want := range []string{`"export_method": "datastore"`, `"overlapped": true`, `"overlap": "yes"`, `"compare": "identical"`} {
			if !strings.Contains(report, want) {
				t.Errorf("report.json lacks %s:\n%s", want, report)
			}
		}
		if _, stderr, err := b.Exec(ctx, "qemu-img", "compare", "-q", "/srv/vcsim/web01.raw", out+"flat01.qcow2"); err != nil {
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
		// The template runs every stage: INSPECT, FIX and VALIDATE on the
		// guest's file systems.
		b.WriteFile(t, "/srv/vcsim/template.json", []byte(vsManifestFull("t", "vc1", vc.VM, "")), 0o644)
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
			t.Fatalf("imported job: %s %v\n%s", s, err, b.Journal(ctx, "-n", "40"))
		}
		vsCheckDomain(t, b.MustExec(t, "sh", "-c", "cat /var/lib/hyper2kvm/output/"+day+"/"+res.Jobs[0].ID+"/*.xml"), vcHW)
		vsCheckFixed(t, b, "/var/lib/hyper2kvm/output/"+day+"/"+res.Jobs[0].ID+"/")
	})

	t.Run("submitted over REST with a member's token", func(t *testing.T) {
		vsRESTSubmit(t, b, ctx, day, vc, vcHW)
	})

	t.Run("the agent and the worker killed mid-export, the agent restarted: no snapshot left", func(t *testing.T) {
		vsAgentRestart(t, b, ctx, vc)
	})

	t.Run("a snapshot nothing could remove is named in the job's error", func(t *testing.T) {
		vsSnapshotLeft(t, b, ctx, vc)
	})

	t.Run("the bootable guest, converted with FIX, boots to its login prompt", func(t *testing.T) {
		deb.check(t, b, ctx, day)
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

// vsManifestFull is vsManifest with every stage on: INSPECT, FIX (the
// default backend) and VALIDATE run on the guest's file systems.
func vsManifestFull(name, source, vm, extra string) string {
	return fmt.Sprintf(`{"version":"1.0","name":%q,"pipeline":{"load":{"source_type":"vsphere","source":%q,"vm":%q%s},`+
		`"inspect":{"enabled":true},"fix":{"enabled":true},"convert":{"output_format":"qcow2"},"validate":{"enabled":true}}}`, name, source, vm, extra)
}

// vsHardware is what the test gave a simulator VM, and so what its
// domain.xml must say.
type vsHardware struct {
	MACs     []string
	CPUs     int
	Cores    int // per socket; 0 or 1: not checked
	MemoryMB int
	Firmware string // bios | efi
}

// vsCheckDomain checks a job's domain XML against the simulator VM's
// hardware: every NIC with its MAC in order, vCPUs and sockets, memory,
// firmware.
func vsCheckDomain(t *testing.T, domainXML string, hw vsHardware) *libvirtxml.Domain {
	t.Helper()
	var d libvirtxml.Domain
	if err := d.Unmarshal(domainXML); err != nil {
		t.Fatalf("domain.xml does not parse: %v\n%s", err, domainXML)
	}
	var macs []string
	if d.Devices != nil {
		for _, nic := range d.Devices.Interfaces {
			if nic.MAC != nil {
				macs = append(macs, nic.MAC.Address)
			}
		}
	}
	if strings.Join(macs, ",") != strings.Join(hw.MACs, ",") {
		t.Errorf("domain.xml has NICs %v, want the VM's %v", macs, hw.MACs)
	}
	if d.VCPU == nil || int(d.VCPU.Value) != hw.CPUs {
		t.Errorf("domain.xml has vcpu %+v, want %d", d.VCPU, hw.CPUs)
	}
	if hw.Cores > 1 && (d.CPU == nil || d.CPU.Topology == nil || d.CPU.Topology.Sockets != hw.CPUs/hw.Cores || d.CPU.Topology.Cores != hw.Cores) {
		t.Errorf("domain.xml has CPU %+v, want %d sockets of %d cores", d.CPU, hw.CPUs/hw.Cores, hw.Cores)
	}
	if d.Memory == nil || int(d.Memory.Value) != hw.MemoryMB || d.Memory.Unit != "MiB" {
		t.Errorf("domain.xml has memory %+v, want %d MiB", d.Memory, hw.MemoryMB)
	}
	efi := d.OS != nil && (d.OS.Firmware == "efi" || d.OS.Loader != nil)
	if efi != (hw.Firmware == "efi") {
		t.Errorf("domain.xml boots with UEFI: %v, want firmware %s:\n%s", efi, hw.Firmware, domainXML)
	}
	return &d
}

// vsOutputDir is where the settled single-job manifest's outputs are.
func vsOutputDir(day string, settled map[string]any) string {
	if js, _ := settled["jobs"].([]any); len(js) == 1 {
		if dir, _ := js[0].(map[string]any)["output_dir"].(string); dir != "" {
			return strings.TrimSuffix(dir, "/") + "/"
		}
	}
	id, _ := settled["job_id"].(string)
	return "/var/lib/hyper2kvm/output/" + day + "/" + id + "/"
}

// vsCheckFixed reads the job report in out and checks that INSPECT and FIX
// ran on the guest (not skipped); it returns the report.
func vsCheckFixed(t *testing.T, b *relBox, out string) report.Report {
	t.Helper()
	var rep report.Report
	data := b.MustExec(t, "sh", "-c", "cat "+out+"*.report.json")
	if err := json.Unmarshal([]byte(data), &rep); err != nil {
		t.Fatalf("%s: report does not parse: %v", out, err)
	}
	ran := map[string]string{}
	for _, s := range rep.Stages {
		ran[s.Name] = s.Status
	}
	for _, st := range []string{"inspect", "fix", "validate"} {
		if ran[st] != "ok" {
			t.Errorf("stage %s: %q, want ok (stages %v)", st, ran[st], ran)
		}
	}
	return rep
}

// vsBootable is the fixture Debian guest (BIOS, VMware-configured: it
// does not find its root on virtio before FIX) on a simulator of its own,
// dropped as a manifest with every stage on.
type vsBootable struct {
	skip    string
	hw      vsHardware
	dropped time.Time
}

func vsDropBootable(t *testing.T, b *relBox) *vsBootable {
	t.Helper()
	if err := fixture.DebianBuildAvailable(); err != nil {
		return &vsBootable{skip: "the Debian guest cannot be built here: " + err.Error()}
	}
	start := time.Now()
	raw := fixture.DebianDisk(t) // cached: built once per machine, shared with the boot tests
	built := time.Now()
	// A hosted sparse VMDK, not streamOptimized: the datastore's /folder
	// serves the file as it lies, and compressing 330 MB costs 25 s of a
	// loaded core for nothing the test asserts (the small disk is the
	// streamOptimized one).
	vmdk := fixture.Convert(t, raw, "vmdk", "monolithicSparse")
	os.Remove(raw)
	converted := time.Now()
	if out, err := exec.Command("cp", vmdk, b.Path("/srv/vcsim/debian.vmdk")).CombinedOutput(); err != nil {
		t.Fatalf("copy the Debian VMDK into the box: %v %s", err, out)
	}
	os.Remove(vmdk)
	hw := vsHardware{MACs: []string{"00:50:56:aa:cc:01"}, CPUs: 2, MemoryMB: 1024, Firmware: "bios"}
	in := startVcsim(t, b, "vcsim-deb", 18445, "--disk=/srv/vcsim/debian.vmdk", "--cpus=2", "--memory=1024", "--firmware=bios",
		"--macs="+strings.Join(hw.MACs, ","), "--power=off")
	// The simulator holds its own copy in its datastore.
	b.MustExec(t, "rm", "/srv/vcsim/debian.vmdk")
	t.Logf("Debian disk %s, VMDK %s, into the box and the simulator %s", built.Sub(start).Round(time.Second),
		converted.Sub(built).Round(time.Second), time.Since(converted).Round(time.Second))
	addSource(t, b, "deb", in.URL, in.Thumbprint, vsPassword)
	b.drop("", "debian.json", vsManifestFull("debian", "deb", in.VM, ""))
	t.Logf("Debian guest put into its simulator and dropped in %s", time.Since(start).Round(time.Second))
	return &vsBootable{hw: hw, dropped: time.Now()}
}

// check waits for the Debian guest's job, checks its domain.xml and that
// FIX rebuilt the initramfs, and boots the output on the host (TCG when
// there is no KVM) as its domain.xml describes it: q35, its MAC, its
// memory, its firmware, virtio.
func (d *vsBootable) check(t *testing.T, b *relBox, ctx context.Context, day string) {
	if d.skip != "" {
		t.Skip(d.skip)
	}
	where, rep := b.waitSettled(ctx, "debian.json")
	if where != "processed" {
		t.Fatalf("debian.json settled in %s: %s\n%s", where, reportError(rep), b.Journal(ctx, "-n", "80"))
	}
	t.Logf("dropped to processed in %s (download, INSPECT, FIX, CONVERT, VALIDATE)", time.Since(d.dropped).Round(time.Second))
	out := vsOutputDir(day, rep)
	dom := vsCheckDomain(t, b.MustExec(t, "cat", out+"debian.xml"), d.hw)
	jr := vsCheckFixed(t, b, out)
	regenerated := false
	for _, c := range jr.Changes {
		regenerated = regenerated || c.Fix == "initramfs"
	}
	if !regenerated {
		t.Errorf("FIX did not rebuild the guest's initramfs: %+v", jr.Changes)
	}
	if jr.Source.Hardware == nil || jr.Source.Hardware.ExportMethod != "datastore" {
		t.Errorf("report source.hardware %+v, want the simulator's, exported through the datastore", jr.Source.Hardware)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed: the output is not booted")
	}
	machine := ""
	if dom.OS != nil && dom.OS.Type != nil && strings.HasPrefix(dom.OS.Type.Machine, "q35") {
		machine = "q35"
	}
	consoles := filepath.Join(os.TempDir(), "hyper2kvm-boot-consoles")
	os.MkdirAll(consoles, 0o755)
	// snapshot=on: the boot writes nothing into the output.
	res, err := boot.Test(ctx, boot.Options{Image: b.Path(out + "debian.qcow2"), Format: "qcow2", Machine: machine,
		MAC: d.hw.MACs[0], MemoryMB: d.hw.MemoryMB, Firmware: d.hw.Firmware, Timeout: bootTimeout,
		FailMarkers: []string{"Gave up waiting for root", "(initramfs)"}, Console: filepath.Join(consoles, "vsphere-debian.log")})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("booted: %v, accelerator %s, %.0fs to %q", res.Booted, res.Accelerator, res.Seconds, res.Marker)
	if !res.Booted {
		t.Fatalf("the guest converted from the simulator did not reach a login prompt (failed on %q):\n%s", res.FailedOn, res.ConsoleTail)
	}
}

// vsRESTSubmit submits a manifest that reads from the source through the
// REST bridge (the endpoint the dashboard's builder posts to), as a member
// of group hyper2kvm with a token of her own, and follows the job over
// REST to completed.
func vsRESTSubmit(t *testing.T, b *relBox, ctx context.Context, day string, vc vcsimInfo, hw vsHardware) {
	out, stderr, err := b.Exec(ctx, "runuser", "-u", "alice", "--", "hyperctl", "-o", "json", "token", "create", "--name", "alice-rest")
	var tok struct{ Token string }
	if err != nil || json.Unmarshal([]byte(out), &tok) != nil || tok.Token == "" {
		t.Fatalf("hyperctl token create as alice: %v %s %s", err, out, stderr)
	}
	api := "http://127.0.0.1:8080/api/workflow"
	curl := func(args ...string) (string, string) {
		cmd := append([]string{"runuser", "-u", "alice", "--", "curl", "-sS", "--max-time", "60", "-w", "\n%{http_code}",
			"-H", "Authorization: Bearer " + tok.Token}, args...)
		out, _, _ := b.Exec(ctx, cmd...)
		out = strings.TrimRight(out, "\n")
		i := strings.LastIndex(out, "\n")
		return out[i+1:], out[:max(i, 0)]
	}
	if code, body := curl(api + "/sources/vc1/vms?path=" + filepath.Dir(vc.VM)); code != "200" || !strings.Contains(body, vc.VM) {
		t.Errorf("GET /sources/vc1/vms with alice's token: %s %s", code, body)
	}
	code, body := curl("-X", "POST", "--data-binary", vsManifestFull("rest01", "vc1", vc.VM, ""), api+"/manifest/submit")
	var sub struct {
		JobID string `json:"job_id"`
	}
	if code != "202" || json.Unmarshal([]byte(body), &sub) != nil || sub.JobID == "" {
		t.Fatalf("POST /manifest/submit with alice's token: %s %s", code, body)
	}
	var status string
	err = b.WaitFor(ctx, "job "+sub.JobID+" settled", func() (bool, error) {
		_, body := curl(api + "/jobs/" + sub.JobID)
		var j struct{ Status string }
		json.Unmarshal([]byte(body), &j)
		status = j.Status
		return status == "completed" || status == "failed" || status == "cancelled", nil
	})
	if err != nil || status != "completed" {
		_, body := curl(api + "/jobs/" + sub.JobID)
		t.Fatalf("REST job: %s %v\n%s", status, err, body)
	}
	dir := "/var/lib/hyper2kvm/output/" + day + "/" + sub.JobID + "/"
	vsCheckDomain(t, b.MustExec(t, "cat", dir+"rest01.xml"), hw)
	vsCheckFixed(t, b, dir)
}

// vsAgentRestart: the agent and the worker are killed (SIGKILL) while the
// export holds a snapshot, and systemd starts the agent again. The job
// unit's ExecStopPost removes the snapshot without the agent, and the
// restarted agent settles the manifest once.
func vsAgentRestart(t *testing.T, b *relBox, ctx context.Context, vc vcsimInfo) {
	b.vcsim(t, "vcsim-vc", "power", "on")
	defer b.vcsim(t, "vcsim-vc", "power", "off")
	b.MustExec(t, "touch", "/srv/vcsim/hold")
	defer b.Exec(context.Background(), "rm", "-f", "/srv/vcsim/hold")
	b.drop("", "restart.json", vsManifest("restart", "vc1", vc.VM, `,"snapshot":true`))
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
	agentPID := b.show("hyper2kvmd.service", "MainPID")
	restarts := b.show("hyper2kvmd.service", "NRestarts")
	workerPID := b.show(unit, "MainPID")
	b.MustExec(t, "kill", "-9", agentPID, workerPID)
	b.MustExec(t, "rm", "/srv/vcsim/hold")
	err = b.WaitFor(ctx, "no snapshot left", func() (bool, error) {
		return strings.TrimSpace(b.vcsim(t, "vcsim-vc", "snapshots")) == "", nil
	})
	if err != nil {
		t.Errorf("a snapshot is left after the agent and the worker were killed: %v\n%s", err, b.Journal(ctx, "-u", unit))
	}
	// Restart=on-failure brings the agent back; it finds the job's unit
	// ended (or re-attaches while it ends) and settles the manifest.
	err = b.WaitFor(ctx, "the agent started again", func() (bool, error) {
		pid := b.show("hyper2kvmd.service", "MainPID")
		return pid != "0" && pid != agentPID && b.show("hyper2kvmd.service", "ActiveState") == "active", nil
	})
	if err != nil {
		t.Fatalf("%v (NRestarts %s before)\n%s", err, restarts, b.Journal(ctx, "-u", "hyper2kvmd.service", "-n", "40"))
	}
	where, rep := b.waitSettled(ctx, "restart.json")
	if where != "failed" {
		t.Errorf("restart.json settled in %s, want failed (its worker was killed): %s", where, reportError(rep))
	}
	b.checkSettledOnce(ctx, t, "restart.json", id, where, rep)
	if j := b.Journal(ctx, "-u", unit); !strings.Contains(j, "removed snapshot") {
		t.Errorf("the job unit's journal does not say it removed the snapshot:\n%s", j)
	}
	if out, _, _ := b.Exec(ctx, "ls", "/var/lib/hyper2kvm/jobs/"+id+"/vsphere-snapshot"); strings.TrimSpace(out) != "" {
		t.Errorf("the snapshot record is left: %s", out)
	}
}

// vsSnapshotLeft: the worker is killed while its export holds a snapshot
// and its unit's ExecStopPost cannot reach the source (its URL now names
// a closed port, as when the vCenter is down): the snapshot stays, and the
// job's error says which one, where, and what to do.
func vsSnapshotLeft(t *testing.T, b *relBox, ctx context.Context, vc vcsimInfo) {
	b.vcsim(t, "vcsim-vc", "power", "on")
	defer b.vcsim(t, "vcsim-vc", "power", "off")
	b.MustExec(t, "touch", "/srv/vcsim/hold")
	defer b.Exec(context.Background(), "rm", "-f", "/srv/vcsim/hold")
	b.drop("", "left.json", vsManifest("left", "vc2", vc.VM, `,"snapshot":true`))
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
	moref := strings.TrimSpace(b.MustExec(t, "cat", record))
	b.WriteFile(t, "/etc/hyper2kvm/sources.d/vc2.yaml", []byte(fmt.Sprintf("type: vsphere\nurl: https://127.0.0.1:1/sdk\nusername: svc-hyper2kvm\nthumbprint: %q\n", vc.Thumbprint)), 0o644)
	b.MustExec(t, "kill", "-9", b.show(relUnitOf(id), "MainPID"))
	where, rep := b.waitSettled(ctx, "left.json")
	want := "snapshot " + moref + " (hyper2kvm-" + id + ") of the VM is still on source vc2"
	if msg := reportError(rep); where != "failed" || !strings.Contains(msg, want) || !strings.Contains(msg, "remove it in vSphere") {
		t.Errorf("left.json settled in %s with %s; want failed, naming %q", where, msg, want)
	}
	if snaps := strings.TrimSpace(b.vcsim(t, "vcsim-vc", "snapshots")); snaps != "hyper2kvm-"+id {
		t.Errorf("snapshots: %q, want the one the job could not remove", snaps)
	}
}

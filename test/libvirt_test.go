package test

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/engine"
	"github.com/hyper2kvm/hyper2kvm/agent/guest"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/test/box"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// TestLibvirtTarget: an installed agent defines converted VMs in a real
// libvirtd (Debian's libvirt-daemon-system, started by systemd in the
// box) through libvirt's own protocol. What a sysadmin checks with virsh:
//
//   - an OVA with two NICs (VMware MACs, networks "VM Network" and
//     "Backup"), UEFI with Secure Boot: the domain is in `virsh list
//     --all`, each NIC with its MAC on the bridge or network the manifest
//     maps, OVMF's Secure Boot build with an NVRAM template, its disk a
//     volume of pool "images", autostart on, the report's UUID;
//   - a second job with the same name fails, naming the domain, and
//     changes nothing: the domain's XML and the pool are as before;
//   - a BIOS source mapped by agent.yaml's target defaults, disks in a
//     directory: no OVMF, the disk by its path, and its KubeVirt objects
//     beside it;
//   - that domain starts (`virsh start`, `virsh domstate` running);
//   - a job whose start fails after its disk was uploaded leaves no domain
//     and no volume behind;
//   - a domain and volume an interrupted earlier attempt of the same job
//     left are removed when the job runs again;
//   - the fixture Debian guest, converted with FIX on the host (FIX needs
//     loop devices the box has not), defined by the agent and started by
//     libvirt, reaches its login prompt on the serial console (TCG: the
//     box has no /dev/kvm).
func TestLibvirtTarget(t *testing.T) {
	for _, p := range []string{"/usr/sbin/libvirtd", "/usr/bin/virsh"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s is not installed (packaging/deps.txt: libvirt-daemon-system, libvirt-clients)", p)
		}
	}
	t.Parallel()
	src := t.TempDir()
	raw := filepath.Join(src, "disk.raw")
	if err := os.WriteFile(raw, []byte("hyper2kvm libvirt target fixture"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(raw, 16<<20); err != nil {
		t.Fatal(err)
	}
	efiOVA := fixture.OVAWith(t, src, fixture.VM{Name: "web01", CPUs: 2, MemoryMB: 1536, Firmware: "efi", SecureBoot: true, NICs: 2,
		Networks: []string{"VM Network", "Backup"}, MACs: []string{"00:50:56:AA:BB:01", "00:50:56:aa:bb:02"}}, raw)
	biosDir := t.TempDir()
	biosOVA := fixture.OVAWith(t, biosDir, fixture.VM{Name: "plain", Networks: []string{"Office"}, MACs: []string{"00:50:56:00:00:0c"}}, raw)

	// agent.yaml: every job's NICs on an unknown network go to libvirt's
	// "isolated"; a manifest may define domains.
	// The converted Debian guest of step 6 reaches the box through here.
	share := t.TempDir()
	b := relStart(t, box.Options{Binds: []string{share}}, true, "target:\n  default_network: {network: isolated}\n  libvirt: {uri: \"qemu:///system\", define: true}\n")
	ctx := relCtx(t, 10*time.Minute)
	// The gate worker of relStart holds a job until /srv/relgate/open
	// exists: open, except for step 5.
	b.MustExec(t, "mkdir", "-p", "/srv/relgate")
	b.MustExec(t, "touch", "/srv/relgate/open")
	for name, p := range map[string]string{"/srv/src/web01.ova": efiOVA, "/srv/src/plain.ova": biosOVA, "/srv/src/web01.raw": raw} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteFile(t, name, data, 0o644)
	}
	// In the box the cgroup controllers are read-only: libvirt must not
	// try to make its own for a domain it starts.
	b.WriteFile(t, "/etc/libvirt/qemu.conf", []byte("cgroup_controllers = [ ]\nnamespaces = [ ]\n"), 0o600)
	b.MustExec(t, "systemctl", "start", "libvirtd.service")
	b.WriteFile(t, "/srv/isolated.xml", []byte("<network><name>isolated</name></network>\n"), 0o644)
	b.MustExec(t, "virsh", "-q", "net-define", "/srv/isolated.xml")
	b.MustExec(t, "mkdir", "-p", "/srv/images", "/srv/vms")
	b.MustExec(t, "virsh", "-q", "pool-define-as", "images", "dir", "--target", "/srv/images")
	b.MustExec(t, "virsh", "-q", "pool-start", "images")

	manifest := func(name, src, target string) string {
		return `{"version":"1.0","name":"` + name + `","pipeline":{"load":{"source_type":"ova","source_path":"` + src + `"},` +
			`"inspect":{"enabled":false},"fix":{"enabled":false},"validate":{"enabled":true,"compare":true},"target":` + target + `}}`
	}
	web01 := manifest("web01", "/srv/src/web01.ova", `{"networks":[{"source":"VM Network","bridge":"br0"},{"source":"Backup","network":"isolated"}],`+
		`"storage":{"pool":"images"},"graphics":"vnc","libvirt":{"autostart":true}}`)

	// 1. Defined, as the source was.
	b.drop("", "web01.json", web01)
	dir, rep := b.waitSettled(ctx, "web01.json")
	if dir != "processed" {
		t.Fatalf("web01.json settled in %s/: %v", dir, rep["error"])
	}
	eng := libvirtEngineReport(t, rep)
	tgt, _ := eng["target"].(map[string]any)
	uuid, _ := tgt["uuid"].(string)
	lv, _ := tgt["libvirt"].(map[string]any)
	if len(uuid) != 36 || lv["defined"] != true || lv["autostart"] != true || lv["pool"] != "images" {
		t.Errorf("report target %v", tgt)
	}
	// The box has no /dev/kvm: libvirt cannot define a kvm domain there,
	// and the job says it defined a qemu (emulated) one.
	if lv["emulated"] != true || !strings.Contains(fmt.Sprint(eng["warnings"]), "defined with type qemu") {
		t.Errorf("report libvirt %v warnings %v; want emulated, and a warning", lv, eng["warnings"])
	}
	if list := b.MustExec(t, "virsh", "list", "--all", "--name"); !strings.Contains(list, "web01") {
		t.Errorf("virsh list --all: %q, want web01", list)
	}
	before := b.MustExec(t, "virsh", "dumpxml", "--inactive", "web01")
	t.Logf("virsh dumpxml web01:\n%s", before)
	var d libvirtDomain
	if err := xmlUnmarshal(before, &d); err != nil {
		t.Fatal(err)
	}
	if d.Type != "qemu" || d.UUID != uuid || d.Memory != 1536*1024 || d.VCPU != 2 || !strings.HasPrefix(d.OS.Type.Machine, "pc-q35") && d.OS.Type.Machine != "q35" {
		t.Errorf("domain type %s uuid %s memory %d KiB vcpu %d machine %s; want qemu, report's uuid %s, 1536 MiB, 2, q35", d.Type, d.UUID, d.Memory, d.VCPU, d.OS.Type.Machine, uuid)
	}
	if len(d.NICs) != 2 || d.NICs[0].MAC.Address != "00:50:56:aa:bb:01" || d.NICs[0].Source.Bridge != "br0" || d.NICs[0].Type != "bridge" ||
		d.NICs[1].MAC.Address != "00:50:56:aa:bb:02" || d.NICs[1].Source.Network != "isolated" {
		t.Errorf("interfaces %+v; want 00:50:56:aa:bb:01 on bridge br0, 00:50:56:aa:bb:02 on network isolated", d.NICs)
	}
	if !strings.Contains(d.OS.Loader.Path, "secboot") || d.OS.Loader.Secure != "yes" || d.OS.NVRAM.Template == "" {
		t.Errorf("loader %+v nvram %+v; want OVMF's Secure Boot build and a vars template", d.OS.Loader, d.OS.NVRAM)
	}
	if len(d.Disks) != 1 || d.Disks[0].Source.Pool != "images" || d.Disks[0].Source.Volume != "web01.qcow2" || d.Disks[0].Driver.Type != "qcow2" {
		t.Errorf("disks %+v; want volume web01.qcow2 of pool images", d.Disks)
	}
	if len(d.Graphics) != 1 || d.Graphics[0].Type != "vnc" || d.Graphics[0].Listen.Address != "127.0.0.1" {
		t.Errorf("graphics %+v; want vnc on 127.0.0.1", d.Graphics)
	}
	if info := b.MustExec(t, "virsh", "dominfo", "web01"); !strings.Contains(info, "enable") {
		t.Errorf("virsh dominfo web01: autostart not enabled:\n%s", info)
	}
	vol := b.MustExec(t, "virsh", "vol-dumpxml", "--pool", "images", "web01.qcow2")
	if !strings.Contains(vol, "<format type='qcow2'/>") {
		t.Errorf("volume web01.qcow2 is not qcow2:\n%s", vol)
	}
	// The volume holds the source disk's bytes: the upload is whole.
	if out, stderr, err := b.Exec(ctx, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", "/srv/src/web01.raw", "/srv/images/web01.qcow2"); err != nil {
		t.Errorf("pool volume differs from the source disk: %v %s%s", err, out, stderr)
	}
	volsBefore := b.MustExec(t, "virsh", "vol-list", "images")
	sumBefore := b.MustExec(t, "sha256sum", "/srv/images/web01.qcow2")

	// 2. The same name again: refused in LOAD, nothing touched.
	b.drop("", "web01-again.json", web01)
	dir, rep = b.waitSettled(ctx, "web01-again.json")
	msg, _ := rep["error"].(string)
	if dir != "failed" || !strings.Contains(msg, `already has a domain named "web01"`) || !strings.Contains(msg, "nothing was changed") {
		t.Errorf("second web01 settled in %s/ with %q; want failed, naming the domain", dir, msg)
	}
	if after := b.MustExec(t, "virsh", "dumpxml", "--inactive", "web01"); after != before {
		t.Errorf("the first domain changed:\n%s", after)
	}
	if v := b.MustExec(t, "virsh", "vol-list", "images"); v != volsBefore {
		t.Errorf("pool changed: %s; was %s", v, volsBefore)
	}
	if s := b.MustExec(t, "sha256sum", "/srv/images/web01.qcow2"); s != sumBefore {
		t.Error("web01.qcow2 in the pool changed")
	}

	// 3. BIOS, mapped by agent.yaml's default_network, disks in a directory.
	b.drop("", "plain.json", manifest("plain", "/srv/src/plain.ova", `{"storage":{"dir":"/srv/vms"},"kubevirt":{"namespace":"vms"}}`))
	if dir, rep := b.waitSettled(ctx, "plain.json"); dir != "processed" {
		t.Fatalf("plain.json settled in %s/: %v", dir, rep["error"])
	}
	plain := b.MustExec(t, "virsh", "dumpxml", "--inactive", "plain")
	var p libvirtDomain
	if err := xmlUnmarshal(plain, &p); err != nil {
		t.Fatal(err)
	}
	if p.OS.Loader.Path != "" || p.OS.NVRAM.Template != "" || p.OS.Firmware != "" {
		t.Errorf("BIOS source got firmware %+v %+v %q", p.OS.Loader, p.OS.NVRAM, p.OS.Firmware)
	}
	if len(p.NICs) != 1 || p.NICs[0].MAC.Address != "00:50:56:00:00:0c" || p.NICs[0].Source.Network != "isolated" {
		t.Errorf("interfaces %+v; want 00:50:56:00:00:0c on isolated (agent.yaml's default_network)", p.NICs)
	}
	if len(p.Disks) != 1 || p.Disks[0].Source.File != "/srv/vms/plain.qcow2" {
		t.Errorf("disks %+v; want /srv/vms/plain.qcow2", p.Disks)
	}
	// libvirt's own schema accepts the XML the job wrote.
	if out, stderr, err := b.Exec(ctx, "virt-xml-validate", "/srv/vms/plain.xml", "domain"); err != nil {
		t.Errorf("virt-xml-validate plain.xml: %v %s%s", err, out, stderr)
	}
	if ls := b.ls("/srv/vms"); ls != "plain.kubevirt.yaml plain.qcow2 plain.report.json plain.xml" {
		t.Errorf("/srv/vms holds %q", ls)
	}
	// KubeVirt, artifacts only: a VirtualMachine and its DataVolume.
	if kv := b.MustExec(t, "cat", "/srv/vms/plain.kubevirt.yaml"); !strings.Contains(kv, "kind: VirtualMachine") || !strings.Contains(kv, "kind: DataVolume") ||
		!strings.Contains(kv, "macAddress: 00:50:56:00:00:0c") || !strings.Contains(kv, "namespace: vms") {
		t.Errorf("plain.kubevirt.yaml:\n%s", kv)
	}

	// Ready to start: libvirt starts it as defined (TCG in the box; the
	// guest's boot is the boot tests' subject). Its network first: an
	// isolated network without addresses needs no dnsmasq.
	b.MustExec(t, "virsh", "-q", "net-start", "isolated")
	if out, stderr, err := b.Exec(ctx, "virsh", "start", "plain"); err != nil {
		t.Errorf("virsh start plain: %v %s%s", err, out, stderr)
	} else {
		if st := strings.TrimSpace(b.MustExec(t, "virsh", "domstate", "plain")); st != "running" {
			t.Errorf("virsh domstate plain: %q after a start, want running", st)
		}
		b.MustExec(t, "virsh", "-q", "destroy", "plain")
	}

	// 4. Started on a bridge that does not exist: the start fails after the
	// upload and the define; both are undone.
	b.drop("", "broken.json", manifest("broken", "/srv/src/web01.ova", `{"networks":[{"source":"VM Network","bridge":"nosuchbr0"}],`+
		`"default_network":{"bridge":"nosuchbr1"},"storage":{"pool":"images"},"libvirt":{"start":true}}`))
	dir, rep = b.waitSettled(ctx, "broken.json")
	if dir != "failed" {
		t.Errorf("broken.json settled in %s/; want failed (no bridge nosuchbr0)", dir)
	}
	if msg, _ := rep["error"].(string); !strings.Contains(msg, `cannot start domain "broken"`) {
		t.Errorf("broken.json failed with %q; want the start's failure", msg)
	}
	if list := b.MustExec(t, "virsh", "list", "--all", "--name"); strings.Contains(list, "broken") {
		t.Errorf("a failed job left its domain: %s", list)
	}
	if v := b.MustExec(t, "virsh", "vol-list", "images"); strings.Contains(v, "broken") {
		t.Errorf("a failed job left its volume: %s", v)
	}
	if _, _, err := b.Exec(ctx, "test", "-e", "/srv/images/broken.qcow2"); err == nil {
		t.Error("a failed job left /srv/images/broken.qcow2")
	}

	// 5. What an earlier attempt of the same job left defined (its worker
	// killed in the define stage; the agent runs the job again) is
	// removed, with its volume, and the job completes. Played here by
	// defining, while the job waits at the gate, a domain whose metadata
	// names the job, on a volume of the job's disk name.
	b.MustExec(t, "rm", "-f", "/srv/relgate/open")
	b.drop("", "left.json", manifest("left", "/srv/src/plain.ova", `{"default_network":{"network":"isolated"},"storage":{"pool":"images"},"libvirt":{}}`))
	id := b.waitJobOf(ctx, "left.json")
	b.MustExec(t, "virsh", "-q", "vol-create-as", "images", "left.qcow2", "1M")
	b.WriteFile(t, "/srv/left.xml", []byte(`<domain type='qemu'><name>left</name><uuid>11111111-2222-4333-8444-555555555555</uuid>`+
		`<metadata><h:job xmlns:h="https://hyper2kvm.io/xmlns/domain/1" id="`+id+`"/></metadata><memory>65536</memory>`+
		`<os><type arch='x86_64' machine='q35'>hvm</type></os><devices><disk type='volume' device='disk'><driver name='qemu' type='raw'/>`+
		`<source pool='images' volume='left.qcow2'/><target dev='vda' bus='virtio'/></disk></devices></domain>`), 0o644)
	b.MustExec(t, "virsh", "-q", "define", "/srv/left.xml")
	b.MustExec(t, "touch", "/srv/relgate/open")
	dir, rep = b.waitSettled(ctx, "left.json")
	if dir != "processed" {
		t.Fatalf("left.json settled in %s/: %v; want the leftover of its own earlier attempt removed", dir, rep["error"])
	}
	eng = libvirtEngineReport(t, rep)
	if w := fmt.Sprint(eng["warnings"]); !strings.Contains(w, "removed domain left (UUID 11111111-2222-4333-8444-555555555555)") || !strings.Contains(w, "removed volume left.qcow2 of pool images") {
		t.Errorf("warnings %s; want the leftover domain and volume named", w)
	}
	if u := strings.TrimSpace(b.MustExec(t, "virsh", "domuuid", "left")); u == "11111111-2222-4333-8444-555555555555" || u != eng["target"].(map[string]any)["uuid"] {
		t.Errorf("domain left has UUID %s; want the job's new one %v", u, eng["target"])
	}
	if out, stderr, err := b.Exec(ctx, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", "/srv/src/web01.raw", "/srv/images/left.qcow2"); err != nil {
		t.Errorf("left.qcow2 is not the job's disk: %v %s%s", err, out, stderr)
	}

	// 6. A real guest, converted, defined and started by libvirt, boots.
	t.Run("boots", func(t *testing.T) { libvirtBootsFixture(t, b, share) })
}

// libvirtBootsFixture converts the fixture Debian guest on the host (the
// engine, FIX native), has the box's agent define it in libvirt, and
// starts it with `virsh start`, reading its serial console through a log
// on the console's chardev until the login prompt.
func libvirtBootsFixture(t *testing.T, b *relBox, share string) {
	needRoot(t)
	start := time.Now()
	raw := fixture.DebianDisk(t)
	m := engManifest("debian", "raw", raw)
	on := true
	m.Pipeline.Inspect = &manifest.Inspect{}
	m.Pipeline.Fix = &manifest.Fix{Enabled: &on, Backend: guest.Native, Network: &manifest.NetworkFix{FixLevel: "full"},
		VMwareTools: &manifest.Toggle{Enabled: &on}}
	m.Pipeline.Validate = &manifest.Validate{Compare: new(bool)}
	m.SetDefaults()
	out := filepath.Join(share, "out")
	rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: out})
	if err != nil {
		st, _ := json.MarshalIndent(rep.Stages, "", "  ")
		t.Fatalf("converting the Debian fixture: %v\n%s", err, st)
	}
	// Unconverted, the guest does not find its root on virtio (boot
	// tests): FIX must have rebuilt its initramfs.
	regenerated := false
	for _, c := range rep.Changes {
		t.Logf("FIX: %s %s %s", c.Fix, c.File, c.Note)
		regenerated = regenerated || c.Fix == "initramfs"
	}
	if !regenerated {
		t.Fatal("FIX did not rebuild the guest's initramfs")
	}
	t.Logf("Debian fixture converted on the host in %s", time.Since(start).Round(time.Second))

	ctx := relCtx(t, 15*time.Minute)
	b.MustExec(t, "install", "-m", "0644", filepath.Join(out, "debian.qcow2"), "/srv/src/debian.qcow2")
	b.drop("", "debian.json", `{"version":"1.0","name":"debian","pipeline":{"load":{"source_type":"qcow2","source_path":"/srv/src/debian.qcow2"},`+
		`"inspect":{"enabled":false},"fix":{"enabled":false},"validate":{"enabled":false},`+
		`"target":{"storage":{"dir":"/srv/vms"},"default_network":{"network":"isolated"},"libvirt":{}}}}`)
	if dir, rep := b.waitSettled(ctx, "debian.json"); dir != "processed" {
		t.Fatalf("debian.json settled in %s/: %v", dir, rep["error"])
	}
	// The console's pty also goes to a file libvirt's virtlogd writes.
	x := b.MustExec(t, "virsh", "dumpxml", "--inactive", "debian")
	const pty = "<serial type='pty'>"
	if !strings.Contains(x, pty) {
		t.Fatalf("domain debian has no pty serial console:\n%s", x)
	}
	x = strings.Replace(x, pty, pty+"<log file='/srv/vms/debian-console.log' append='off'/>", 1)
	b.WriteFile(t, "/srv/debian.xml", []byte(x), 0o644)
	b.MustExec(t, "virsh", "-q", "define", "/srv/debian.xml")
	start = time.Now()
	if out, stderr, err := b.Exec(ctx, "virsh", "start", "debian"); err != nil {
		t.Fatalf("virsh start debian: %v %s%s", err, out, stderr)
	}
	defer b.Exec(context.Background(), "virsh", "-q", "destroy", "debian")
	// TCG on a loaded 2-core machine: bootTimeout, as the boot tests.
	deadline := time.Now().Add(bootTimeout)
	var console string
	for {
		console, _, _ = b.Exec(ctx, "cat", "/srv/vms/debian-console.log")
		if strings.Contains(console, "login:") {
			break
		}
		if strings.Contains(console, "Gave up waiting for root") || strings.Contains(console, "(initramfs)") || time.Now().After(deadline) || ctx.Err() != nil {
			tail := console
			if len(tail) > 3000 {
				tail = tail[len(tail)-3000:]
			}
			t.Fatalf("the guest libvirt started did not reach a login prompt:\n%s", tail)
		}
		time.Sleep(2 * time.Second)
	}
	t.Logf("virsh start to login prompt: %s", time.Since(start).Round(time.Second))
}

// libvirtEngineReport is the engine's report inside a settlement.
func libvirtEngineReport(t *testing.T, settled map[string]any) map[string]any {
	t.Helper()
	jobs, _ := settled["jobs"].([]any)
	if len(jobs) != 1 {
		t.Fatalf("settlement holds %d jobs: %v", len(jobs), settled)
	}
	j, _ := jobs[0].(map[string]any)
	rep, _ := j["report"].(map[string]any)
	if rep == nil {
		t.Fatalf("settlement has no engine report: %v", j)
	}
	return rep
}

// libvirtDomain is what the test reads of `virsh dumpxml`.
type libvirtDomain struct {
	Type   string `xml:"type,attr"`
	UUID   string `xml:"uuid"`
	Memory int    `xml:"memory"`
	VCPU   int    `xml:"vcpu"`
	OS     struct {
		Firmware string `xml:"firmware,attr"`
		Type     struct {
			Machine string `xml:"machine,attr"`
		} `xml:"type"`
		Loader struct {
			Path   string `xml:",chardata"`
			Secure string `xml:"secure,attr"`
		} `xml:"loader"`
		NVRAM struct {
			Template string `xml:"template,attr"`
		} `xml:"nvram"`
	} `xml:"os"`
	Disks []struct {
		Driver struct {
			Type string `xml:"type,attr"`
		} `xml:"driver"`
		Source struct {
			File   string `xml:"file,attr"`
			Pool   string `xml:"pool,attr"`
			Volume string `xml:"volume,attr"`
		} `xml:"source"`
	} `xml:"devices>disk"`
	NICs []struct {
		Type string `xml:"type,attr"`
		MAC  struct {
			Address string `xml:"address,attr"`
		} `xml:"mac"`
		Source struct {
			Bridge  string `xml:"bridge,attr"`
			Network string `xml:"network,attr"`
		} `xml:"source"`
	} `xml:"devices>interface"`
	Graphics []struct {
		Type   string `xml:"type,attr"`
		Listen struct {
			Address string `xml:"address,attr"`
		} `xml:"listen"`
	} `xml:"devices>graphics"`
}

func xmlUnmarshal(s string, v any) error { return xml.Unmarshal([]byte(s), v) }

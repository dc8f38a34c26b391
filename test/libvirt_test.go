package test

import (
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
//     left are removed when the job runs again.
//
// Booting is left to the boot tests (test/boot_test.go).
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
	b := relStart(t, box.Options{}, true, "target:\n  default_network: {network: isolated}\n  libvirt: {uri: \"qemu:///system\", define: true}\n")
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

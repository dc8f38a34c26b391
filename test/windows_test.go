package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/engine"
	"github.com/hyper2kvm/hyper2kvm/agent/hive/hivetest"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/progress"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
	"github.com/hyper2kvm/hyper2kvm/test/box"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// winServer is the registry of the phony Windows guest: Windows Server
// 2022 with VMware Tools, a static address and no virtio driver.
func winServer() hivetest.Windows {
	return hivetest.Windows{ProductName: "Windows Server 2022 Standard", EditionID: "ServerStandard",
		InstallationType: "Server", CurrentBuild: "20348", UBR: 2227, Major: 10, CurrentVersion: "6.3",
		DisplayVersion: "21H2", Arch: "AMD64", Hostname: "WIN-FILESRV01", VMwareTools: true,
		StaticNICs: []hivetest.NIC{{GUID: "{6f4c2d1a-0000-4000-8000-000000000001}", Addresses: []string{"192.168.10.20"},
			Masks: []string{"255.255.255.0"}, Gateways: []string{"192.168.10.1"}, DNS: "192.168.10.53,192.168.10.54"}}}
}

// winMAC is the phony Windows VM's NIC in its OVF.
const winMAC = "00:50:56:aa:bb:01"

// windowsOVA packs the phony Windows guest as a streamOptimized VMDK in an
// OVA whose OVF says Windows Server 2019 (VMware's newest Windows id).
func windowsOVA(t *testing.T, o fixture.WindowsOptions) string {
	t.Helper()
	dir := t.TempDir()
	raw := fixture.WindowsDisk(t, dir, o)
	return fixture.OVAWith(t, dir, fixture.VM{Name: "winsrv", OSType: "windows2019srv_64Guest", OSID: 112, MACs: []string{winMAC}}, raw)
}

// TestWindowsInspect: INSPECT reads the phony Windows guest's registry
// through the NTFS filesystem (ntfs-3g with the native backend) and
// reports product, version, build, arch, hostname, installation type,
// VMware Tools and the static address exactly; the source is unchanged.
func TestWindowsInspect(t *testing.T) {
	needRoot(t)
	t.Parallel()
	engNeedTools(t)
	needTools(t, "mkntfs", "ntfs-3g")
	for _, lower := range []bool{false, true} {
		name := "Windows-System32-config"
		if lower {
			name = "windows-system32-CONFIG"
		}
		t.Run(name, func(t *testing.T) {
			ova := windowsOVA(t, fixture.WindowsOptions{Registry: winServer(), LowerCase: lower})
			sum := fixture.SHA256(t, ova)
			m := engManifest("winsrv", "ova", ova)
			m.Pipeline.Inspect = &manifest.Inspect{}
			m.Pipeline.Validate = &manifest.Validate{Compare: new(bool)}
			m.SetDefaults()
			rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: filepath.Join(t.TempDir(), "out"), Backend: "native"})
			if err != nil {
				t.Fatalf("Run: %v (report error %+v)", err, rep.Error)
			}
			g := rep.Guest
			if g == nil || g.OS == nil || g.Windows == nil {
				t.Fatalf("no Windows in the report: %+v", g)
			}
			w := g.Windows
			b, _ := json.MarshalIndent(w, "", "  ")
			t.Logf("report guest.windows:\n%s", b)
			want := report.Windows{ProductName: "Windows Server 2022 Standard", Edition: "ServerStandard", Version: "10.0",
				Build: "20348.2227", DisplayVersion: "21H2", Arch: "x86_64", Hostname: "WIN-FILESRV01", Installation: "Server",
				SystemRoot: `C:\Windows`, Volume: "/dev/sda1", ControlSet: "ControlSet001",
				VMwareTools: []string{`SOFTWARE\VMware, Inc.\VMware Tools`, "service:VMTools", "service:vmxnet3ndis6"},
				NICs: []report.WindowsNIC{{ID: "{6f4c2d1a-0000-4000-8000-000000000001}", Addresses: []string{"192.168.10.20"},
					Prefix: []int{24}, Gateways: []string{"192.168.10.1"}, DNS: []string{"192.168.10.53", "192.168.10.54"}}}}
			if !reflect.DeepEqual(*w, want) {
				t.Errorf("guest.windows:\n got %+v\nwant %+v", *w, want)
			}
			if g.OS.Type != "windows" || g.OS.Pretty != "Windows Server 2022 Standard" || g.OS.VersionID != "10.0" || g.Root != "/dev/sda1" {
				t.Errorf("guest.os %+v root %q", g.OS, g.Root)
			}
			if s := engStage(t, rep, "inspect"); s.Status != "ok" {
				t.Errorf("INSPECT %s: %s", s.Status, s.Error)
			}
			if fixture.SHA256(t, ova) != sum {
				t.Error("the OVA changed")
			}
		})
	}
}

// TestWindowsInspectBlockers: each blocker fails the job in INSPECT with
// what was found and what to do in the source VM; a hiberfil.sys that
// holds no hibernated system and HiberbootEnabled without a hiberfil.sys
// do not block.
func TestWindowsInspectBlockers(t *testing.T) {
	needRoot(t)
	t.Parallel()
	engNeedTools(t)
	needTools(t, "mkntfs", "ntfs-3g")
	fast := winServer()
	fast.HiberbootEnabled = true
	pending := winServer()
	pending.RebootPending = true
	tests := []struct {
		name string
		o    fixture.WindowsOptions
		want []string // in the error, "" for a job that passes INSPECT
	}{
		{"hibernated", fixture.WindowsOptions{Registry: winServer(), Hiberfil: "HIBR"}, []string{"[hibernated]", "hiberfil.sys", "powercfg /h off"}},
		{"fast startup", fixture.WindowsOptions{Registry: fast, Hiberfil: "\x00\x00\x00\x00"}, []string{"[fast-startup]", "HiberbootEnabled=1", "powercfg /h off"}},
		{"bitlocker", fixture.WindowsOptions{Registry: winServer(), BitLocker: true}, []string{"[bitlocker]", "/dev/sda2 is BitLocker-encrypted", "manage-bde -off"}},
		{"pending updates", fixture.WindowsOptions{Registry: pending}, []string{"[pending-updates]", "RebootPending", "restart Windows"}},
		{"fast startup without hiberfil", fixture.WindowsOptions{Registry: fast}, nil},
		{"hiberfil not hibernated", fixture.WindowsOptions{Registry: winServer(), Hiberfil: "\x00\x00\x00\x00"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ova := windowsOVA(t, tt.o)
			m := engManifest("winsrv", "ova", ova)
			m.Pipeline.Inspect = &manifest.Inspect{}
			m.Pipeline.Validate = &manifest.Validate{Compare: new(bool)}
			m.SetDefaults()
			out := filepath.Join(t.TempDir(), "out")
			rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: out, Backend: "native"})
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				if n := len(rep.Guest.Windows.Blockers); n != 0 || len(rep.Guest.Windows.Notes) == 0 {
					t.Errorf("blockers %+v notes %q", rep.Guest.Windows.Blockers, rep.Guest.Windows.Notes)
				}
				t.Logf("notes: %q", rep.Guest.Windows.Notes)
				return
			}
			if err == nil {
				t.Fatal("the job completed")
			}
			if rep.Error == nil || rep.Error.Stage != "inspect" {
				t.Fatalf("failed in %+v, want INSPECT", rep.Error)
			}
			for _, w := range tt.want {
				if !strings.Contains(rep.Error.Message, w) {
					t.Errorf("error %q lacks %q", rep.Error.Message, w)
				}
			}
			t.Logf("error: %s", rep.Error.Message)
			if rep.Guest == nil || rep.Guest.Windows == nil || len(rep.Guest.Windows.Blockers) == 0 {
				t.Errorf("the report lists no blocker: %+v", rep.Guest)
			}
			// Nothing converted: no disk, no domain.xml.
			if ents, _ := filepath.Glob(filepath.Join(out, "*", "*", "*.qcow2")); len(ents) != 0 {
				t.Errorf("outputs written: %v", ents)
			}
		})
	}
}

// TestWindowsAgent: phony Windows guests dropped into the agent's queue.
// The clean one is inspected in its job unit and the report lists what
// its registry says; the hibernated one ends in failed/ with the blocker
// and what to do; one that asks for FIX without fix.virtio_win in
// agent.yaml fails before FIX saying what to install and where.
func TestWindowsAgent(t *testing.T) {
	needRoot(t)
	needTools(t, "mkntfs", "ntfs-3g")
	t.Parallel()
	clean := windowsOVA(t, fixture.WindowsOptions{Registry: winServer()})
	hib := windowsOVA(t, fixture.WindowsOptions{Registry: winServer(), Hiberfil: "hibr"})
	b := startAgentBox(t, box.Options{Devices: true})
	for name, src := range map[string]string{"clean": clean, "hib": hib} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteFile(t, "/srv/src/"+name+".ova", data, 0o644)
	}
	b.openGate()
	inspectOnly := func(name, src string) string {
		return fmt.Sprintf(`{"version":"1.0","name":%q,"pipeline":{"load":{"source_type":"ova","source_path":%q},`+
			`"inspect":{"enabled":true},"fix":{"enabled":false},"convert":{"output_format":"qcow2"},"validate":{"enabled":false}}}`, name, src)
	}
	b.drop("winsrv.json", inspectOnly("winsrv", "/srv/src/clean.ova"))
	b.drop("hib.json", inspectOnly("hib", "/srv/src/hib.ova"))
	b.drop("wantfix.json", fmt.Sprintf(`{"version":"1.0","name":"wantfix","pipeline":{"load":{"source_type":"ova","source_path":"/srv/src/clean.ova"},`+
		`"inspect":{"enabled":true},"fix":{"enabled":true},"convert":{"output_format":"qcow2"},"validate":{"enabled":false}}}`))

	rep := b.settled("processed", "winsrv.json")
	jobsList, _ := rep["jobs"].([]any)
	if len(jobsList) != 1 {
		t.Fatalf("report lists %d jobs: %v", len(jobsList), rep)
	}
	eng, _ := jobsList[0].(map[string]any)["report"].(map[string]any)
	raw, _ := json.Marshal(eng["guest"])
	var g report.Guest
	if err := json.Unmarshal(raw, &g); err != nil || g.Windows == nil {
		t.Fatalf("no guest.windows in the report: %v %s", err, raw)
	}
	w := g.Windows
	if w.ProductName != "Windows Server 2022 Standard" || w.Version != "10.0" || w.Build != "20348.2227" || w.Arch != "x86_64" ||
		w.Hostname != "WIN-FILESRV01" || w.Installation != "Server" || len(w.VMwareTools) == 0 || len(w.NICs) != 1 {
		t.Errorf("guest.windows: %+v", *w)
	}
	// Converted as it is: domain.xml keeps SATA and e1000e, with the
	// enlightenments Windows wants.
	var domain string
	for _, o := range jobsList[0].(map[string]any)["outputs"].([]any) {
		if strings.HasSuffix(o.(string), ".xml") {
			d, _ := os.ReadFile(b.Path(o.(string)))
			domain = string(d)
		}
	}
	for _, want := range []string{`bus="sata"`, `type="e1000e"`, `<hyperv>`, `offset="localtime"`} {
		if !strings.Contains(domain, want) {
			t.Errorf("domain.xml lacks %s:\n%s", want, domain)
		}
	}

	for name, want := range map[string][]string{
		"hib.json":     {"[hibernated]", "hiberfil.sys", "powercfg /h off"},
		"wantfix.json": {"fix.virtio_win is not set", "virtio-win.iso", "/etc/hyper2kvm/agent.yaml", "pipeline.fix.enabled=false"},
	} {
		rep := b.settled("failed", name)
		text := fmt.Sprint(rep["error"])
		for _, w := range want {
			if !strings.Contains(text, w) {
				t.Errorf("%s: error %q lacks %q", name, text, w)
			}
		}
		if rep["stage"] != "inspect" {
			t.Errorf("%s failed in %v, want inspect", name, rep["stage"])
		}
	}
}

// virtioWinDir lays out a directory the way the virtio-win ISO is
// (DRIVER/OS/ARCH/FILE) with phony driver files, for Windows Server 2022.
func virtioWinDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"viostor", "vioscsi", "NetKVM"} {
		sub := filepath.Join(dir, d, "2k22", "amd64")
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, ext := range []string{"sys", "inf", "cat"} {
			name := strings.ToLower(d) + "." + ext
			if err := os.WriteFile(filepath.Join(sub, name), []byte("phony "+name+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// ntfsRead reads files out of partition 1 (at 1 MiB, 200 MiB) of a
// converted image with ntfscat, independently of the code under test.
func ntfsRead(t *testing.T, img, format string, paths ...string) map[string][]byte {
	t.Helper()
	part := filepath.Join(t.TempDir(), "part.raw")
	spec := fmt.Sprintf(`json:{"driver":"raw","offset":%d,"size":%d,"file":{"driver":%q,"file":{"driver":"file","filename":%q}}}`,
		fixture.PartStart, 200<<20, format, img)
	if out, err := exec.Command("qemu-img", "convert", "-O", "raw", spec, part).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert of the partition: %v\n%s", err, out)
	}
	got := map[string][]byte{}
	for _, p := range paths {
		if out, err := exec.Command("ntfscat", part, p).Output(); err == nil {
			got[p] = out
		}
	}
	return got
}

// ntfsGrep lists dir in partition 1 of a converted image (ntfsls) and
// returns the files there that contain s (ntfscat).
func ntfsGrep(t *testing.T, img, format, dir, s string) []string {
	t.Helper()
	part := filepath.Join(t.TempDir(), "part.raw")
	spec := fmt.Sprintf(`json:{"driver":"raw","offset":%d,"size":%d,"file":{"driver":%q,"file":{"driver":"file","filename":%q}}}`,
		fixture.PartStart, 200<<20, format, img)
	if out, err := exec.Command("qemu-img", "convert", "-O", "raw", spec, part).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert of the partition: %v\n%s", err, out)
	}
	out, err := exec.Command("ntfsls", "-p", dir, part).Output()
	if err != nil {
		t.Logf("ntfsls %s: %v", dir, err)
		return nil
	}
	var found []string
	for _, name := range strings.Fields(string(out)) {
		if b, err := exec.Command("ntfscat", part, dir+"/"+name).Output(); err == nil && strings.Contains(string(b), s) {
			found = append(found, name)
		}
	}
	return found
}

// TestWindowsVirtV2V: a Windows guest with fix.virtio_win set is adapted
// by virt-v2v-in-place (auto takes it for Windows) on an overlay, with
// VIRTIO_WIN pointing at the directory: the converted disk holds the
// drivers from it, its SYSTEM hive (read with hivex) has the viostor
// service, the static address INSPECT found is passed with --mac for the OVF's NIC
// and ends up in a first-boot script, the report carries virt-v2v's
// messages and warnings, domain.xml
// puts the disk and NIC on virtio, and the source is unchanged. Slow: the
// libguestfs appliance under TCG (about 1-2 min).
func TestWindowsVirtV2V(t *testing.T) {
	needRoot(t)
	engNeedTools(t)
	needTools(t, "mkntfs", "ntfs-3g", "ntfscat", "virt-v2v-in-place", "nbdkit", "hivexget")
	ova := windowsOVA(t, fixture.WindowsOptions{Registry: winServer()})
	sum := fixture.SHA256(t, ova)
	vw := virtioWinDir(t)
	// virt-v2v installs Windows first-boot scripts (here: the static
	// address) through rhsrvany.exe, which Debian does not ship; a phony
	// one lets it write them.
	tools := t.TempDir()
	os.WriteFile(filepath.Join(tools, "rhsrvany.exe"), []byte("MZ phony rhsrvany\n"), 0o644)
	t.Setenv("VIRT_TOOLS_DATA_DIR", tools)
	m := engManifest("winsrv", "ova", ova)
	on := true
	m.Pipeline.Inspect = &manifest.Inspect{}
	m.Pipeline.Fix = &manifest.Fix{Enabled: &on}
	m.Pipeline.Validate = &manifest.Validate{Compare: new(bool)}
	m.SetDefaults()
	out := filepath.Join(t.TempDir(), "out")
	var stages []string
	rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: out, VirtioWin: vw,
		Progress: func(u progress.Update) {
			if u.Stage == "fix" && strings.HasPrefix(u.Text, "virt-v2v: ") && !slices.Contains(stages, u.Text) {
				stages = append(stages, u.Text)
			}
		}})
	if err != nil {
		b, _ := json.MarshalIndent(rep.Stages, "", "  ")
		t.Fatalf("Run: %v\n%s", err, b)
	}
	fix := engStage(t, rep, "fix")
	res, _ := json.Marshal(fix.Result)
	t.Logf("FIX result: %s", res)
	var fr struct {
		Backend string `json:"backend"`
		Overlay string `json:"overlay"`
		V2V     struct {
			Args []string `json:"args"`
			Env  []string `json:"env"`
		} `json:"virt_v2v"`
		Converted string `json:"converted"`
	}
	json.Unmarshal(res, &fr)
	if fr.Backend != "virt-v2v" || fr.Converted != "Windows Server 2022 Standard" ||
		len(fr.V2V.Args) == 0 || fr.V2V.Args[len(fr.V2V.Args)-1] != fr.Overlay || !strings.HasSuffix(fr.Overlay, "-overlay.qcow2") ||
		!slices.Contains(fr.V2V.Args, "--machine-readable") || !slices.Equal(fr.V2V.Env, []string{"VIRTIO_WIN=" + vw, "VIRT_TOOLS_DATA_DIR=" + tools}) {
		t.Errorf("FIX result %s", res)
	}
	if !slices.Contains(fr.V2V.Args, "--mac") || !slices.Contains(fr.V2V.Args, winMAC+":ip:192.168.10.20,192.168.10.1,24,192.168.10.53,192.168.10.54") {
		t.Errorf("the static address was not passed to virt-v2v: %q", fr.V2V.Args)
	}
	t.Logf("progress: %q", stages)
	if len(stages) < 5 || !slices.Contains(stages, "virt-v2v: Converting Windows Server 2022 Standard to run on KVM") {
		t.Errorf("FIX progress did not follow virt-v2v's stages: %q", stages)
	}
	var notes []string
	for _, c := range rep.Changes {
		notes = append(notes, c.Note)
	}
	for _, want := range []string{"Converting Windows Server 2022 Standard to run on KVM", "This guest has virtio drivers installed."} {
		if !slices.Contains(notes, want) {
			t.Errorf("changes lack %q: %q", want, notes)
		}
	}
	if !strings.Contains(strings.Join(rep.Warnings, "\n"), "QEMU Guest Agent MSI not found") {
		t.Errorf("virt-v2v's warning is not in the report: %q", rep.Warnings)
	}
	disk := filepath.Join(out, "winsrv.qcow2")
	files := ntfsRead(t, disk, "qcow2", "/Windows/System32/drivers/viostor.sys", "/Windows/Drivers/VirtIO/vioscsi.inf",
		"/Windows/Drivers/VirtIO/netkvm.sys", "/Windows/System32/config/SYSTEM")
	if string(files["/Windows/System32/drivers/viostor.sys"]) != "phony viostor.sys\n" ||
		string(files["/Windows/Drivers/VirtIO/vioscsi.inf"]) != "phony vioscsi.inf\n" ||
		string(files["/Windows/Drivers/VirtIO/netkvm.sys"]) != "phony netkvm.sys\n" {
		t.Errorf("the virtio-win drivers are not in the converted guest: %q", files)
	}
	// virt-v2v turns --mac into a PowerShell script (in C:\Windows\Temp)
	// that a first-boot script runs to set the address on the NIC with
	// that MAC.
	ps := ntfsGrep(t, disk, "qcow2", "/Windows/Temp", "192.168.10.20")
	fb := ntfsGrep(t, disk, "qcow2", "/Program Files/Guestfs/Firstboot/scripts", ".ps1")
	if len(ps) == 0 || len(fb) == 0 {
		t.Errorf("the converted guest has no first-boot script setting 192.168.10.20 (scripts %q, first-boot %q)", ps, fb)
	}
	t.Logf("PowerShell scripts with the address: %q, first-boot scripts running one: %q", ps, fb)
	hp := filepath.Join(t.TempDir(), "SYSTEM")
	os.WriteFile(hp, files["/Windows/System32/config/SYSTEM"], 0o600)
	if v, err := exec.Command("hivexget", hp, `ControlSet001\Services\viostor`, "Start").CombinedOutput(); err != nil || strings.TrimSpace(string(v)) != "0" {
		t.Errorf("hivexget viostor Start: %v %q, want 0 (boot start)", err, v)
	}
	d, _ := os.ReadFile(filepath.Join(out, "winsrv.xml"))
	for _, want := range []string{`bus="virtio"`, `type="virtio"`, `<hyperv>`, `offset="localtime"`} {
		if !strings.Contains(string(d), want) {
			t.Errorf("domain.xml lacks %s:\n%s", want, d)
		}
	}
	if fixture.SHA256(t, ova) != sum {
		t.Error("the OVA changed")
	}
}

// TestWindowsInspectGuestfs: the guestfs backend reads the same registry
// in its appliance (its own NTFS driver), and reads hiberfil.sys's head
// there too: the hibernated guest is reported in full and blocked.
func TestWindowsInspectGuestfs(t *testing.T) {
	needRoot(t)
	t.Parallel()
	engNeedTools(t)
	needTools(t, "mkntfs", "ntfs-3g", "guestfish")
	ova := windowsOVA(t, fixture.WindowsOptions{Registry: winServer(), Hiberfil: "HIBR"})
	m := engManifest("winsrv", "ova", ova)
	m.Pipeline.Inspect = &manifest.Inspect{}
	m.Pipeline.Fix.Backend = "guestfs"
	m.SetDefaults()
	rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: filepath.Join(t.TempDir(), "out")})
	if err == nil || rep.Error == nil || rep.Error.Stage != "inspect" || !strings.Contains(rep.Error.Message, "[hibernated]") {
		t.Fatalf("Run: %v, report error %+v; want INSPECT to fail on the hibernated system", err, rep.Error)
	}
	if rep.Guest == nil || rep.Guest.Windows == nil || rep.Guest.Backend != "guestfs" {
		t.Fatalf("guest %+v", rep.Guest)
	}
	w := rep.Guest.Windows
	if w.ProductName != "Windows Server 2022 Standard" || w.Build != "20348.2227" || w.Hostname != "WIN-FILESRV01" || w.Arch != "x86_64" || len(w.NICs) != 1 {
		t.Errorf("guest.windows through guestfs: %+v", *w)
	}
}

// TestWindowsAgentVirtV2V: with fix.virtio_win in agent.yaml, a Windows
// guest dropped into the queue is adapted by virt-v2v-in-place inside its
// job unit (its limits, its journal): processed/ holds the report with
// virt-v2v's messages, the unit's journal has virt-v2v's lines, and
// domain.xml puts the disk on virtio. Slow (an appliance under TCG).
func TestWindowsAgentVirtV2V(t *testing.T) {
	needRoot(t)
	needTools(t, "mkntfs", "ntfs-3g", "virt-v2v-in-place", "nbdkit")
	t.Parallel()
	raw := fixture.WindowsDisk(t, t.TempDir(), fixture.WindowsOptions{Registry: winServer()})
	// No MAC in the OVF: no static address to carry, so virt-v2v needs
	// no first-boot script (and no rhsrvany.exe).
	ova := fixture.OVAWith(t, t.TempDir(), fixture.VM{Name: "winsrv", OSType: "windows2019srv_64Guest", OSID: 112}, raw)
	b := startAgentBox(t, box.Options{Devices: true})
	// Limits a real Windows conversion gets: the appliance needs memory,
	// threads and CPU the quick tests' limits do not give.
	yaml := strings.Replace(agentYAML, "  memory_max: 256M\n  cpu_quota: 50%\n  tasks_max: 64\n  runtime_max_sec: 600\n",
		"  memory_max: 3G\n  cpu_quota: 200%\n  tasks_max: 1024\n  runtime_max_sec: 1800\n", 1)
	yaml += "fix:\n  virtio_win: /srv/virtio-win\n"
	b.WriteFile(t, "/etc/hyper2kvm/agent.yaml", []byte(yaml), 0o644)
	vw := virtioWinDir(t)
	b.MustExec(t, "mkdir", "-p", "/srv/virtio-win")
	filepath.WalkDir(vw, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, _ := os.ReadFile(p)
		rel, _ := filepath.Rel(vw, p)
		b.WriteFile(t, "/srv/virtio-win/"+rel, data, 0o644)
		return nil
	})
	data, err := os.ReadFile(ova)
	if err != nil {
		t.Fatal(err)
	}
	b.WriteFile(t, "/srv/src/win.ova", data, 0o644)
	b.openGate()
	b.drop("winfix.json", `{"version":"1.0","name":"winfix","pipeline":{"load":{"source_type":"ova","source_path":"/srv/src/win.ova"},`+
		`"convert":{"output_format":"qcow2"},"validate":{"enabled":false}}}`)
	rep := b.settled("processed", "winfix.json")
	j := rep["jobs"].([]any)[0].(map[string]any)
	eng, _ := json.Marshal(j["report"])
	var r report.Report
	json.Unmarshal(eng, &r)
	fix := r.Stage("fix")
	if fix == nil || fix.Status != "ok" {
		t.Fatalf("FIX: %+v\n%s", fix, eng)
	}
	var notes []string
	for _, c := range r.Changes {
		notes = append(notes, c.Fix+": "+c.Note)
	}
	if !slices.Contains(notes, "virt-v2v: Converting Windows Server 2022 Standard to run on KVM") {
		t.Errorf("changes: %q", notes)
	}
	unit := fmt.Sprint(rep["unit"])
	if log := b.Journal(b.ctx(), "-u", unit); !strings.Contains(log, "virt-v2v-in-place: [") || !strings.Contains(log, "Converting Windows Server 2022 Standard") {
		t.Errorf("the job's journal lacks virt-v2v's lines:\n%s", log)
	}
	for _, o := range j["outputs"].([]any) {
		if strings.HasSuffix(o.(string), ".xml") {
			d, _ := os.ReadFile(b.Path(o.(string)))
			if !strings.Contains(string(d), `bus="virtio"`) {
				t.Errorf("domain.xml not on virtio:\n%s", d)
			}
		}
	}
}

// TestWindowsNTFSDataDisk: an NTFS volume without Windows on it is a data
// disk, as an ext4 disk without a system is: with FIX on the job fails
// saying to switch FIX off, with FIX off it converts.
func TestWindowsNTFSDataDisk(t *testing.T) {
	needRoot(t)
	engNeedTools(t)
	needTools(t, "mkntfs", "ntfs-3g")
	t.Parallel()
	ova := windowsOVA(t, fixture.WindowsOptions{DataOnly: true})
	for _, fixOn := range []bool{true, false} {
		m := engManifest("data", "ova", ova)
		m.Pipeline.Inspect = &manifest.Inspect{}
		m.Pipeline.Fix = &manifest.Fix{Enabled: &fixOn}
		m.Pipeline.Validate = &manifest.Validate{Compare: new(bool)}
		m.SetDefaults()
		rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: filepath.Join(t.TempDir(), "out")})
		if fixOn {
			if err == nil || rep.Error == nil || !strings.Contains(rep.Error.Message, "inspection found no operating system; set pipeline.fix.enabled=false") {
				t.Errorf("FIX on: %v %+v", err, rep.Error)
			}
			continue
		}
		if err != nil || rep.Guest.OS.Type != "unknown" || rep.Guest.Windows != nil {
			t.Errorf("FIX off: %v, os %+v", err, rep.Guest.OS)
		}
	}
}

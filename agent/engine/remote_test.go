package engine_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"

	"github.com/hyper2kvm/hyper2kvm/agent/engine"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// fakeRemote hands over a VMDK as a source's export would.
type fakeRemote struct {
	vmdk string
	hw   report.Hardware
	dir  string // where Fetch was asked to write
}

func (f *fakeRemote) Fetch(ctx context.Context, dir string, progress func(done, total int64)) (*engine.Fetched, error) {
	f.dir = dir
	in, err := os.Open(f.vmdk)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	dst := filepath.Join(dir, "disk1.vmdk")
	out, err := os.Create(dst)
	if err != nil {
		return nil, err
	}
	n, err := io.Copy(out, in)
	out.Close()
	progress(n, n)
	return &engine.Fetched{Disks: []engine.FetchedDisk{{ID: "disk1", File: dst, Display: "[LocalDS_0] web01/web01.vmdk"}}, Hardware: &f.hw}, err
}

func remoteManifest() *manifest.Manifest {
	return &manifest.Manifest{Version: "1.0", Name: "web01", Pipeline: &manifest.Pipeline{
		Load:    manifest.Load{SourceType: "vsphere", Source: "vc1", VM: "/DC0/vm/web01"},
		Inspect: &manifest.Inspect{Enabled: no()},
		Fix:     &manifest.Fix{Enabled: no()},
	}}
}

// A VM from a source converts like a file, and its domain carries the
// hardware the source's API reported: CPUs and topology, memory,
// firmware, every NIC with its MAC.
func TestRunRemote(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	raw := fixture.LinuxDisk(t, dir, fixture.Options{SizeMB: 16})
	vmdk := fixture.Convert(t, raw, "vmdk", "streamOptimized")
	f := &fakeRemote{vmdk: vmdk, hw: report.Hardware{Name: "web01", CPUs: 4, CoresPerSocket: 2, MemoryMB: 3072, Firmware: "efi",
		Disks: []report.HardwareDisk{{Label: "Hard disk 1", Controller: "scsi0:0", File: "[LocalDS_0] web01/web01.vmdk", ID: "disk1"}},
		NICs:  []report.HardwareNIC{{Label: "Network adapter 1", MAC: "00:50:56:aa:bb:01", Network: "VM Network"}, {Label: "Network adapter 2", MAC: "00:50:56:aa:bb:02", Network: "Backup"}}}}
	out := filepath.Join(dir, "out")
	work := filepath.Join(dir, "work")
	rep, err := engine.Run(context.Background(), remoteManifest(), engine.Options{JobID: "j1", OutputDir: out, WorkDir: work, Remote: f})
	if err != nil {
		t.Fatalf("%v\n%+v", err, rep)
	}
	if rep.Source.Hardware == nil || rep.Source.Hardware.CPUs != 4 || rep.Source.Path != "vc1:/DC0/vm/web01" || rep.Source.Detected != "vmdk" {
		t.Errorf("report source %+v", rep.Source)
	}
	b, err := os.ReadFile(filepath.Join(out, manifest.DomainXMLFile("web01")))
	if err != nil {
		t.Fatal(err)
	}
	var d libvirtxml.Domain
	if err := d.Unmarshal(string(b)); err != nil {
		t.Fatal(err)
	}
	if d.VCPU.Value != 4 || d.Memory.Value != 3072 || (d.OS.Firmware != "efi" && d.OS.Loader == nil) || d.CPU.Topology == nil || d.CPU.Topology.Sockets != 2 || d.CPU.Topology.Cores != 2 {
		t.Errorf("domain hardware: vcpu %d memory %d firmware %q loader %+v topology %+v", d.VCPU.Value, d.Memory.Value, d.OS.Firmware, d.OS.Loader, d.CPU.Topology)
	}
	if n := len(d.Devices.Interfaces); n != 2 || d.Devices.Interfaces[0].MAC.Address != "00:50:56:aa:bb:01" || d.Devices.Interfaces[1].MAC.Address != "00:50:56:aa:bb:02" {
		t.Errorf("domain NICs: %s", b)
	}
	if _, err := os.Stat(f.dir); err == nil {
		t.Errorf("the download directory %s is left after the job", f.dir)
	}
	if _, err := os.Stat(filepath.Join(out, "web01.qcow2")); err != nil {
		t.Errorf("no output disk: %v", err)
	}
}

func TestRunRemoteNeedsAWorker(t *testing.T) {
	rep, err := engine.Run(context.Background(), remoteManifest(), engine.Options{OutputDir: filepath.Join(t.TempDir(), "out")})
	if err == nil || !strings.Contains(err.Error(), "hyper2kvmd convert cannot reach a source") || rep.Status != report.Failed {
		t.Errorf("Run = %v, %+v", err, rep.Status)
	}
}

package vsphere_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/hyper2kvm/hyper2kvm/agent/sources"
	"github.com/hyper2kvm/hyper2kvm/agent/vsphere"
	"github.com/hyper2kvm/hyper2kvm/agent/vsphere/vspheretest"
)

const user, password = "svc-hyper2kvm", "s3cret-Pa55"

func start(t *testing.T, esx bool) (*vspheretest.Server, *vspheretest.Admin, *sources.Source) {
	t.Helper()
	s, err := vspheretest.Start(esx, "127.0.0.1:0", user, password)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	a, err := vspheretest.Dial(context.Background(), s.URL, user, password)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Logout(context.Background()) })
	src := &sources.Source{Name: "vc1", File: "/etc/hyper2kvm/sources.d/vc1.yaml", Type: "vsphere", URL: s.URL, Username: user, Thumbprint: s.Thumbprint, MaxParallelExports: 2}
	return s, a, src
}

func connect(t *testing.T, src *sources.Source) *vsphere.Client {
	t.Helper()
	c, err := vsphere.Connect(context.Background(), src, password)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Logout(context.Background()) })
	return c
}

func TestConnect(t *testing.T) {
	s, _, src := start(t, false)
	ctx := context.Background()
	connect(t, src)

	bad := *src
	bad.Thumbprint = strings.Repeat("AB:", 31) + "AB"
	_, err := vsphere.Connect(ctx, &bad, password)
	var ce *vsphere.CertificateError
	if !errors.As(err, &ce) || ce.Got != s.Thumbprint || !strings.Contains(err.Error(), "thumbprint: "+s.Thumbprint) || !strings.Contains(err.Error(), bad.File) {
		t.Errorf("wrong thumbprint: %v", err)
	}

	_, err = vsphere.Connect(ctx, src, "wrong")
	var le *vsphere.LoginError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "hyper2kvmd source set-password vc1") {
		t.Errorf("wrong password: %v", err)
	}
	if err != nil && strings.Contains(err.Error(), "wrong\"") {
		t.Errorf("the error quotes the password: %v", err)
	}

	insecure := *src
	insecure.Thumbprint, insecure.Insecure = "", true
	if c, err := vsphere.Connect(ctx, &insecure, password); err != nil {
		t.Errorf("insecure: %v", err)
	} else {
		c.Logout(ctx)
	}
}

func TestBrowseAndFind(t *testing.T) {
	for _, esx := range []bool{false, true} {
		t.Run(map[bool]string{false: "vcenter", true: "esxi"}[esx], func(t *testing.T) {
			s, _, src := start(t, esx)
			c := connect(t, src)
			ctx := context.Background()
			root, err := c.Browse(ctx, "/")
			if err != nil || len(root) == 0 || root[0].Kind != "datacenter" {
				t.Fatalf("Browse(/) = %+v, %v", root, err)
			}
			es, err := c.Browse(ctx, root[0].Path)
			if err != nil {
				t.Fatal(err)
			}
			var vm *vsphere.Entry
			for i := range es {
				if es[i].Path == s.FirstVM {
					vm = &es[i]
				}
			}
			if vm == nil || vm.Kind != "vm" || vm.PowerState != "poweredOn" || vm.CPUs == 0 || vm.MemoryMB == 0 || len(vm.Disks) == 0 || vm.Disks[0].Bytes == 0 {
				t.Fatalf("Browse(%s) has no VM %s with its details: %+v", root[0].Path, s.FirstVM, es)
			}
			for _, ref := range []vsphere.Ref{{Path: vm.Path}, {Moref: vm.Moref}, {UUID: vm.UUID}} {
				got, err := c.FindVM(ctx, ref)
				if err != nil || got.Reference().Value != vm.Moref {
					t.Errorf("FindVM(%+v) = %v, %v", ref, got, err)
				}
			}
			_, err = c.FindVM(ctx, vsphere.Ref{Path: s.FirstVM + "X"})
			var nf *vsphere.NotFoundError
			if !errors.As(err, &nf) || len(nf.Nearest) == 0 || nf.Nearest[0] != s.FirstVM {
				t.Errorf("FindVM(missing) = %v", err)
			}
			if _, err := c.FindVM(ctx, vsphere.Ref{Moref: "vm-99999"}); !errors.As(err, &nf) {
				t.Errorf("FindVM(missing moref) = %v", err)
			}
		})
	}
}

// disk is a stand-in for the VMDK a server exports: its bytes come back
// unchanged, zero blocks and all.
func disk(t *testing.T) (string, []byte) {
	b := make([]byte, 3<<20+4097)
	copy(b, "KDMV not really a sparse vmdk")
	copy(b[2<<20:], "marker in the third MiB")
	b[len(b)-1] = 7
	p := filepath.Join(t.TempDir(), "disk.vmdk")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func TestExport(t *testing.T) {
	for _, tc := range []struct {
		name       string
		esx, on    bool
		snapshot   bool
		wantErr    string
		wantMethod string
	}{
		{name: "vcenter powered off", wantMethod: "datastore"},
		{name: "esxi powered off", esx: true, wantMethod: "datastore"},
		{name: "powered on refused", on: true, wantErr: "set load.snapshot: true"},
		{name: "powered on with snapshot", on: true, snapshot: true, wantMethod: "nfc"},
		{name: "esxi powered on with snapshot", esx: true, on: true, snapshot: true, wantMethod: "nfc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, a, src := start(t, tc.esx)
			ctx := context.Background()
			img, want := disk(t)
			if err := a.PutDisk(ctx, s.FirstVM, img); err != nil {
				t.Fatal(err)
			}
			macs := []string{"00:50:56:aa:bb:01", "00:50:56:aa:bb:02"}
			if err := a.SetHardware(ctx, s.FirstVM, vspheretest.Hardware{CPUs: 4, CoresPerSocket: 2, MemoryMB: 3072, Firmware: "efi", MACs: macs}); err != nil {
				t.Fatal(err)
			}
			if err := a.Power(ctx, s.FirstVM, tc.on); err != nil {
				t.Fatal(err)
			}
			c := connect(t, src)
			obj, err := c.FindVM(ctx, vsphere.Ref{Path: s.FirstVM})
			if err != nil {
				t.Fatal(err)
			}
			vm, err := c.ReadVM(ctx, obj)
			if err != nil {
				t.Fatal(err)
			}
			hw := vm.Hardware
			if hw.CPUs != 4 || hw.CoresPerSocket != 2 || hw.MemoryMB != 3072 || hw.Firmware != "efi" || len(hw.NICs) != 2 || hw.NICs[0].MAC != macs[0] || hw.NICs[1].MAC != macs[1] || hw.NICs[0].Network == "" {
				t.Errorf("hardware %+v", hw)
			}
			if len(hw.Disks) == 0 || hw.Disks[0].Controller == "" || hw.Disks[0].ID != "disk1" {
				t.Errorf("disks %+v", hw.Disks)
			}
			dir := t.TempDir()
			var recorded string
			var last int64
			disks, err := c.Export(ctx, vm, vsphere.ExportOptions{Dir: dir, Snapshot: tc.snapshot, SnapshotName: "hyper2kvm-test",
				SnapshotTaken: func(m string) error { recorded = m; return nil },
				Progress:      func(done, total int64) { last = done }})
			if tc.wantErr != "" {
				var pe *vsphere.PoweredOnError
				if !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Export = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(disks[0].File)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("exported disk differs from the VM's (%d bytes, %v)", len(got), err)
			}
			if last != int64(len(want)) {
				t.Errorf("progress ended at %d, want %d", last, len(want))
			}
			if vm.Hardware.ExportMethod != tc.wantMethod {
				t.Errorf("method %q, want %q", vm.Hardware.ExportMethod, tc.wantMethod)
			}
			if tc.snapshot && (recorded == "" || vm.Hardware.Snapshot != recorded) {
				t.Errorf("snapshot recorded %q, hardware says %q", recorded, vm.Hardware.Snapshot)
			}
			if snaps, err := a.Snapshots(ctx, s.FirstVM); err != nil || len(snaps) != 0 {
				t.Errorf("snapshots left: %v, %v", snaps, err)
			}
			if parts, _ := filepath.Glob(filepath.Join(dir, "*.part")); len(parts) > 0 {
				t.Errorf(".part files left: %v", parts)
			}
		})
	}
}

// A cancel after the snapshot is taken still removes it.
func TestExportCancelRemovesSnapshot(t *testing.T) {
	s, a, src := start(t, false)
	c := connect(t, src)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	obj, err := c.FindVM(ctx, vsphere.Ref{Path: s.FirstVM})
	if err != nil {
		t.Fatal(err)
	}
	vm, err := c.ReadVM(ctx, obj)
	if err != nil {
		t.Fatal(err)
	}
	var taken []string
	_, err = c.Export(ctx, vm, vsphere.ExportOptions{Dir: t.TempDir(), Snapshot: true, SnapshotName: "hyper2kvm-cancel",
		SnapshotTaken: func(m string) error {
			if snaps, _ := a.Snapshots(context.Background(), s.FirstVM); len(snaps) == 1 {
				taken = snaps
			}
			cancel()
			return nil
		}})
	if err == nil {
		t.Fatal("a cancelled export succeeded")
	}
	if len(taken) != 1 || taken[0] != "hyper2kvm-cancel" {
		t.Errorf("snapshot while exporting: %v", taken)
	}
	if snaps, err := a.Snapshots(context.Background(), s.FirstVM); err != nil || len(snaps) != 0 {
		t.Errorf("snapshots left after a cancel: %v, %v", snaps, err)
	}
}

// RemoveSnapshot is what a restarted job runs on a recorded snapshot; a
// snapshot already gone is no error.
func TestRemoveSnapshotRecovery(t *testing.T) {
	s, a, src := start(t, false)
	c := connect(t, src)
	ctx := context.Background()
	obj, err := c.FindVM(ctx, vsphere.Ref{Path: s.FirstVM})
	if err != nil {
		t.Fatal(err)
	}
	task, err := obj.CreateSnapshot(ctx, "hyper2kvm-left", "", false, false)
	if err != nil {
		t.Fatal(err)
	}
	res, err := task.WaitForResult(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ref := res.Result.(types.ManagedObjectReference)
	if snaps, _ := a.Snapshots(ctx, s.FirstVM); len(snaps) != 1 {
		t.Fatalf("snapshots before: %v", snaps)
	}
	for range 2 {
		if err := c.RemoveSnapshot(ctx, ref.Value); err != nil {
			t.Fatal(err)
		}
	}
	if snaps, err := a.Snapshots(ctx, s.FirstVM); err != nil || len(snaps) != 0 {
		t.Errorf("snapshots left: %v, %v", snaps, err)
	}
}

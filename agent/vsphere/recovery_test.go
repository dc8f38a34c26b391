package vsphere_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/hyper2kvm/hyper2kvm/agent/vsphere"
)

// A job run again after its machine stopped mid-export (the agent queues
// it again after a reboot; no ExecStopPost ran) finds the snapshot its
// first run recorded in the job directory: the run removes that snapshot
// before anything else, and its own, and leaves no record. The end-to-end
// test cannot show this: its simulator dies with the box.
func TestJobRunRemovesTheRecordedSnapshot(t *testing.T) {
	s, a, src := start(t, false)
	ctx := context.Background()
	c := connect(t, src)
	obj, err := c.FindVM(ctx, vsphere.Ref{Path: s.FirstVM})
	if err != nil {
		t.Fatal(err)
	}
	task, err := obj.CreateSnapshot(ctx, "hyper2kvm-job1", "", false, false)
	if err != nil {
		t.Fatal(err)
	}
	res, err := task.WaitForResult(ctx)
	if err != nil {
		t.Fatal(err)
	}
	jobDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(jobDir, vsphere.SnapshotFile), []byte(res.Result.(types.ManagedObjectReference).Value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.Power(ctx, s.FirstVM, true); err != nil {
		t.Fatal(err)
	}
	disks, _, err := vsphere.JobExport{Source: src, Password: password, VM: vsphere.Ref{Path: s.FirstVM}, Snapshot: true,
		JobID: "job1", JobDir: jobDir}.Run(ctx, t.TempDir(), nil)
	if err != nil || len(disks) == 0 {
		t.Fatalf("the second run: %d disks, %v", len(disks), err)
	}
	if snaps, err := a.Snapshots(ctx, s.FirstVM); err != nil || len(snaps) != 0 {
		t.Errorf("snapshots after the second run: %v, %v", snaps, err)
	}
	if _, err := os.Stat(filepath.Join(jobDir, vsphere.SnapshotFile)); !os.IsNotExist(err) {
		t.Errorf("the snapshot record is left: %v", err)
	}
}

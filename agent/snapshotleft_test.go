package agent

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/vsphere"
)

func TestSnapshotRecordName(t *testing.T) {
	if snapshotRecord != vsphere.SnapshotFile {
		t.Fatalf("the agent looks for %q, the worker writes %q", snapshotRecord, vsphere.SnapshotFile)
	}
}

func TestLeftSnapshotNote(t *testing.T) {
	vm := []byte(`{"version":"1.0","name":"web01","pipeline":{"load":{"source_type":"vsphere","source":"vc1","vm":"/DC0/vm/web01"}}}`)
	for _, tc := range []struct {
		name, record, want string
		noDir              bool
	}{
		{name: "no record"},
		{name: "empty record", record: "\n"},
		{name: "left", record: "snapshot-87\n", want: "snapshot snapshot-87 (hyper2kvm-j1) of the VM is still on source vc1: it could not be removed (journalctl -u hyper2kvm-job-j1.service says why); remove it in vSphere"},
		{name: "no job directory (another host's job)", record: "snapshot-87\n", noDir: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.record != "" {
				if err := os.WriteFile(filepath.Join(dir, snapshotRecord), []byte(tc.record), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			r := &record{Job: jobs.Job{ID: "j1", Unit: "hyper2kvm-job-j1.service"}, VM: vm, JobDir: dir}
			if tc.noDir {
				r.JobDir = ""
			}
			if got := leftSnapshotNote(r); got != tc.want {
				t.Errorf("note %q, want %q", got, tc.want)
			}
		})
	}
}

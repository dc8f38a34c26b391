package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// snapshotRecord is the file of a job's directory that names the source
// snapshot the job took, from its creation until its removal
// (vsphere.SnapshotFile: the agent does not link the vSphere client;
// TestSnapshotRecordName keeps the two equal).
const snapshotRecord = "vsphere-snapshot"

// leftSnapshotNote says what to do about a snapshot a job ends with still
// recorded: the worker's own removal and its unit's ExecStopPost both
// failed (the source unreachable at that moment) or never ran (the
// machine stopped and the job is not run again). Nothing else removes it,
// and a snapshot left on a running VM grows until someone does: the job's
// error names it. "" when none is left.
func leftSnapshotNote(r *record) string {
	if r.JobDir == "" {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(r.JobDir, snapshotRecord))
	if err != nil {
		return ""
	}
	moref := strings.TrimSpace(string(b))
	if moref == "" {
		return ""
	}
	src := "its source"
	if l := remoteLoad(r.VM); l != nil {
		src = "source " + l.Source
	}
	return fmt.Sprintf("snapshot %s (hyper2kvm-%s) of the VM is still on %s: it could not be removed (journalctl -u %s says why); remove it in vSphere",
		moref, r.ID, src, r.Unit)
}

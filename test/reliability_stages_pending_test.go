//go:build reliability_pending

package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestReliabilityKillAllInFIX (a known gap): SIGKILL to every process of a job unit while FIX has the
// guest's root mounted read-write (systemctl kill -s KILL of the unit, the
// SIGKILL systemd sends when a stop outlasts TimeoutStopSec, the death of
// every process of a crashed box) hangs the job for good. The native
// backend's mount namespace is owned by qemu-storage-daemon, which also
// serves the FUSE export the guest filesystem is mounted from (through a
// loop device). Killed, the daemon tears its namespace down as it exits:
// unmounting the ext4 syncs it, the sync goes to the loop device, the loop
// device to the FUSE file, and the FUSE file's server is the exiting daemon
// itself. It stays in D state (ext4_sync_fs -> blkdev_issue_flush ->
// submit_bio_wait) until its FUSE connection is aborted by hand
// (/sys/fs/fuse/connections/N/abort); the unit never stops, the job never
// settles (its manifest stays in processing/), and the loop device stays
// attached. A SIGKILL of the worker alone, or a SIGTERM to all (a clean
// stop), does not hang: the daemon then gets SIGTERM and shuts its export
// down in order.
//
// What would fix it: a mount namespace owned by a process other than the
// FUSE server (the daemon joins it), so that whichever dies first, the
// export's connection is aborted before the last mount goes; or a
// qemu-storage-daemon that is not killed before the guest is unmounted.
//
// Run: sudo go test -tags reliability_pending -count=1 -v -run TestReliabilityKillAllInFIX ./test/
// The test aborts the FUSE connection it made when it ends, so a run
// leaves no hung process on the machine.
func TestReliabilityKillAllInFIX(t *testing.T) {
	t.Parallel()
	b := startRelStageBox(t)
	ctx := relCtx(t, 10*time.Minute)
	j := b.holdJobs(ctx, t, "ka", []string{"fix"})[0]
	conn := b.fuseConnOf(ctx, t, j.id)
	t.Cleanup(func() { relAbortFUSE(t, conn) })
	b.MustExec(t, "systemctl", "kill", "-s", "KILL", relUnitOf(j.id))
	waitCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err := b.WaitFor(waitCtx, j.name+" settled", func() (bool, error) {
		dir, _ := b.settledIn(j.name)
		return dir != "", nil
	})
	if err != nil {
		ps, _, _ := b.Exec(ctx, "ps", "-eo", "pid,stat,wchan:30,args")
		t.Fatalf("every process of the job unit killed in FIX: the job did not settle (%v); unit %s; FUSE connection %d; processes:\n%s",
			err, b.show(relUnitOf(j.id), "ActiveState"), conn, ps)
	}
	dir, rep := b.waitSettled(ctx, j.name)
	b.checkSettledOnce(ctx, t, j.name, j.id, dir, rep)
	b.checkBoxClean(ctx, t)
}

// fuseConnOf is the FUSE connection number (the minor of the export's
// device) of the qemu-storage-daemon of job id.
func (b *relFaultBox) fuseConnOf(ctx context.Context, t *testing.T, id string) int {
	t.Helper()
	out, _, _ := b.Exec(ctx, "sh", "-c", "for p in $(cat /sys/fs/cgroup/systemd/hyper2kvm.slice/"+relUnitOf(id)+"/cgroup.procs 2>/dev/null || cat /sys/fs/cgroup/hyper2kvm.slice/"+relUnitOf(id)+"/cgroup.procs); do "+
		`[ "$(cat /proc/$p/comm)" = qemu-storage-da ] && echo $p; done`)
	pid := strings.TrimSpace(out)
	if pid == "" || strings.Contains(pid, "\n") {
		t.Fatalf("job %s: qemu-storage-daemon pids %q", id, out)
	}
	disks, _ := filepath.Glob(b.Path(fmt.Sprintf("/proc/%s/root/tmp/guest-native-*/disk", pid)))
	if len(disks) != 1 {
		t.Fatalf("job %s: FUSE exports %v", id, disks)
	}
	var st unix.Stat_t
	if err := unix.Stat(disks[0], &st); err != nil {
		t.Fatal(err)
	}
	return int(unix.Minor(st.Dev))
}

// relAbortFUSE aborts FUSE connection conn (as `echo 1 > abort` in fusectl,
// mounted in a private namespace), which frees a daemon hung on its own
// export.
func relAbortFUSE(t *testing.T, conn int) {
	script := fmt.Sprintf(`mount -t fusectl none /sys/fs/fuse/connections && d=/sys/fs/fuse/connections/%d && if [ -d $d ]; then echo "waiting $(cat $d/waiting)"; echo 1 >$d/abort; fi`, conn)
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	out, err := cmd.CombinedOutput()
	t.Logf("abort FUSE connection %d: %s %v", conn, strings.TrimSpace(string(out)), err)
	_ = os.Stdout.Sync()
}

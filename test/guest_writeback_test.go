package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/guest"
	"golang.org/x/sys/unix"
)

// TestGuestNativeLostWritesFail: the disk export dies while FIX has the
// guest mounted read-write (here its FUSE connection is aborted, as a
// crashed qemu-storage-daemon or a full work disk would make every write
// fail). Closing the session must fail: the image lacks what was written.
// It used to succeed: umount only logs a failed write ("lost page write",
// "Aborting journal") and unmounts; a converted dracut guest then kept its
// old grub.cfg, which GRUB reads without replaying the journal, and waited
// for /dev/sda1 for good (a CI run of TestBootFamilies/dracut).
func TestGuestNativeLostWritesFail(t *testing.T) {
	needRoot(t)
	src := buildGuest(t, vmwareGuest)
	ov := overlayOf(t, src, "raw")
	work := t.TempDir()
	ctx := context.Background()
	s, err := guest.Open(ctx, guest.Native, guest.Image{Path: ov, Format: "qcow2"}, guest.Options{WorkDir: work, Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Mount(ctx, guest.Mount{Number: 1, Offset: 1 << 20, Size: 30 << 20, FSType: "ext4", Target: "/"}); err != nil {
		t.Fatal(err)
	}
	// Written and fsynced: in the journal, not yet in place.
	if err := s.WriteFile(ctx, "/etc/fstab", []byte("UUID="+rootUUID+" / ext4 defaults 0 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conn := exportConn(t, work)
	script := fmt.Sprintf("mount -t fusectl none /sys/fs/fuse/connections && echo 1 > /sys/fs/fuse/connections/%d/abort", conn)
	if out, err := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("abort FUSE connection %d: %v: %s", conn, err, out)
	}
	err = s.Close()
	t.Logf("Close: %v", err)
	if err == nil || !strings.Contains(err.Error(), "cannot write back the guest's filesystem at /") {
		t.Fatalf("Close after the export died: %v; want an error saying the guest's filesystem could not be written back", err)
	}
}

// exportConn is the FUSE connection number (the device minor) of the
// qemu-storage-daemon export of the session whose work directory is work:
// this process's child, found by its command line, never another's.
func exportConn(t *testing.T, work string) int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if !strings.Contains(string(b), "qemu-storage-daemon") || !strings.Contains(string(b), work) {
			continue
		}
		pid := filepath.Base(filepath.Dir(p))
		disks, _ := filepath.Glob("/proc/" + pid + "/root" + work + "/*/disk")
		if len(disks) != 1 {
			t.Fatalf("qemu-storage-daemon %s: exports %v", pid, disks)
		}
		var st unix.Stat_t
		if err := unix.Stat(disks[0], &st); err != nil {
			t.Fatal(err)
		}
		if unix.Major(st.Dev) != 0 {
			t.Fatalf("%s is not on FUSE (device %d:%d)", disks[0], unix.Major(st.Dev), unix.Minor(st.Dev))
		}
		return int(unix.Minor(st.Dev))
	}
	t.Fatalf("no qemu-storage-daemon for %s", work)
	return 0
}

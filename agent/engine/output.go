package engine

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/hyper2kvm/hyper2kvm/agent/qemuimg"
)

// GroupName is the group whose members may read every job's outputs.
const GroupName = "hyper2kvm"

// outputOwner is who the outputs belong to and their modes, set on each
// file's descriptor after it is created, so the umask never decides:
//
//   - root's jobs, hyper2kvmd convert and jobs of members of GroupName:
//     files 0640, directories the engine creates 0750, owner root (the
//     caller for a convert run by a user), group GroupName when it exists;
//   - jobs of a submitter outside GroupName: 0600 and 0700, owned by the
//     submitter, so no other local user reads what they converted.
type outputOwner struct {
	uid, gid  int // -1: leave as created
	file, dir os.FileMode
}

func ownerFor(u *userFiles, sourceUID int64) outputOwner {
	gid := -1
	if g, err := user.LookupGroup(GroupName); err == nil {
		if n, err := strconv.Atoi(g.Gid); err == nil {
			gid = n
		}
	}
	return ownerOf(u, sourceUID, gid)
}

// ownerOf is ownerFor with the gid of GroupName (-1: no such group).
func ownerOf(u *userFiles, sourceUID int64, gid int) outputOwner {
	o := outputOwner{uid: -1, gid: -1, file: 0o640, dir: 0o750}
	if sourceUID > 0 && (gid < 0 || u == nil || !u.gids[uint32(gid)]) {
		o.uid, o.file, o.dir = int(sourceUID), 0o600, 0o700
		if u != nil {
			o.gid = u.gid
		}
		return o
	}
	if os.Geteuid() == 0 {
		o.uid = 0
	}
	if gid >= 0 {
		if groups, _ := os.Getgroups(); os.Geteuid() == 0 || os.Getegid() == gid || slices.Contains(groups, gid) {
			o.gid = gid
		}
	}
	return o
}

// setFile gives a new output file its owner and mode.
func (o outputOwner) setFile(f *os.File) error { return o.set(f, o.file) }

// setDir gives a directory the engine created its owner and mode.
func (o outputOwner) setDir(f *os.File) error { return o.set(f, o.dir) }

func (o outputOwner) set(f *os.File, mode os.FileMode) error {
	if o.file == 0 {
		return nil // no owner settled (a run that failed before LOAD)
	}
	if o.uid >= 0 || o.gid >= 0 {
		if err := f.Chown(o.uid, o.gid); err != nil {
			return fmt.Errorf("cannot set the owner of %s: %w", f.Name(), err)
		}
	}
	// After chown, which may clear mode bits.
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("cannot set the mode of %s: %w", f.Name(), err)
	}
	return nil
}

// maxVirtualSize is Options.MaxVirtualSize or its default.
func (r *runner) maxVirtualSize() int64 {
	if r.o.MaxVirtualSize > 0 {
		return r.o.MaxVirtualSize
	}
	return DefaultMaxVirtualSize
}

// humanSize writes bytes in binary units, as agent.yaml sizes are written.
func humanSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	f := float64(n)
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if f == float64(int64(f)) {
		return fmt.Sprintf("%d %s", int64(f), units[i])
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}

// checkSpace refuses to start writing when the output file system cannot
// hold what the sources really allocate: qemu-img measure's required size
// for each disk converted (qemu-img info's actual size when measure cannot
// tell), against statfs's space available to the worker.
func (r *runner) checkSpace() error {
	var need int64
	for _, d := range r.disks {
		if d.output == "" {
			continue
		}
		if d.downloaded != nil {
			// Measuring asks where the data is, which a disk still
			// downloading answers only as it arrives: count its whole
			// virtual size (what a raw or full qcow2 output can take).
			need += d.info.VirtualSize
			continue
		}
		n, err := qemuimg.Measure(r.ctx, d.path, d.format)
		if err != nil || n <= 0 {
			n = d.info.ActualSize
		}
		need += n
	}
	var st unix.Statfs_t
	if err := unix.Statfs(r.outDir, &st); err != nil {
		return nil // cannot tell; the conversion will say ENOSPC if it comes to that
	}
	return spaceError(mountPoint(r.outShow), int64(st.Bavail)*int64(st.Bsize), need)
}

// spaceError is the refusal when free bytes cannot hold need.
func spaceError(fsName string, free, need int64) error {
	if need <= free {
		return nil
	}
	gib := func(n int64) string {
		prec := 1
		if n < 10<<30 {
			prec = 2 // 8 MiB is 0.01 GiB, not 0.0
		}
		return strconv.FormatFloat(float64(n)/(1<<30), 'f', prec, 64)
	}
	return fmt.Errorf("output filesystem %s has %s GiB free, the conversion needs about %s GiB; free some space or choose another output directory", fsName, gib(free), gib(need))
}

// mountPoint is the directory where the file system holding p is mounted:
// the last ancestor on the same device.
func mountPoint(p string) string {
	var st unix.Stat_t
	if unix.Stat(p, &st) != nil {
		return p
	}
	for {
		parent := filepath.Dir(p)
		if parent == p {
			return p
		}
		var pst unix.Stat_t
		if unix.Stat(parent, &pst) != nil || pst.Dev != st.Dev {
			return p
		}
		p = parent
	}
}

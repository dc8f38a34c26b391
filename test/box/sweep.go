package box

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

const (
	boxParent = "/var/tmp"
	// boxPrefix starts the name of a box's directory and cgroups; the name
	// goes on with the PID of the test binary that made it.
	boxPrefix = "hyper2kvm-box-"
)

var sweepOnce sync.Once

// sweepStale removes what boxes of test binaries that died without
// cleaning up (killed by a timeout, say) left behind: empty directories in
// /var/tmp and empty cgroups. A leftover is touched only when the test
// binary named in it is gone and no process mentions it (its namespace
// holder or nspawn would), and only with rmdir, which fails on anything
// still in use.
func sweepStale() {
	users := cmdlines()
	stale := func(name string) bool {
		rest, ok := strings.CutPrefix(name, boxPrefix)
		if !ok {
			return false
		}
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil || pid == os.Getpid() {
			return false
		}
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
			return false
		}
		return !bytes.Contains(users, []byte(name))
	}
	dirs, _ := filepath.Glob(filepath.Join(boxParent, boxPrefix+"*"))
	for _, d := range dirs {
		if stale(filepath.Base(d)) {
			_ = syscall.Rmdir(d)
		}
	}
	cgs, _ := filepath.Glob("/sys/fs/cgroup/*/" + boxPrefix + "*")
	more, _ := filepath.Glob("/sys/fs/cgroup/*/*/*/" + boxPrefix + "*")
	for _, cg := range append(cgs, more...) {
		if stale(filepath.Base(cg)) {
			removeCgroup(cg)
		}
	}
}

// cmdlines is every process's command line, for looking names up in.
func cmdlines() []byte {
	var all []byte
	files, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range files {
		data, _ := os.ReadFile(f)
		all = append(all, data...)
		all = append(all, '\n')
	}
	return all
}

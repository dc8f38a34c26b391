package engine

import (
	"runtime"
	"testing"
)

// diskParallelism: the option when set, else one per CPU the process may
// use (GOMAXPROCS follows the job unit's CPUQuota), never more than the
// disks to write, never less than one.
func TestDiskParallelism(t *testing.T) {
	cpus := runtime.GOMAXPROCS(0)
	for _, c := range []struct {
		option, disks, want int
	}{
		{0, 1, 1},
		{0, 64, cpus},
		{0, 2, min(cpus, 2)},
		{3, 8, 3},
		{3, 2, 2},
		{1, 3, 1},
		{-1, 3, min(cpus, 3)},
		{4, 0, 1},
	} {
		r := &runner{o: Options{DiskParallelism: c.option}}
		if got := r.diskParallelism(c.disks); got != c.want {
			t.Errorf("option %d, %d disks: %d at once, want %d", c.option, c.disks, got, c.want)
		}
	}
}

package engine

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/hyper2kvm/hyper2kvm/agent/bounded"
)

// diskParallelism is how many disks CONVERT writes at once: the option,
// else one per CPU this process may use (GOMAXPROCS follows the cgroup's
// CPU quota, so a job unit with CPUQuota=200% gets 2), never more than
// there are disks to write.
func (r *runner) diskParallelism(disks int) int {
	n := r.o.DiskParallelism
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	return max(1, min(n, disks))
}

// inFlight is the progress of the disks being converted at once, told as
// one job's progress: the bytes done of all of them, and each one in
// flight by name with its own percentage.
type inFlight struct {
	mu    sync.Mutex
	r     *runner
	total int64
	size  []int64 // virtual size of each disk to convert
	pct   []int   // its progress, -1 before it starts
	names []string
	done  []bool
}

func (p *inFlight) update(i, pct int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pct[i] = pct
	var cur int64
	var parts []string
	for j := range p.pct {
		switch {
		case p.done[j]:
			cur += p.size[j]
		case p.pct[j] >= 0:
			cur += p.size[j] * int64(p.pct[j]) / 100
			parts = append(parts, fmt.Sprintf("%s %d%%", p.names[j], p.pct[j]))
		}
	}
	text := strings.Join(parts, ", ")
	if len(parts) == 1 {
		text = parts[0][:strings.LastIndexByte(parts[0], ' ')] // one disk: its name, as before
	}
	p.r.progress("convert", int(cur*100/max(p.total, 1)), cur, p.total, text)
}

func (p *inFlight) finish(i int) {
	p.mu.Lock()
	p.done[i] = true
	p.mu.Unlock()
}

// convertDisks converts every disk with an output, up to diskParallelism
// at once, in the order of the VM's disks. The first failure cancels the
// conversions still running (each removes its .part) and is the error
// returned; the others' "cancelled" are not. The results list the disks
// converted, in the VM's order.
func (r *runner) convertDisks() ([]convertResult, error) {
	var todo []*disk
	for _, d := range r.disks {
		if d.output != "" {
			todo = append(todo, d)
		}
	}
	if len(todo) == 0 {
		return nil, nil
	}
	p := &inFlight{r: r, size: make([]int64, len(todo)), pct: make([]int, len(todo)),
		names: make([]string, len(todo)), done: make([]bool, len(todo))}
	for i, d := range todo {
		p.size[i], p.pct[i], p.names[i] = d.info.VirtualSize, -1, filepath.Base(d.output)
		p.total += d.info.VirtualSize
	}
	ctx, cancel := context.WithCancelCause(r.ctx)
	defer cancel(nil)
	results := make([]*convertResult, len(todo))
	warnings := make([][]string, len(todo))
	errs := make([]error, len(todo))
	var firstErr error
	var mu sync.Mutex
	// The disks start in the VM's order, and none after a failure.
	bounded.Each(ctx, len(todo), r.diskParallelism(len(todo)), func(i int) {
		d := todo[i]
		res, warn, err := r.convertDisk(ctx, d, func(pct int) { p.update(i, pct) })
		results[i], warnings[i], errs[i] = res, warn, err
		if err != nil {
			mu.Lock()
			if firstErr == nil && ctx.Err() == nil {
				firstErr = err
				cancel(fmt.Errorf("%w (disk %s failed)", context.Canceled, d.id))
			}
			mu.Unlock()
			return
		}
		d.converted = true
		p.finish(i)
	})
	var out []convertResult
	for i := range todo {
		r.rep.Warnings = append(r.rep.Warnings, warnings[i]...)
		if results[i] != nil {
			out = append(out, *results[i])
		}
	}
	if firstErr != nil {
		return out, firstErr
	}
	// Cancelled from outside: the first disk's own error says so (and how
	// qemu-img ended), or the job's context when no disk had started.
	for _, err := range errs {
		if err != nil {
			return out, err
		}
	}
	if err := r.ctx.Err(); err != nil {
		return out, context.Cause(r.ctx)
	}
	return out, nil
}

// Package bounded runs numbered tasks a few at a time, in order: a VM's
// disks in CONVERT (limits.disk_parallelism) and a batch's VMs in
// `hyper2kvmd convert -j N` (leaf).
package bounded

import (
	"context"
	"sync"
)

// Each calls fn(i) for i = 0 .. n-1, each in its own goroutine, at most
// limit (at least 1) at once. The calls start in order, each once a slot
// is free, so the first tasks are the first to run; none starts after
// ctx is done (cancelling ctx is how the first failure stops the rest).
// Each returns when every call it started has returned; fn sees ctx's
// end through whatever context it closes over.
func Each(ctx context.Context, n, limit int, fn func(i int)) {
	slots := make(chan struct{}, max(1, limit))
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := range n {
		// A slot first, then the check: a task never starts after ctx
		// is done, even when a slot was free at the same moment.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			fn(i)
		}()
	}
}

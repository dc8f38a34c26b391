package bounded

import (
	"context"
	"slices"
	"sync"
	"testing"
)

func TestEach(t *testing.T) {
	for _, tc := range []struct {
		name     string
		n, limit int
		wantMax  int
	}{
		{"one at a time", 5, 1, 1},
		{"two at a time", 6, 2, 2},
		{"limit above n", 3, 8, 3},
		{"limit 0 means 1", 4, 0, 1},
		{"nothing to do", 0, 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			running, peak := 0, 0
			var started []int
			// Every call waits until the limit's worth of calls (or all of
			// them) are running, so a limit that is not kept shows as a
			// peak above it, and one too tight as a hang (the test's
			// timeout), not as a timing.
			want := min(tc.wantMax, tc.n)
			gate := make(chan struct{})
			var once sync.Once
			Each(context.Background(), tc.n, tc.limit, func(i int) {
				mu.Lock()
				started = append(started, i)
				running++
				peak = max(peak, running)
				if running == want {
					once.Do(func() { close(gate) })
				}
				mu.Unlock()
				<-gate
				mu.Lock()
				running--
				mu.Unlock()
			})
			if peak != tc.wantMax {
				t.Errorf("peak %d at once, want %d", peak, tc.wantMax)
			}
			if len(started) != tc.n {
				t.Errorf("%d calls, want %d", len(started), tc.n)
			}
			if tc.limit <= 1 && !slices.IsSorted(started) {
				t.Errorf("started %v, want in order", started)
			}
		})
	}
}

func TestEachStartsNoneAfterCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var ran []int
	Each(ctx, 10, 1, func(i int) {
		mu.Lock()
		ran = append(ran, i)
		mu.Unlock()
		if i == 2 {
			cancel()
		}
	})
	if !slices.Equal(ran, []int{0, 1, 2}) {
		t.Errorf("ran %v, want [0 1 2]: nothing after the cancel", ran)
	}
	cancel()
	Each(ctx, 3, 2, func(i int) { t.Errorf("task %d started on a done context", i) })
}

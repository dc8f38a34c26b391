package engine

import (
	"testing"
	"time"
)

func TestRateETA(t *testing.T) {
	for _, tc := range []struct {
		done, total int64
		elapsed     time.Duration
		want        string
	}{
		{0, 100 << 20, 2 * time.Second, ""},
		{10 << 20, 100 << 20, 500 * time.Millisecond, ""},
		{20 << 20, 100 << 20, 2 * time.Second, ", 10 MiB/s, at most 8s left"},
		{100 << 20, 100 << 20, 10 * time.Second, ", 10 MiB/s"},
	} {
		if got := rateETA(tc.done, tc.total, tc.elapsed); got != tc.want {
			t.Errorf("rateETA(%d, %d, %v) = %q, want %q", tc.done, tc.total, tc.elapsed, got, tc.want)
		}
	}
}

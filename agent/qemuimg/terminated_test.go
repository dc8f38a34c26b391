package qemuimg

import (
	"errors"
	"os/exec"
	"testing"
)

// TestTerminated tells a process that a signal from outside ended (the
// unit or the machine stopping) from one that failed or was killed.
func TestTerminated(t *testing.T) {
	for _, tc := range []struct {
		script string
		want   bool
	}{
		{"kill -TERM $$", true},
		{"kill -INT $$", true},
		{"kill -HUP $$", true},
		{"kill -KILL $$", false}, // the OOM killer, or a stop that timed out: not ours to call an interruption
		{"exit 1", false},
		{"exit 0", false},
	} {
		err := exec.Command("sh", "-c", tc.script).Run()
		got := terminated(err)
		if (got != nil) != tc.want || got != nil && !errors.Is(got, ErrTerminated) {
			t.Errorf("%q: terminated(%v) = %v, want ErrTerminated %v", tc.script, err, got, tc.want)
		}
	}
}

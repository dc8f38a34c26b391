package agent

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/queue"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// A worker that cannot clean up after itself (killed, or its unit stopped
// by systemd) leaves FIX's overlay in the job's work directory: the agent
// removes it when the job settles and before the job runs again.
func TestScratchOfAKilledWorkerIsRemoved(t *testing.T) {
	for _, tc := range []struct {
		name, result string
		rep          *report.Report
		again        bool // run again (interrupted), else failed
	}{
		{"killed", "signal", nil, false},
		{"stopped by systemd", "exit-code", interruptedReport("fix"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.start()
			e.drop("vm.json", e.manifest("vm", ""))
			unit := e.nextStart()
			id := e.jobID("vm")
			e.a.mu.Lock()
			work := filepath.Join(e.a.st.Jobs[id].JobDir, "work")
			e.a.mu.Unlock()
			overlay := filepath.Join(work, ".work-1", "disk1-overlay.qcow2")
			if err := os.MkdirAll(filepath.Dir(overlay), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(overlay, []byte("QFI\xfb"), 0o600); err != nil {
				t.Fatal(err)
			}
			e.units.finish(t, unit, tc.result, tc.rep)
			if tc.again {
				e.nextStart()
			} else {
				e.waitSettled(queue.Failed, "vm.json")
			}
			if _, err := os.Stat(work); !os.IsNotExist(err) {
				t.Errorf("the work directory of the cut-short run is left (%v): %s", err, overlay)
			}
		})
	}
}

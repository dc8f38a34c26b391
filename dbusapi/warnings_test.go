package dbusapi

import (
	"reflect"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// TestWarningsProperty: a job's warnings travel as the Warnings property
// (as) and read back; none is an empty array, read back as none.
func TestWarningsProperty(t *testing.T) {
	for _, w := range [][]string{nil, {"no Linux guest found", "zstd fell back to zlib"}} {
		j := jobs.Job{ID: "w", State: jobs.Completed, Warnings: w}
		p := jobProps(j)
		if sig := p["Warnings"].Signature().String(); sig != "as" {
			t.Fatalf("Warnings is %s, want as", sig)
		}
		got, err := jobFromProps(p)
		if err != nil || !reflect.DeepEqual(got.Warnings, w) {
			t.Errorf("read back %q (%v), want %q", got.Warnings, err, w)
		}
	}
}

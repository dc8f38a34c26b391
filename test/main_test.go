package test

import (
	"github.com/hyper2kvm/hyper2kvm/agent/sandbox"
	"os"
	"path/filepath"
	"testing"
)

// TestMain removes what the tests built once for the whole run.
func TestMain(m *testing.M) {
	if sandbox.IsChild() { // the native backend runs guest programs through this binary
		os.Exit(sandbox.Main(os.Args[1:]))
	}
	code := m.Run()
	if testAgentBin.path != "" {
		os.RemoveAll(filepath.Dir(testAgentBin.path))
	}
	os.Exit(code)
}

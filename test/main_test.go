package test

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMain removes what the tests built once for the whole run.
func TestMain(m *testing.M) {
	code := m.Run()
	if testAgentBin.path != "" {
		os.RemoveAll(filepath.Dir(testAgentBin.path))
	}
	os.Exit(code)
}

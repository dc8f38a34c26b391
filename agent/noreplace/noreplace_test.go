package noreplace_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/noreplace"
)

func TestRename(t *testing.T) {
	for _, tt := range []struct {
		name     string
		existing bool // something is at the new name already
		gone     bool // the old name is missing
		want     error
	}{
		{"free name", false, false, nil},
		{"taken name is kept", true, false, fs.ErrExist},
		{"source gone", false, true, fs.ErrNotExist},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
			if !tt.gone {
				os.WriteFile(a, []byte("a"), 0o644)
			}
			if tt.existing {
				os.WriteFile(b, []byte("b"), 0o644)
			}
			err := noreplace.Rename(a, b)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Rename = %v, want %v", err, tt.want)
			}
			got, _ := os.ReadFile(b)
			switch {
			case tt.existing && string(got) != "b":
				t.Errorf("the existing file became %q", got)
			case tt.want == nil && string(got) != "a":
				t.Errorf("renamed file holds %q", got)
			}
			if _, err := os.Lstat(a); tt.want == nil && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("old name still there after a rename: %v", err)
			}
		})
	}
}

package fix

import (
	"context"
	"io/fs"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/guest"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// nodevSession is a guest whose files are mounted nodev: opening a device
// node fails "permission denied", as the native backend's mount does.
type nodevSession struct {
	guest.Session // nil: any other method panics, which the test would show
	files         map[string]string
	modes         map[string]fs.FileMode
	written       map[string]string
}

func (s *nodevSession) Lstat(ctx context.Context, p string) (guest.Entry, error) {
	if m, ok := s.modes[p]; ok {
		return guest.Entry{Name: p, Mode: m}, nil
	}
	if _, ok := s.files[p]; ok {
		return guest.Entry{Name: p, Mode: 0o644}, nil
	}
	return guest.Entry{}, &fs.PathError{Op: "lstat", Path: p, Err: fs.ErrNotExist}
}

func (s *nodevSession) ReadFile(ctx context.Context, p string) ([]byte, error) {
	if _, ok := s.modes[p]; ok {
		return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrPermission}
	}
	if c, ok := s.files[p]; ok {
		return []byte(c), nil
	}
	return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
}

func (s *nodevSession) WriteFile(ctx context.Context, p string, data []byte, perm fs.FileMode) error {
	s.written[p] = string(data)
	return nil
}

func TestEditLeavesNonRegularFilesAlone(t *testing.T) {
	tests := []struct {
		name string
		mode fs.FileMode
		note string
	}{
		{"char device", fs.ModeDevice | fs.ModeCharDevice | 0o600, "character device"},
		{"block device", fs.ModeDevice | 0o600, "block device"},
		{"fifo", fs.ModeNamedPipe | 0o600, "FIFO"},
		{"symlink to a device", fs.ModeSymlink | 0o777, "symbolic link"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &nodevSession{files: map[string]string{"/etc/default/grub": "GRUB_CMDLINE_LINUX=\"root=/dev/sda1\"\n"},
				modes: map[string]fs.FileMode{"/etc/kernel/cmdline": tt.mode}, written: map[string]string{}}
			f := &fixer{s: s, g: guestDisk}
			for _, p := range []string{"/etc/default/grub", "/etc/kernel/cmdline", "/etc/missing"} {
				if err := f.edit(context.Background(), "grub", p, f.fixRoot); err != nil {
					t.Fatalf("edit %s: %v", p, err)
				}
			}
			if _, ok := s.written["/etc/kernel/cmdline"]; ok {
				t.Error("wrote the device node")
			}
			if !strings.Contains(s.written["/etc/default/grub"], "root=UUID=1111-aaaa") {
				t.Errorf("regular file not fixed: %q", s.written["/etc/default/grub"])
			}
			if !hasNote(f.changes, "/etc/kernel/cmdline", "warning: left unchanged: ", tt.note) {
				t.Errorf("changes %+v: no warning for /etc/kernel/cmdline", f.changes)
			}
		})
	}
}

func hasNote(cs []report.Change, p string, parts ...string) bool {
	for _, c := range cs {
		ok := c.File == p
		for _, s := range parts {
			ok = ok && strings.Contains(c.Note, s)
		}
		if ok {
			return true
		}
	}
	return false
}

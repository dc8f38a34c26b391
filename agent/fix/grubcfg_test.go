package fix

import (
	"context"
	"errors"
	"io/fs"
	"path"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/guest"
)

// grubSession is a guest in memory whose grub-mkconfig writes mkconfig's
// output (or fails with fail) to the file after -o.
type grubSession struct {
	guest.Session
	backend string
	files   map[string]string
	dirs    map[string]bool
	mkcfg   string
	fail    string
	ran     [][]string
}

func (s *grubSession) Backend() string { return s.backend }

func (s *grubSession) Lstat(ctx context.Context, p string) (guest.Entry, error) {
	if _, ok := s.files[p]; ok {
		return guest.Entry{Name: path.Base(p), Mode: 0o644}, nil
	}
	if s.dirs[p] {
		return guest.Entry{Name: path.Base(p), Mode: fs.ModeDir | 0o755}, nil
	}
	return guest.Entry{}, &fs.PathError{Op: "lstat", Path: p, Err: fs.ErrNotExist}
}

func (s *grubSession) ReadFile(ctx context.Context, p string) ([]byte, error) {
	if c, ok := s.files[p]; ok {
		return []byte(c), nil
	}
	return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
}

func (s *grubSession) WriteFile(ctx context.Context, p string, data []byte, perm fs.FileMode) error {
	s.files[p] = string(data)
	return nil
}

func (s *grubSession) Remove(ctx context.Context, p string) error {
	delete(s.files, p)
	return nil
}

func (s *grubSession) ReadDir(ctx context.Context, p string) ([]guest.Entry, error) {
	var out []guest.Entry
	seen := map[string]bool{}
	for _, m := range []map[string]bool{s.dirs, keys(s.files)} {
		for q := range m {
			if path.Dir(q) == p && !seen[q] {
				seen[q] = true
				e, _ := s.Lstat(ctx, q)
				out = append(out, e)
			}
		}
	}
	if len(out) == 0 && !s.dirs[p] {
		return nil, &fs.PathError{Op: "readdir", Path: p, Err: fs.ErrNotExist}
	}
	return out, nil
}

func keys(m map[string]string) map[string]bool {
	k := map[string]bool{}
	for p := range m {
		k[p] = true
	}
	return k
}

func (s *grubSession) Run(ctx context.Context, argv ...string) ([]byte, error) {
	s.ran = append(s.ran, argv)
	if s.fail != "" {
		s.files[argv[2]] = "partial"
		return nil, errors.New(s.fail)
	}
	s.files[argv[2]] = s.mkcfg
	return []byte("done\n"), nil
}

const oldCfg = "menuentry 'Debian' {\n\tlinux /boot/vmlinuz root=/dev/sda1 ro\n}\n"

func TestRegenerateGrubCfg(t *testing.T) {
	// What grub-mkconfig writes in the appliance: its own device name for
	// the root, which the VM does not have.
	mk := "### BEGIN /etc/grub.d/10_linux ###\nmenuentry 'Debian GNU/Linux' {\n\tlinux /boot/vmlinuz root=/dev/sda1 ro console=ttyS0\n}\n"
	tests := []struct {
		name, backend, mkcfg, fail string
		esp                        string // content of EFI/debian/grub.cfg, if any
		want                       string // /boot/grub/grub.cfg afterwards
		note                       string
		runs                       int
	}{
		{name: "guestfs regenerates", backend: guest.Guestfs, mkcfg: mk,
			want: strings.ReplaceAll(mk, "/dev/sda1", "UUID=1111-aaaa"), note: "regenerated with the guest's grub-mkconfig in the appliance", runs: 1},
		{name: "native says why not", backend: guest.Native, mkcfg: mk,
			want: oldCfg, note: "note: not regenerated with the guest's grub-mkconfig: it runs grub-probe", runs: 0},
		{name: "a failed run keeps the file", backend: guest.Guestfs, fail: "grub-probe: error: failed to get canonical path of `overlay'",
			want: oldCfg, note: "warning: not regenerated with the guest's grub-mkconfig: grub-probe: error: failed to get canonical path", runs: 1},
		{name: "no boot entry keeps the file", backend: guest.Guestfs, mkcfg: "### BEGIN /etc/grub.d/00_header ###\nset timeout=5\n",
			want: oldCfg, note: "it wrote no boot entry", runs: 1},
		{name: "a whole menu on the ESP is regenerated too", backend: guest.Guestfs, mkcfg: mk,
			esp:  "menuentry 'RHEL' {\n\tlinuxefi /vmlinuz root=/dev/sda1\n}\n",
			want: strings.ReplaceAll(mk, "/dev/sda1", "UUID=1111-aaaa"), note: "regenerated", runs: 2},
		{name: "an ESP stub is left alone", backend: guest.Guestfs, mkcfg: mk,
			esp:  "search.fs_uuid 1111-aaaa root\nset prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n",
			want: strings.ReplaceAll(mk, "/dev/sda1", "UUID=1111-aaaa"), note: "regenerated", runs: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &grubSession{backend: tt.backend, mkcfg: tt.mkcfg, fail: tt.fail,
				files: map[string]string{"/boot/grub/grub.cfg": oldCfg, "/usr/sbin/grub-mkconfig": "#!/bin/sh\n"},
				dirs:  map[string]bool{"/boot/efi/EFI": true, "/boot/efi/EFI/debian": true}}
			if tt.esp != "" {
				s.files["/boot/efi/EFI/debian/grub.cfg"] = tt.esp
			}
			f := &fixer{s: s, g: guestDisk}
			if err := f.regenerateGrubCfg(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := s.files["/boot/grub/grub.cfg"]; got != tt.want {
				t.Errorf("grub.cfg:\n%s\nwant\n%s", got, tt.want)
			}
			if !hasNote(f.changes, "/boot/grub/grub.cfg", tt.note) {
				t.Errorf("no change on /boot/grub/grub.cfg noting %q: %+v", tt.note, f.changes)
			}
			if len(s.ran) != tt.runs {
				t.Errorf("ran %d times (%v), want %d", len(s.ran), s.ran, tt.runs)
			}
			for _, r := range s.ran {
				if r[0] != "/usr/sbin/grub-mkconfig" || r[1] != "-o" || !strings.HasSuffix(r[2], ".hyper2kvm-new") {
					t.Errorf("ran %v: want the guest's grub-mkconfig -o <cfg>.hyper2kvm-new", r)
				}
			}
			for p := range s.files {
				if strings.HasSuffix(p, ".hyper2kvm-new") {
					t.Errorf("left %s behind", p)
				}
			}
			if tt.esp != "" && grubStub(tt.esp) && s.files["/boot/efi/EFI/debian/grub.cfg"] != tt.esp {
				t.Error("the ESP's stub was changed")
			}
		})
	}
	// A guest without grub-mkconfig: nothing run, nothing said.
	s := &grubSession{backend: guest.Guestfs, files: map[string]string{"/boot/grub/grub.cfg": oldCfg}}
	f := &fixer{s: s, g: guestDisk}
	if err := f.regenerateGrubCfg(context.Background()); err != nil || len(s.ran) != 0 || len(f.changes) != 0 {
		t.Errorf("without grub-mkconfig: err %v, ran %v, changes %+v", err, s.ran, f.changes)
	}
}

func TestCheckRegenerated(t *testing.T) {
	boot := map[string]string{"/boot/vmlinuz-6.1.0-57": "", "/boot/vmlinuz-6.1.0-58": "", "/boot/vmlinuz-0-rescue-abc": "",
		"/boot/initrd.img-6.1.0-57": "", "/boot/initrd.img-6.1.0-58": ""}
	cmd := []string{"dracut", "--force", "--regenerate-all"}
	before := map[string]string{"/boot/initrd.img-6.1.0-57": "100", "/boot/initrd.img-6.1.0-58": "100"}
	tests := []struct {
		name      string
		rewritten []string
		err       string
		warned    []string
	}{
		{name: "none rewritten fails", err: "rewrote none of the initramfs images"},
		{name: "one of two kernels warns", rewritten: []string{"/boot/initrd.img-6.1.0-58"}, warned: []string{"/boot/vmlinuz-6.1.0-57"}},
		{name: "all rewritten", rewritten: []string{"/boot/initrd.img-6.1.0-57", "/boot/initrd.img-6.1.0-58"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &grubSession{files: boot, dirs: map[string]bool{"/boot": true}}
			f := &fixer{s: s, g: guestDisk}
			rw := map[string]bool{}
			for _, p := range tt.rewritten {
				rw[p] = true
			}
			err := f.checkRegenerated(context.Background(), cmd, before, rw)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "dracut --force --regenerate-all") {
					t.Fatalf("err %v, want one saying %q and naming the command", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var warned []string
			for _, c := range f.changes {
				if strings.HasPrefix(c.Note, "warning: no initramfs image was rewritten") {
					warned = append(warned, c.File)
				}
			}
			if strings.Join(warned, ",") != strings.Join(tt.warned, ",") {
				t.Errorf("warned for %v, want %v", warned, tt.warned)
			}
		})
	}
	// No image in /boot to begin with (BLS layouts keep it elsewhere): no failure.
	f := &fixer{s: &grubSession{files: map[string]string{}, dirs: map[string]bool{"/boot": true}}, g: guestDisk}
	if err := f.checkRegenerated(context.Background(), cmd, map[string]string{}, map[string]bool{}); err != nil {
		t.Errorf("no image before: %v", err)
	}
}

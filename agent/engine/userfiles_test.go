package engine

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestAllowed(t *testing.T) {
	const me, other, grp = 1000, 2000, 300
	groups := map[uint32]bool{100: true}
	acl := func(es ...aclEntry) []aclEntry { return es }
	tests := []struct {
		name         string
		owner, group uint32
		mode         uint32
		acl          []aclEntry
		want         uint32
		ok           bool
	}{
		{"owner reads 0600", me, grp, 0o600, nil, 4, true},
		{"owner without r", me, grp, 0o060, nil, 4, false},
		{"other on 0600", other, grp, 0o600, nil, 4, false},
		{"other on 0644", other, grp, 0o644, nil, 4, true},
		{"group member on 0640", other, 100, 0o640, nil, 4, true},
		{"non-member on 0640", other, grp, 0o640, nil, 4, false},
		{"search 0711", other, grp, 0o711, nil, 1, true},
		{"search 0700", other, grp, 0o700, nil, 1, false},
		{"acl: named user denied although other may read", other, grp, 0o604,
			acl(aclEntry{aclUserObj, 6, 0}, aclEntry{aclUser, 0, me}, aclEntry{aclGroupObj, 0, 0}, aclEntry{aclMask, 7, 0}, aclEntry{aclOther, 4, 0}), 4, false},
		{"acl: named user granted although other may not", other, grp, 0o640,
			acl(aclEntry{aclUserObj, 6, 0}, aclEntry{aclUser, 4, me}, aclEntry{aclGroupObj, 0, 0}, aclEntry{aclMask, 4, 0}, aclEntry{aclOther, 0, 0}), 4, true},
		{"acl: mask limits the named user", other, grp, 0o600,
			acl(aclEntry{aclUserObj, 6, 0}, aclEntry{aclUser, 4, me}, aclEntry{aclGroupObj, 0, 0}, aclEntry{aclMask, 0, 0}, aclEntry{aclOther, 0, 0}), 4, false},
		{"acl: a named group grants", other, grp, 0o640,
			acl(aclEntry{aclUserObj, 6, 0}, aclEntry{aclGroupObj, 0, 0}, aclEntry{aclGroup, 4, 100}, aclEntry{aclMask, 4, 0}, aclEntry{aclOther, 0, 0}), 4, true},
		{"acl: a matching group without r denies, other is not used", other, 100, 0o604,
			acl(aclEntry{aclUserObj, 6, 0}, aclEntry{aclGroupObj, 0, 0}, aclEntry{aclMask, 7, 0}, aclEntry{aclOther, 4, 0}), 4, false},
		{"acl: owner uses the owner bits", me, grp, 0o600,
			acl(aclEntry{aclUserObj, 6, 0}, aclEntry{aclUser, 0, me}, aclEntry{aclOther, 0, 0}), 4, true},
	}
	for _, tc := range tests {
		if got := allowed(me, groups, tc.owner, tc.group, tc.mode, tc.acl, tc.want); got != tc.ok {
			t.Errorf("%s: allowed = %v, want %v", tc.name, got, tc.ok)
		}
	}
}

func TestParseACL(t *testing.T) {
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range []aclEntry{{aclUserObj, 6, 0xffffffff}, {aclUser, 4, 1000}, {aclOther, 0, 0xffffffff}} {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	es, err := parseACL(b)
	if err != nil || len(es) != 3 || es[1] != (aclEntry{aclUser, 4, 1000}) {
		t.Fatalf("parseACL = %v, %v", es, err)
	}
	for _, bad := range [][]byte{nil, {1, 0, 0, 0}, b[:len(b)-1]} {
		if _, err := parseACL(bad); err == nil {
			t.Errorf("parseACL(%x) accepted", bad)
		}
	}
}

// TestUserFilesOpen walks real paths for a uid that owns none of them (the
// test's files are the test user's), so it needs no root.
func TestUserFilesOpen(t *testing.T) {
	const uid = 4242421 // owns nothing, in no group
	if os.Getuid() == uid {
		t.Skip("running as the test uid")
	}
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		// t.TempDir makes 0700 directories; the user must be able to enter.
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"open", "closed"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, p), []byte("data "+p), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(filepath.Join(dir, p), mode)
	}
	write("open/readable.raw", 0o644)
	write("open/private.raw", 0o600)
	write("closed/secret.raw", 0o644)
	if err := os.Chmod(filepath.Join(dir, "closed"), 0o700); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(filepath.Join(dir, "closed"), filepath.Join(dir, "open", "sub")))
	must(os.Symlink(filepath.Join(dir, "open", "readable.raw"), filepath.Join(dir, "open", "link.raw")))
	must(syscall.Mkfifo(filepath.Join(dir, "open", "fifo.raw"), 0o644))

	u, err := newUserFiles(uid, filepath.Join(dir, "closed", "secret.raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer u.close()
	tests := []struct {
		path, err string
	}{
		{"open/readable.raw", ""},
		{"open/private.raw", "cannot read"},
		{"closed/secret.raw", ""}, // the trusted path
		{"open/sub/secret.raw", "is a symbolic link"},
		{"open/link.raw", "is a symbolic link"},
		{"open/fifo.raw", "not a regular file"},
		{"open/missing.raw", "no such file"},
		{"open/readable.raw/x", "not a directory"},
	}
	for _, tc := range tests {
		p := filepath.Join(dir, tc.path)
		got, err := u.open(p)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.path, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want one saying %q", tc.path, err, tc.err)
		case err == nil:
			data, rerr := os.ReadFile(got)
			if rerr != nil || string(data) != "data "+tc.path {
				t.Errorf("%s: reading %s gave %q, %v", tc.path, got, data, rerr)
			}
			if !strings.HasPrefix(got, "/proc/") || u.explain(os.ErrClosed).Error() == "" {
				t.Errorf("%s: opened as %s", tc.path, got)
			}
		}
	}
	// Another user could not even have looked into closed/.
	u2, _ := newUserFiles(uid, "")
	defer u2.close()
	if _, err := u2.open(filepath.Join(dir, "closed", "secret.raw")); err == nil || !strings.Contains(err.Error(), "cannot enter") {
		t.Errorf("closed/secret.raw without trust: %v", err)
	}
}

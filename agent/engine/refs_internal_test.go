package engine

import (
	"os"
	"strings"
	"testing"
)

func TestResolveRef(t *testing.T) {
	allow := map[string]bool{"/host/allowed.raw": true}
	for _, tc := range []struct {
		name, relDir, want string
		ok                 bool
	}{
		{"base.raw", "/vm", "/vm/base.raw", true},
		{"sub/base.raw", "/vm", "/vm/sub/base.raw", true},
		{"/vm/base.raw", "/vm", "/vm/base.raw", true},
		{"/vm/sub/../base.raw", "/vm", "/vm/base.raw", false}, // no ".." even when it stays inside
		{"../host/secret", "/vm", "/host/secret", false},
		{"/host/secret", "/vm", "/host/secret", false},
		{"/vmx/secret", "/vm", "/vmx/secret", false}, // a sibling sharing the prefix
		{"/vm", "/vm", "/vm", false},
		{"/host/allowed.raw", "/vm", "/host/allowed.raw", true},
		{"../host/allowed.raw", "/vm", "/host/allowed.raw", true}, // listed: allowed however named
		{"base.raw", "/vm/sub", "/vm/sub/base.raw", true},         // relative to the referring image
		{"json:{\"driver\":\"file\"}", "/vm", "/vm/json:{\"driver\":\"file\"}", false},
		{"nbd://host/x", "/vm", "/vm/nbd:/host/x", false},
	} {
		got, ok := resolveRef(tc.name, tc.relDir, "/vm", allow)
		if got != tc.want || ok != tc.ok {
			t.Errorf("resolveRef(%q, %q) = %q, %v; want %q, %v", tc.name, tc.relDir, got, ok, tc.want, tc.ok)
		}
	}
}

func TestSpaceError(t *testing.T) {
	for _, tc := range []struct {
		free, need int64
		want       string
	}{
		{10 << 30, 1 << 30, ""},
		{1 << 30, 1 << 30, ""},
		{1 << 30, 3 << 30, "output filesystem /srv has 1.00 GiB free, the conversion needs about 3.00 GiB"},
		{8 << 20, 32 << 20, "output filesystem /srv has 0.01 GiB free, the conversion needs about 0.03 GiB"},
		{20 << 30, 30 << 30, "output filesystem /srv has 20.0 GiB free, the conversion needs about 30.0 GiB"},
	} {
		err := spaceError("/srv", tc.free, tc.need)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.HasPrefix(err.Error(), tc.want)) {
			t.Errorf("spaceError(%d, %d) = %v, want %q", tc.free, tc.need, err, tc.want)
		}
	}
}

func TestHumanSize(t *testing.T) {
	for n, want := range map[int64]string{512: "512 B", 16 << 40: "16 TiB", 64 << 40: "64 TiB", 3 << 29: "1.5 GiB"} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestOwnerOf(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the owners of root's outputs are root's")
	}
	member := &userFiles{check: true, uid: 1001, gid: 1001, gids: map[uint32]bool{1001: true, 995: true}}
	outsider := &userFiles{check: true, uid: 1002, gid: 1002, gids: map[uint32]bool{1002: true}}
	for _, tc := range []struct {
		name string
		u    *userFiles
		uid  int64
		gid  int
		want outputOwner
	}{
		{"root's job", &userFiles{}, 0, 995, outputOwner{uid: 0, gid: 995, file: 0o640, dir: 0o750}},
		{"root's job without the group", &userFiles{}, 0, -1, outputOwner{uid: 0, gid: -1, file: 0o640, dir: 0o750}},
		{"a member's job", member, 1001, 995, outputOwner{uid: 0, gid: 995, file: 0o640, dir: 0o750}},
		{"an outsider's job", outsider, 1002, 995, outputOwner{uid: 1002, gid: 1002, file: 0o600, dir: 0o700}},
		{"a user's job without the group", member, 1001, -1, outputOwner{uid: 1001, gid: 1001, file: 0o600, dir: 0o700}},
	} {
		if got := ownerOf(tc.u, tc.uid, tc.gid); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

package guest

import (
	"encoding/json"
	"io/fs"
	"strings"
	"testing"
)

func TestClean(t *testing.T) {
	tests := []struct {
		in, want string
		err      bool
	}{
		{"/etc/fstab", "/etc/fstab", false},
		{"etc/../../../../etc/shadow", "/etc/shadow", false},
		{"/", "/", false},
		{"", "", true},
		{"/etc/\x00x", "", true},
	}
	for _, tt := range tests {
		got, err := clean(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("clean(%q) = %q, %v", tt.in, got, err)
		}
	}
	if _, _, err := split("/"); err == nil {
		t.Error("split(/): no error")
	}
	if d, b, _ := split("/../etc/fstab"); d != "/etc" || b != "fstab" {
		t.Errorf("split: %q %q", d, b)
	}
}

func TestBlockdev(t *testing.T) {
	tests := []struct {
		img  Image
		want string
	}{
		{Image{Path: "/a,b/disk.qcow2", Format: "qcow2"},
			`{"driver":"qcow2","file":{"driver":"file","filename":"/a,b/disk.qcow2"},"node-name":"disk","read-only":true}`},
		{Image{Path: `json:{"driver":"vmdk","file":{"driver":"raw","offset":512,"file":{"driver":"file","filename":"/x.ova"}}}`, Format: "vmdk"},
			`{"driver":"vmdk","file":{"driver":"raw","file":{"driver":"file","filename":"/x.ova"},"offset":512},"node-name":"disk","read-only":true}`},
	}
	for _, tt := range tests {
		got, err := blockdev(tt.img, true)
		if err != nil {
			t.Fatal(err)
		}
		var a, b any
		json.Unmarshal([]byte(got), &a)
		json.Unmarshal([]byte(tt.want), &b)
		ga, _ := json.Marshal(a)
		gb, _ := json.Marshal(b)
		if string(ga) != string(gb) {
			t.Errorf("blockdev = %s, want %s", got, tt.want)
		}
	}
	if _, err := blockdev(Image{Path: "json:{bad", Format: "raw"}, true); err == nil {
		t.Error("bad json: no error")
	}
}

func TestParseStatns(t *testing.T) {
	out := "[0] = {\n  st_dev: 2049\n  st_ino: 11\n  st_mode: 41471\n  st_size: 9\n}\n[1] = {\n  st_dev: 2049\n  st_ino: 12\n  st_mode: 33188\n  st_size: 42\n}\n"
	sts := parseStatns([]byte(out))
	if len(sts) != 2 {
		t.Fatalf("got %d stats", len(sts))
	}
	if e := statEntry("l", sts[0]); e.Mode&fs.ModeSymlink == 0 || e.Size != 9 {
		t.Errorf("symlink entry %+v", e)
	}
	if e := statEntry("f", sts[1]); !e.Mode.IsRegular() || e.Mode.Perm() != 0o644 || e.Size != 42 {
		t.Errorf("file entry %+v", e)
	}
}

func TestCheckOptions(t *testing.T) {
	for _, tt := range []struct {
		o  string
		ok bool
	}{
		{"", true}, {"subvol=@", true}, {"subvolid=5", true}, {"subvol=@,subvolid=256", true},
		{"subvol=", false}, {"exec", false}, {"subvol=@,suid", false}, {"dev", false}, {"subvol=a'b", false},
	} {
		if err := CheckOptions(tt.o); (err == nil) != tt.ok {
			t.Errorf("CheckOptions(%q) = %v, want ok %v", tt.o, err, tt.ok)
		}
	}
}

func TestApplianceDeviceNames(t *testing.T) {
	for _, tt := range []struct {
		dev    string
		md, lv bool
	}{
		{"/dev/md127", true, false},
		{"/dev/md0", true, false},
		{"/dev/rhel/root", false, true},
		{"/dev/md", false, false},
		{"/dev/md1;reboot", false, false},
		{"/dev/sda1", false, false},
		{"/dev/../etc", false, false},
	} {
		if got := mdDevice.MatchString(tt.dev); got != tt.md {
			t.Errorf("mdDevice(%q) = %v", tt.dev, got)
		}
		if got := lvDevice.MatchString(tt.dev) && !strings.Contains(tt.dev, "/."); got != tt.lv {
			t.Errorf("lvDevice(%q) = %v", tt.dev, got)
		}
	}
}

func TestMDUUID(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		// What guestfish md-detail prints for a 1.2 mirror.
		{"level: raid1\ndevices: 2\nmetadata: 1.2\nuuid: 424de242:50262d4e:C1BD818B:421e5150\ndevname: md0\nname: (none):md0\n", "424de24250262d4ec1bd818b421e5150"},
		{"level: raid1\nuuid: 424de242:50262d4e\n", ""},
		{"name: uuid: 424de242:50262d4e:c1bd818b:421e5150\n", ""},
		{"", ""},
	} {
		if got := mdUUID([]byte(c.in)); got != c.want {
			t.Errorf("mdUUID(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

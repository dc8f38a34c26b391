package inspect

import (
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

func TestResolve(t *testing.T) {
	g := &report.Guest{Partitions: []report.Partition{
		{Number: 1, UUID: "AbCd-1", PartUUID: "0badcafe-01", Label: "root"},
		{Number: 2, PartLabel: "swap"},
	}}
	tests := []struct {
		dev  string
		want int // 0: not found
	}{
		{"/dev/sda1", 1}, {"/dev/hda2", 2}, {"/dev/vda1", 1}, {"/dev/xvda2", 2}, {"/dev/sdb1", 0},
		{"UUID=abcd-1", 1}, {`UUID="AbCd-1"`, 1}, {"PARTUUID=0badcafe-01", 1}, {"LABEL=root", 1},
		{"PARTLABEL=swap", 2}, {"/dev/disk/by-uuid/AbCd-1", 1}, {"/dev/disk/by-label/root", 1},
		{"/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0-part2", 2}, {"/dev/disk/by-id/scsi-36000c29-part1", 1},
		{"/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0", 0}, {"/dev/sda1x", 0}, {"proc", 0}, {"/dev/mapper/vg-root", 0},
	}
	for _, tt := range tests {
		p, ok := Resolve(g, tt.dev)
		if got := map[bool]int{true: p.Number, false: 0}[ok]; got != tt.want {
			t.Errorf("Resolve(%q) = %d, want %d", tt.dev, got, tt.want)
		}
	}
}

func TestParseTab(t *testing.T) {
	got := ParseTab([]byte("# c\n\n/dev/sda1 / ext4 defaults 0 1\nUUID=x\tnone swap sw\nbad\n"), 2)
	if len(got) != 2 || got[0] != (report.MountEntry{Device: "/dev/sda1", MountPoint: "/", FSType: "ext4"}) || got[1].FSType != "swap" {
		t.Errorf("got %+v", got)
	}
}

func TestOSRelease(t *testing.T) {
	kv := parseOSRelease([]byte("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID='12'\n# x=y\n"))
	if kv["ID"] != "debian" || kv["VERSION_ID"] != "12" || kv["PRETTY_NAME"] != "Debian GNU/Linux 12 (bookworm)" || kv["# x"] != "" {
		t.Errorf("got %v", kv)
	}
}

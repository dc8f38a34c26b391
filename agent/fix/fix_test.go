package fix

import (
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

var guestDisk = &report.Guest{Partitions: []report.Partition{
	{Number: 1, UUID: "1111-aaaa", PartUUID: "abcd0001-01", Label: "root", FSType: "ext4"},
	{Number: 2, PartUUID: "abcd0001-02", FSType: "swap"},
	{Number: 3, Label: "data", FSType: "xfs"},
}}

func TestRewriteTab(t *testing.T) {
	f := &fixer{g: guestDisk}
	in := "# comment /dev/sda1\n/dev/sda1\t/\text4 defaults 0 1\n/dev/sda2 none swap sw 0 0\n" +
		"/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0-part3 /data xfs defaults 0 2\n" +
		"/dev/sdb1 /other ext4 defaults 0 2\nproc /proc proc defaults 0 0\nUUID=1111-aaaa /x ext4 defaults 0 0\n"
	tests := []struct{ mode, want string }{
		{"stabilize-all", "# comment /dev/sda1\nUUID=1111-aaaa\t/\text4 defaults 0 1\nPARTUUID=abcd0001-02 none swap sw 0 0\n" +
			"LABEL=data /data xfs defaults 0 2\n" +
			"/dev/sdb1 /other ext4 defaults 0 2\nproc /proc proc defaults 0 0\nUUID=1111-aaaa /x ext4 defaults 0 0\n"},
		{"bypath-only", "# comment /dev/sda1\n/dev/sda1\t/\text4 defaults 0 1\n/dev/sda2 none swap sw 0 0\n" +
			"LABEL=data /data xfs defaults 0 2\n" +
			"/dev/sdb1 /other ext4 defaults 0 2\nproc /proc proc defaults 0 0\nUUID=1111-aaaa /x ext4 defaults 0 0\n"},
		{"noop", in},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			if got := f.rewriteTab(in, 0, tt.mode); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
	two := &fixer{g: &report.Guest{Partitions: append(append([]report.Partition{}, guestDisk.Partitions...),
		report.Partition{Disk: 1, Number: 1, UUID: "2222-bbbb", FSType: "ext4"})}}
	for _, tt := range []struct{ in, want string }{
		{"/dev/sdb1 /data ext4 defaults 0 2\n", "UUID=2222-bbbb /data ext4 defaults 0 2\n"},
		{"/dev/sdc1 /gone ext4 defaults 0 2\n", "/dev/sdc1 /gone ext4 defaults 0 2\n"},
		{"/dev/mapper/rhel-root / xfs defaults 0 0\n/dev/rhel/home /home xfs defaults 0 0\n", "/dev/mapper/rhel-root / xfs defaults 0 0\n/dev/rhel/home /home xfs defaults 0 0\n"},
	} {
		if got := two.rewriteTab(tt.in, 0, "stabilize-all"); got != tt.want {
			t.Errorf("two disks: got %q, want %q", got, tt.want)
		}
	}
	// LVs found by INSPECT keep their /dev/VG/LV and /dev/mapper names.
	two.g.Partitions = append(two.g.Partitions,
		report.Partition{Type: "lvm-lv", LV: "rhel/root", Device: "/dev/mapper/rhel-root", UUID: "3333-cccc", FSType: "xfs"},
		report.Partition{Type: "lvm-lv", LV: "rhel/home", Device: "/dev/mapper/rhel-home", UUID: "4444-dddd", FSType: "xfs"})
	for _, tt := range []struct{ in, want string }{
		{"/dev/mapper/rhel-root / xfs defaults 0 0\n/dev/rhel/home /home xfs defaults 0 0\n", "/dev/mapper/rhel-root / xfs defaults 0 0\n/dev/rhel/home /home xfs defaults 0 0\n"},
		{"/dev/sda1 /boot ext4 defaults 0 0\n", "UUID=1111-aaaa /boot ext4 defaults 0 0\n"},
	} {
		if got := two.rewriteTab(tt.in, 0, "stabilize-all"); got != tt.want {
			t.Errorf("two disks: got %q, want %q", got, tt.want)
		}
	}
	two.g.Partitions = append(two.g.Partitions, report.Partition{Disk: 0, Number: 5, UUID: "5555-swap", FSType: "swap"})
	if got := two.fixRoot("root=/dev/mapper/rhel-root resume=/dev/sda5 ro"); got != "root=/dev/mapper/rhel-root resume=UUID=5555-swap ro" {
		t.Errorf("resume=: %q", got)
	}
	for _, in := range []string{"root=/dev/rhel/root ro", "root=/dev/mapper/rhel-root ro"} {
		if got := two.fixRoot(in); got != in {
			t.Errorf("fixRoot(%q) = %q: an LV name is stable", in, got)
		}
	}
	crypt := "cryptdata /dev/sda3 none luks\n"
	if got := f.rewriteTab(crypt, 1, "stabilize-all"); got != "cryptdata LABEL=data none luks\n" {
		t.Errorf("crypttab: %q", got)
	}
}

func TestFixRoot(t *testing.T) {
	f := &fixer{g: guestDisk}
	tests := []struct{ in, want string }{
		{"\tlinux /boot/vmlinuz root=/dev/sda1 ro quiet", "\tlinux /boot/vmlinuz root=UUID=1111-aaaa ro quiet"},
		{`GRUB_CMDLINE_LINUX="root=/dev/sda1 console=ttyS0"`, `GRUB_CMDLINE_LINUX="root=UUID=1111-aaaa console=ttyS0"`},
		{"options root=PARTUUID=abcd0001-01 rw", "options root=UUID=1111-aaaa rw"},
		{"root=/dev/mapper/vg-root ro", "root=/dev/mapper/vg-root ro"},
		{"root=/dev/sdb1 ro", "root=/dev/sdb1 ro"},
		{"search --set=root --fs-uuid x", "search --set=root --fs-uuid x"},
		{`GRUB_CMDLINE_LINUX="root=/dev/sda1 resume=/dev/sda2"`, `GRUB_CMDLINE_LINUX="root=UUID=1111-aaaa resume=/dev/sda2"`}, // swap without UUID: kept
		{"options root=/dev/sda1 resume=/dev/sda3 ro", "options root=UUID=1111-aaaa resume=/dev/sda3 ro"},                     // xfs label only: kept
		{"resume=/dev/mapper/vg-swap", "resume=/dev/mapper/vg-swap"},
	}
	for _, tt := range tests {
		if got := f.fixRoot(tt.in); got != tt.want {
			t.Errorf("fixRoot(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	// A btrfs root in subvolume "@".
	bt := &fixer{g: &report.Guest{RootSubvol: "@", Partitions: guestDisk.Partitions}}
	for _, tt := range []struct{ in, want string }{
		{"linux /@/boot/vmlinuz root=/dev/sda1 ro rootflags=subvol=@ quiet", "linux /@/boot/vmlinuz root=UUID=1111-aaaa ro rootflags=subvol=@ quiet"},
		{"linux /@/boot/vmlinuz root=/dev/sda1 ro\n\tinitrd /x", "linux /@/boot/vmlinuz root=UUID=1111-aaaa rootflags=subvol=@ ro\n\tinitrd /x"},
		{`GRUB_CMDLINE_LINUX="root=/dev/sda1"`, `GRUB_CMDLINE_LINUX="root=UUID=1111-aaaa rootflags=subvol=@"`},
		{"options root=UUID=1111-aaaa ro", "options root=UUID=1111-aaaa ro"}, // stable already: untouched
	} {
		if got := bt.fixRoot(tt.in); got != tt.want {
			t.Errorf("btrfs fixRoot(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestNetworkText(t *testing.T) {
	tests := []struct {
		name string
		fn   func(string) string
		in   string
		want string
	}{
		{"ifupdown", fixIfupdown, "auto ens192\niface ens192 inet dhcp\n    hwaddress ether 00:50:56:aa:bb:cc\n", "auto ens192\niface ens192 inet dhcp\n"},
		{"netplan", fixNetplan, "network:\n  ethernets:\n    ens192:\n      match:\n        macaddress: 00:50:56:aa:bb:cc\n      set-name: ens192\n      dhcp4: true\n",
			"network:\n  ethernets:\n    ens192:\n      dhcp4: true\n"},
		{"netplan-match-driver", fixNetplan, "    e0:\n      match:\n        driver: vmxnet3\n        macaddress: 00:50:56:aa:bb:cc\n",
			"    e0:\n      match:\n        driver: virtio_net\n"},
		{"netplan-set-name-before-match", fixNetplan, "  ethernets:\n    ens160:\n      set-name: ens160\n      match:\n        macaddress: 00:50:56:aa:bb:cc\n      addresses: [10.0.0.5/24]\n",
			"  ethernets:\n    ens160:\n      addresses: [10.0.0.5/24]\n"},
		{"netplan-id-differs", fixNetplan, "  ethernets:\n    lan:\n      match:\n        macaddress: \"00:50:56:aa:bb:cc\"\n      set-name: ens192\n      addresses:\n        - 10.0.0.5/24\n",
			"  ethernets:\n    lan:\n      match:\n        name: ens192\n      addresses:\n        - 10.0.0.5/24\n"},
		{"netplan-custom-name", fixNetplan, "  ethernets:\n    lan0:\n      match:\n        macaddress: 00:50:56:aa:bb:cc\n      set-name: lan0\n      dhcp4: true\n",
			"  ethernets:\n    lan0:\n      match:\n        driver: virtio_net\n      set-name: lan0\n      dhcp4: true\n"},
		{"netplan-two-nics", fixNetplan, "  ethernets:\n    ens160:\n      match:\n        macaddress: 00:50:56:aa:bb:01\n      set-name: ens160\n      addresses: [10.0.0.5/24]\n" +
			"    ens192:\n      set-name: ens192\n      match:\n        macaddress: 00:50:56:aa:bb:02\n      addresses: [10.1.0.5/24]\n",
			"  ethernets:\n    ens160:\n      addresses: [10.0.0.5/24]\n    ens192:\n      addresses: [10.1.0.5/24]\n"},
		{"netplan-no-mac", fixNetplan, "  ethernets:\n    e0:\n      match:\n        name: en*\n      dhcp4: true\n", "  ethernets:\n    e0:\n      match:\n        name: en*\n      dhcp4: true\n"},
		{"keyfile", fixKeyfile, "[ethernet]\nmac-address=00:50:56:AA:BB:CC\n[ipv4]\nmethod=auto\n", "[ethernet]\n[ipv4]\nmethod=auto\n"},
		{"ifcfg", fixIfcfg, "DEVICE=ens192\nHWADDR=00:50:56:aa:bb:cc\nBOOTPROTO=dhcp\n", "DEVICE=ens192\nBOOTPROTO=dhcp\n"},
		{"networkd", fixNetworkd, "[Match]\nMACAddress=00:50:56:aa:bb:cc\n\n[Network]\nDHCP=yes\n", "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n"},
	}
	for _, tt := range tests {
		if got := tt.fn(tt.in); got != tt.want {
			t.Errorf("%s: got\n%q\nwant\n%q", tt.name, got, tt.want)
		}
	}
}

func TestAddModules(t *testing.T) {
	if got := addModules("# x\nvirtio-blk\nahci"); got != "# x\nvirtio-blk\nahci\nvirtio_scsi\nvirtio_net\nvirtio_pci\nvirtio_ring\n" {
		t.Errorf("got %q", got)
	}
	full := "virtio_blk\nvirtio_scsi\nvirtio_net\nvirtio_pci\nvirtio_ring\n"
	if got := addModules(full); got != full {
		t.Errorf("idempotence: got %q", got)
	}
}

func TestLevels(t *testing.T) {
	if nameOrder("ens224") <= nameOrder("ens192") || nameOrder("vmnic1") <= nameOrder("vmnic0") {
		t.Error("name order")
	}
	if !vmwareName.MatchString("ens192") || vmwareName.MatchString("ens3") || vmwareName.MatchString("enp1s0") {
		t.Error("vmware name pattern")
	}
}

func TestAnyEnabled(t *testing.T) {
	off, on := false, true
	allOff := manifest.Fix{Fstab: &manifest.FstabFix{Enabled: &off}, Grub: &manifest.Toggle{Enabled: &off},
		Initramfs: &manifest.InitramfsFix{Enabled: &off}, Network: &manifest.NetworkFix{Enabled: &off}}
	tools := allOff
	tools.VMwareTools = &manifest.Toggle{Enabled: &on}
	grub := allOff
	grub.Grub = nil // left out: on by default
	for _, tc := range []struct {
		name string
		spec *manifest.Fix
		want bool
	}{
		{"no spec: the defaults", nil, true},
		{"empty: the defaults", &manifest.Fix{}, true},
		{"master switch off", &manifest.Fix{Enabled: &off}, false},
		{"every fix off, fix.enabled left out", &allOff, false},
		{"every fix off but vmware_tools", &tools, true},
		{"every fix off but grub left out", &grub, true},
	} {
		if got := AnyEnabled(tc.spec); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestHostOnly(t *testing.T) {
	for _, tc := range []struct {
		name  string
		texts []string
		want  bool
	}{
		{"default", nil, false},
		{"rhel dist conf", []string{`hostonly="yes"` + "\n"}, true},
		{"unquoted", []string{"hostonly=yes\n"}, true},
		{"later file wins", []string{`hostonly="yes"`, `hostonly="no"`}, false},
		{"commented out", []string{`# hostonly="yes"`}, false},
		{"trailing comment", []string{`hostonly="yes" # as RHEL`}, true},
		{"other keys", []string{`hostonly_cmdline="yes"`, `add_drivers+=" vmw_pvscsi "`}, false},
	} {
		if got := hostOnly(tc.texts); got != tc.want {
			t.Errorf("%s: hostOnly = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// Each change names the disks it was written to: a file on an md root is
// on both legs' disks, one under a /boot partition on that one disk only.
func TestWithDisks(t *testing.T) {
	g := &report.Guest{Partitions: []report.Partition{
		{Number: 1, Disk: 0, DiskName: "vm-disk1.vmdk", FSType: "linux_raid_member"},
		{Number: 1, Disk: 1, DiskName: "vm-disk2.vmdk", FSType: "linux_raid_member"},
		{Number: 2, Disk: 0, DiskName: "vm-disk1.vmdk", FSType: "ext4"},
		{Type: "md", Device: "/dev/md127", Disk: 0, Disks: []int{0, 1}, FSType: "ext4"},
	}}
	mounted := []report.Partition{
		{Type: "md", Device: "/dev/md127", Disk: 0, Disks: []int{0, 1}, MountPoint: "/"},
		{Number: 2, Disk: 0, MountPoint: "/boot"},
	}
	got := withDisks([]report.Change{
		{File: "/etc/fstab"}, {File: "/boot/grub/grub.cfg"}, {File: "/bootx"}, {Note: "no file"},
		{File: "/dev/md127", Disks: []string{"kept"}},
	}, mounted, g)
	want := []string{"vm-disk1.vmdk vm-disk2.vmdk", "vm-disk1.vmdk", "vm-disk1.vmdk vm-disk2.vmdk", "", "kept"}
	for i, c := range got {
		if s := strings.Join(c.Disks, " "); s != want[i] {
			t.Errorf("change %q: disks %q, want %q", c.File, s, want[i])
		}
	}
}

package guest

import "testing"

func TestNoReplay(t *testing.T) {
	for fs, want := range map[string]string{"ext4": ",noload", "ext3": ",noload", "xfs": ",norecovery", "btrfs": "", "vfat": "", "": ""} {
		if got := noReplay(fs); got != want {
			t.Errorf("noReplay(%q) = %q, want %q", fs, got, want)
		}
	}
}

func TestHostUnique(t *testing.T) {
	for fs, want := range map[string]string{"xfs": ",nouuid", "ext4": "", "btrfs": "", "": ""} {
		if got := hostUnique(fs); got != want {
			t.Errorf("hostUnique(%q) = %q, want %q", fs, got, want)
		}
	}
}

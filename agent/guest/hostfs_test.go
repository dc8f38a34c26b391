package guest

import "testing"

func TestHasFilesystem(t *testing.T) {
	const proc = "nodev\tsysfs\nnodev\ttmpfs\n\text4\n\txfs\nnodev\tfuse\n\tfuseblk\n"
	for _, tc := range []struct {
		fs   string
		want bool
	}{
		{"ext4", true}, {"xfs", true}, {"vfat", false}, {"fuse", true}, {"fat", false}, {"", false},
	} {
		if got := hasFilesystem(proc, tc.fs); got != tc.want {
			t.Errorf("hasFilesystem(%q) = %v, want %v", tc.fs, got, tc.want)
		}
	}
}

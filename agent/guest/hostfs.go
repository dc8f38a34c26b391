package guest

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// HostKernelMounts says whether the host kernel can mount fstype, which
// the native backend needs: the type is in /proc/filesystems, or a module
// for it is installed for the running kernel (mount loads it on demand).
// guestfs does not need this: its appliance brings its own kernel.
func HostKernelMounts(fstype string) bool {
	b, err := os.ReadFile("/proc/filesystems")
	if err == nil && hasFilesystem(string(b), fstype) {
		return true
	}
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return false
	}
	var rel strings.Builder
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		rel.WriteByte(byte(c))
	}
	dir := map[string]string{"vfat": "fat", "ntfs3": "ntfs3", "xfs": "xfs", "btrfs": "btrfs", "ext4": "ext4"}[fstype]
	if dir == "" {
		return false
	}
	m, _ := filepath.Glob(filepath.Join("/lib/modules", rel.String(), "kernel/fs", dir, fstype+".ko*"))
	return len(m) > 0
}

// hasFilesystem says whether /proc/filesystems text lists fstype.
func hasFilesystem(procFilesystems, fstype string) bool {
	for _, l := range strings.Split(procFilesystems, "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && f[len(f)-1] == fstype {
			return true
		}
	}
	return false
}

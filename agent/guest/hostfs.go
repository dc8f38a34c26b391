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
	mod := fsModules[fstype]
	if mod == "" {
		return false
	}
	m, _ := filepath.Glob(filepath.Join("/lib/modules", rel.String(), "kernel/fs", mod+".ko*"))
	return len(m) > 0
}

// fsModules are the kernel modules (below kernel/fs) that provide the
// filesystem types the native backend mounts.
var fsModules = map[string]string{
	"ext2": "ext4/ext4", "ext3": "ext4/ext4", "ext4": "ext4/ext4",
	"xfs": "xfs/xfs", "btrfs": "btrfs/btrfs", "vfat": "fat/vfat", "ntfs3": "ntfs3/ntfs3",
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

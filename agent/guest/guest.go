// Package guest gives the FIX and INSPECT stages access to the files inside a
// disk image, and a way to run the guest's own tools, through one interface
// with two backends:
//
//   - native: qemu-storage-daemon exports the image over FUSE inside a private
//     mount namespace, a loop device maps the partition, the kernel mounts it,
//     and guest commands run in a chroot. Fast; trusts the host kernel's
//     filesystem drivers with the image and runs guest binaries on the host.
//   - guestfs: libguestfs runs the same operations inside its appliance VM, so
//     a hostile filesystem or guest binary meets a throwaway kernel, not the
//     host's. Slower (an appliance boot, TCG where KVM does not work).
//
// Every path a Session takes is a path inside the guest: it is resolved with
// the guest's root as "/", so symlinks in the guest (/etc/fstab ->
// ../../../etc/shadow, or -> /host/...) never lead outside it.
package guest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// Backends are the names accepted by Open.
const (
	Native  = "native"
	Guestfs = "guestfs"
	// Auto is not a backend Open takes: inspect picks native or guestfs
	// for the guest (inspect.Choose).
	Auto = "auto"
)

// MaxFileSize bounds what ReadFile returns: guest files are untrusted and the
// configuration files FIX edits are small.
const MaxFileSize = 16 << 20

// ReadFileLimit is Session.ReadFile with a bound of limit bytes instead of
// MaxFileSize: a Windows registry hive (SOFTWARE) is often larger than
// the configuration files ReadFile is for.
func ReadFileLimit(ctx context.Context, s Session, p string, limit int64) ([]byte, error) {
	if l, ok := s.(interface {
		readFileLimit(ctx context.Context, p string, limit int64) ([]byte, error)
	}); ok {
		return l.readFileLimit(ctx, p, limit)
	}
	return s.ReadFile(ctx, p)
}

// ReadHead reads the first size bytes of a guest's regular file (fewer
// when it is shorter): the header of a file too large to read whole
// (hiberfil.sys).
func ReadHead(ctx context.Context, s Session, p string, size int) ([]byte, error) {
	if h, ok := s.(interface {
		readHead(ctx context.Context, p string, size int) ([]byte, error)
	}); ok {
		return h.readHead(ctx, p, size)
	}
	return nil, fmt.Errorf("cannot read the head of %s: the %s backend cannot", p, s.Backend())
}

// ErrNotRegular is returned (wrapped) when a file operation meets a
// directory, device, FIFO or socket where a regular file is needed.
var ErrNotRegular = errors.New("not a regular file")

// Image is a disk image qemu can open: a path or a qemu "json:" spec, and its format.
type Image struct {
	Path   string
	Format string
	// Writable, for one of Options.Others, attaches the image itself
	// read-write instead of behind a private overlay: FIX's own overlay of
	// a disk an md array or an LV spans, written through the assembly.
	Writable bool
}

// Options control how Open attaches the image.
type Options struct {
	// Writable attaches img itself read-write. Otherwise a private qcow2
	// overlay backed by img is attached, so even a journal replay cannot
	// write to img.
	Writable bool
	// WorkDir is where scratch files and mount points go (default os.TempDir()).
	WorkDir string
	// Others are the VM's other disks, attached after img, through a
	// private overlay unless marked Writable: the guestfs appliance then
	// assembles md arrays and VGs whose members live on several disks.
	// The native backend opens filesystems by offset on img and ignores
	// them.
	Others []Image
}

// Volume is a filesystem only the guestfs appliance sees: on an md array
// or an LV it assembled or activated.
type Volume struct {
	Device string // its name in the appliance: /dev/md127, /dev/VG/LV
	FSType string
	UUID   string
	// ArrayUUID is an md array's own UUID (mdadm's, as 32 hex digits),
	// the one its members' superblocks carry: it says which disks the
	// array lives on.
	ArrayUUID string
}

// Volumes lists the md arrays and LVs the session's backend assembled,
// with their filesystems; nil for a backend that assembles nothing (native).
func Volumes(ctx context.Context, s Session) ([]Volume, error) {
	if v, ok := s.(interface {
		volumes(ctx context.Context) ([]Volume, error)
	}); ok {
		return v.volumes(ctx)
	}
	return nil, nil
}

// Mount is a filesystem to mount in the session.
type Mount struct {
	Number int   // partition number (Linux numbering), 0 for the whole disk
	Offset int64 // bytes
	Size   int64 // bytes
	FSType string
	Target string // path inside the guest: "/" first, then e.g. "/boot"
	RO     bool
	// Device is the filesystem's device inside the guestfs appliance when
	// it is not partition Number of the disk: an LV, "/dev/VG/LV". The
	// native backend ignores it and uses Offset and Size.
	Device string
	// Options are filesystem options added to the mount, from a short
	// allowed list (MountOptionsAllowed): a btrfs root's "subvol=@".
	Options string
}

// noReplay is the mount option that keeps a read-only mount of fstype
// from replaying its journal, "" when it has none. A guest that was not
// shut down cleanly leaves a journal to replay: without it the kernel
// refuses a read-only device ("cannot mount read-only"), and on a
// writable one a read-only mount would still change the disk.
func noReplay(fstype string) string {
	switch fstype {
	case "ext3", "ext4":
		return ",noload"
	case "xfs":
		return ",norecovery"
	}
	return ""
}

// hostUnique is the mount option that lets the host kernel mount a
// filesystem whose UUID another mounted filesystem already has, "" when
// fstype needs none. XFS refuses a second filesystem with the same UUID
// ("duplicate UUID - can't mount"): two VMs cloned from one template,
// converted at once, or a guest cloned from the host's own image, would
// otherwise fail INSPECT with "wrong fs type". Only the native backend
// needs it (the appliance mounts one guest).
func hostUnique(fstype string) string {
	if fstype == "xfs" {
		return ",nouuid"
	}
	return ""
}

// CheckOptions refuses mount options other than btrfs's subvol=/subvolid=:
// they come from the guest's own fstab, which is untrusted.
func CheckOptions(o string) error {
	if o == "" {
		return nil
	}
	for _, opt := range strings.Split(o, ",") {
		k, v, _ := strings.Cut(opt, "=")
		if (k != "subvol" && k != "subvolid") || v == "" || strings.ContainsAny(v, "\x00\n\"'") {
			return fmt.Errorf("mount option %q not allowed (only btrfs subvol= and subvolid=)", opt)
		}
	}
	return nil
}

// Entry is what Lstat and ReadDir say about a guest file.
type Entry struct {
	Name string
	Mode fs.FileMode // type bits and permissions
	Size int64
}

// Session is an attached image. Paths are absolute paths inside the guest.
// Methods are not safe for concurrent use.
type Session interface {
	// Backend names the backend (native | guestfs).
	Backend() string
	// Mount mounts a filesystem; "/" must come first.
	Mount(ctx context.Context, m Mount) error
	// Unmount unmounts everything Mount mounted, in reverse order.
	Unmount(ctx context.Context) error
	// ReadFile returns a regular file's content (following symlinks inside
	// the guest). It refuses devices, FIFOs and files over MaxFileSize.
	ReadFile(ctx context.Context, p string) ([]byte, error)
	// WriteFile replaces a regular file's content, keeping its mode, or
	// creates it with perm.
	WriteFile(ctx context.Context, p string, data []byte, perm fs.FileMode) error
	// ReadDir lists a directory without following symlinks in its entries.
	ReadDir(ctx context.Context, p string) ([]Entry, error)
	// Lstat describes p itself (a symlink is not followed).
	Lstat(ctx context.Context, p string) (Entry, error)
	// Readlink returns a symlink's target as stored.
	Readlink(ctx context.Context, p string) (string, error)
	// Remove removes a file or symlink (not a directory).
	Remove(ctx context.Context, p string) error
	// Symlink creates newname pointing to target (stored as given).
	Symlink(ctx context.Context, target, newname string) error
	// Mkdir creates directory p (its parent must exist); an existing
	// directory is no error.
	Mkdir(ctx context.Context, p string) error
	// Run runs argv inside the guest (chroot or appliance) and returns its
	// combined output.
	Run(ctx context.Context, argv ...string) ([]byte, error)
	// Close unmounts and detaches everything; it is safe to call twice.
	Close() error
}

// Open attaches img through the named backend.
func Open(ctx context.Context, backend string, img Image, o Options) (Session, error) {
	if img.Path == "" || img.Format == "" {
		return nil, fmt.Errorf("cannot open guest: image path and format are required")
	}
	switch backend {
	case Native, "":
		return openNative(ctx, img, o)
	case Guestfs:
		return openGuestfs(ctx, img, o)
	}
	return nil, fmt.Errorf("cannot open guest: unknown backend %q (want native or guestfs)", backend)
}

// clean makes p an absolute, clean guest path and refuses empty or NUL paths.
func clean(p string) (string, error) {
	if p == "" || strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("invalid guest path %q", p)
	}
	return path.Clean("/" + p), nil
}

// split returns the parent directory and the final name of a guest path.
func split(p string) (dir, base string, err error) {
	c, err := clean(p)
	if err != nil {
		return "", "", err
	}
	if c == "/" {
		return "", "", fmt.Errorf("invalid guest path %q: the root has no parent", p)
	}
	return path.Dir(c), path.Base(c), nil
}

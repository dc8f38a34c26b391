package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// userFiles opens the files of a job that root (the worker) runs for an
// unprivileged user, so that the job reads nothing that user could not read
// themselves, however the files change while it runs:
//
//   - every path is walked from / one component at a time, each component
//     opened with openat2(RESOLVE_NO_SYMLINKS) relative to the directory
//     opened before it, so a symbolic link anywhere on the path is refused
//     and a directory swapped after its check is never entered;
//   - the checks are made on what was opened (fstat of the descriptor):
//     every directory searchable by the user, the file a regular file they
//     can read, by the permission bits and the POSIX access ACL if any;
//   - the file is kept open until the job ends and other processes (qemu-img,
//     qemu-storage-daemon) are given /proc/<worker pid>/fd/<n>, which opens
//     that same file and nothing else.
//
// The user's groups are those of the passwd and group databases (as login
// would set them), not of any running process.
//
// For root's jobs and `hyper2kvmd convert` (uid 0) the same walk is made
// without the permission checks: the caller's own access applies, but a
// symbolic link is still refused and the file still opened once and read
// by its descriptor.
type userFiles struct {
	check   bool // check access for uid (false: uid 0, the caller's own access)
	uid     uint32
	gid     int // the user's primary group, -1 when unknown
	gids    map[uint32]bool
	trusted string // a path opened without the user check (the agent's own claimed image)
	// trustedDir holds files opened without the user check: the disks the
	// job itself downloaded from a source.
	trustedDir string
	files      []*os.File
	stats      []unix.Stat_t     // of files, when opened
	names      map[string]string // /proc/<pid>/fd/<n> -> the path it was opened as
	// mu guards files, stats and leases against the lease watcher.
	mu sync.Mutex
	// leases says, for each of files, whether it holds a read lease (see
	// lease.go); noLease names the files where none could be taken.
	leases  []bool
	noLease []string
	// spans are the bytes the header parsers read, to read again before
	// CONVERT (see headers.go).
	spans []span
	keep  []io.Closer
}

func newUserFiles(uid int64, trusted string) (*userFiles, error) {
	if uid < 0 || uid > 0xfffffffe {
		return nil, fmt.Errorf("cannot check sources for uid %d", uid)
	}
	u := &userFiles{check: uid > 0, uid: uint32(uid), gid: -1, gids: map[uint32]bool{}, names: map[string]string{}}
	if trusted != "" {
		u.trusted = filepath.Clean(trusted)
	}
	if uid == 0 {
		return u, nil
	}
	if pw, err := user.LookupId(strconv.FormatInt(uid, 10)); err == nil {
		if g, err := strconv.ParseUint(pw.Gid, 10, 32); err == nil {
			u.gids[uint32(g)] = true
			u.gid = int(g)
		}
		if gs, err := pw.GroupIds(); err == nil {
			for _, s := range gs {
				if g, err := strconv.ParseUint(s, 10, 32); err == nil {
					u.gids[uint32(g)] = true
				}
			}
		}
	}
	return u, nil
}

// open opens p for reading if the user could, and returns the path other
// processes open it by. The file stays open until close.
func (u *userFiles) open(p string) (string, error) {
	_, name, err := u.openFile(p)
	return name, err
}

// openFile is open returning the opened file too.
func (u *userFiles) openFile(p string) (*os.File, string, error) {
	if !filepath.IsAbs(p) {
		return nil, "", fmt.Errorf("%s: a source path must be absolute", p)
	}
	p = filepath.Clean(p)
	var f *os.File
	var parent unix.Stat_t // of the directory holding the file, from the walk
	var err error
	if p == u.trusted || u.inTrustedDir(p) {
		f, err = os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
		if err == nil {
			var st unix.Stat_t
			if err = unix.Fstat(int(f.Fd()), &st); err == nil && st.Mode&unix.S_IFMT != unix.S_IFREG {
				err = errors.New("not a regular file")
			}
		}
		if err != nil {
			if f != nil {
				f.Close()
			}
			return nil, "", fmt.Errorf("cannot open %s: %w", p, err)
		}
	} else if f, parent, err = u.walk(p); err != nil {
		return nil, "", err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, "", fmt.Errorf("cannot look at %s: %w", p, err)
	}
	leased, err := u.lease(f, p)
	if err != nil {
		f.Close()
		return nil, "", err
	}
	if p != u.trusted && !u.inTrustedDir(p) {
		if err := u.checkLinks(p, st, parent); err != nil {
			f.Close()
			return nil, "", err
		}
	}
	u.mu.Lock()
	u.files, u.stats, u.leases = append(u.files, f), append(u.stats, st), append(u.leases, leased)
	u.mu.Unlock()
	name := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd())
	u.names[name] = p
	return f, name, nil
}

// who names the job's user in messages.
func (u *userFiles) who() string {
	if !u.check {
		return "a job"
	}
	return fmt.Sprintf("a job of uid %d", u.uid)
}

// walk opens p component by component from /, checking each directory
// and the file for the user.
func (u *userFiles) walk(p string) (*os.File, unix.Stat_t, error) {
	var parent unix.Stat_t
	f, err := u.walkParent(p, &parent)
	return f, parent, err
}

// walkParent is walk, setting *parent to the stat of the directory the
// file was opened in.
func (u *userFiles) walkParent(p string, parent *unix.Stat_t) (*os.File, error) {
	dir, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot open /: %w", err)
	}
	cur := "/"
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i, name := range parts {
		if err := u.permitted(dir, cur, 1); err != nil {
			unix.Close(dir)
			return nil, err
		}
		next := filepath.Join(cur, name)
		if i == len(parts)-1 {
			if err := unix.Fstat(dir, parent); err != nil {
				unix.Close(dir)
				return nil, fmt.Errorf("cannot look at %s: %w", cur, err)
			}
		}
		how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW, Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
		fd, err := unix.Openat2(dir, name, how)
		if errors.Is(err, unix.ENOSYS) {
			// Kernels before 5.6: O_NOFOLLOW on a single component refuses
			// a symbolic link just as well.
			fd, err = unix.Openat(dir, name, unix.O_PATH|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		}
		unix.Close(dir)
		if err != nil {
			return nil, fmt.Errorf("cannot open %s: %w", next, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("cannot look at %s: %w", next, err)
		}
		typ := st.Mode & unix.S_IFMT
		if typ == unix.S_IFLNK {
			unix.Close(fd)
			return nil, fmt.Errorf("%s is a symbolic link; %s reads only paths without symbolic links", next, u.who())
		}
		if i < len(parts)-1 {
			if typ != unix.S_IFDIR {
				unix.Close(fd)
				return nil, fmt.Errorf("cannot open %s: %s is not a directory", p, next)
			}
			dir, cur = fd, next
			continue
		}
		if typ != unix.S_IFREG {
			unix.Close(fd)
			return nil, fmt.Errorf("%s is not a regular file", next)
		}
		if err := u.permitted(fd, next, 4); err != nil {
			unix.Close(fd)
			return nil, err
		}
		// Upgrade the O_PATH descriptor to a readable one: this opens the
		// inode just checked, never a path again.
		f, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), os.O_RDONLY|unix.O_NOCTTY, 0)
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("cannot open %s: %w", next, err)
		}
		return f, nil
	}
	unix.Close(dir)
	return nil, fmt.Errorf("%s is not a file", p)
}

// openDir opens the output directory p for writing as the user could:
// walked from / like a source, each component with RESOLVE_NO_SYMLINKS, a
// missing component created where the user may create it (and given to
// them), the directory itself checked writable and searchable on the opened
// descriptor. The directory stays open until the job ends; every output is
// created below the returned /proc/<pid>/fd/<n> name, which always leads to
// this directory, whatever the user renames or replaces meanwhile.
func (u *userFiles) openDir(p string) (*os.File, string, error) {
	if !filepath.IsAbs(p) {
		return nil, "", fmt.Errorf("%s: an output directory must be absolute", p)
	}
	p = filepath.Clean(p)
	dir, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", fmt.Errorf("cannot open /: %w", err)
	}
	cur := "/"
	for _, name := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		if name == "" {
			continue
		}
		if err := u.permitted(dir, cur, 1); err != nil {
			unix.Close(dir)
			return nil, "", err
		}
		next := filepath.Join(cur, name)
		fd, err := openNoSymlinks(dir, name)
		if errors.Is(err, unix.ENOENT) {
			if err = u.permitted(dir, cur, 3); err == nil {
				if err = unix.Mkdirat(dir, name, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
					if fd, err = openNoSymlinks(dir, name); err == nil {
						// What the user would have had, creating it themselves.
						unix.Fchownat(fd, "", int(u.uid), u.gid, unix.AT_EMPTY_PATH)
					}
				}
			}
		}
		unix.Close(dir)
		if errors.Is(err, unix.ELOOP) {
			return nil, "", fmt.Errorf("%s is a symbolic link; a job of uid %d writes only below paths without symbolic links", next, u.uid)
		}
		if err != nil {
			return nil, "", fmt.Errorf("cannot open output directory %s: %w", next, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return nil, "", fmt.Errorf("cannot look at %s: %w", next, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			unix.Close(fd)
			return nil, "", fmt.Errorf("%s is a symbolic link; a job of uid %d writes only below paths without symbolic links", next, u.uid)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			unix.Close(fd)
			return nil, "", fmt.Errorf("cannot open output directory %s: %s is not a directory", p, next)
		}
		dir, cur = fd, next
	}
	if err := u.permitted(dir, p, 3); err != nil {
		unix.Close(dir)
		return nil, "", err
	}
	f, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", dir), os.O_RDONLY|unix.O_DIRECTORY, 0)
	unix.Close(dir)
	if err != nil {
		return nil, "", fmt.Errorf("cannot open output directory %s: %w", p, err)
	}
	name := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd())
	u.names[name] = p
	return f, name, nil
}

// openNoSymlinks opens the single component name in dir as an O_PATH
// descriptor, refusing a symbolic link.
func openNoSymlinks(dir int, name string) (int, error) {
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW, Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
	fd, err := unix.Openat2(dir, name, how)
	if errors.Is(err, unix.ENOSYS) {
		fd, err = unix.Openat(dir, name, unix.O_PATH|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	}
	return fd, err
}

// permitted checks that the user may do want (4 read, 3 write and search, 1 search) on the
// object fd refers to.
func (u *userFiles) permitted(fd int, name string, want uint32) error {
	if !u.check {
		return nil // the kernel checks the caller's own access on open
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("cannot look at %s: %w", name, err)
	}
	acl, err := readACL(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return fmt.Errorf("cannot read the ACL of %s: %w", name, err)
	}
	if !allowed(u.uid, u.gids, st.Uid, st.Gid, st.Mode, acl, want) {
		verb := "read"
		switch want {
		case 1:
			verb = "enter"
		case 3:
			verb = "write in"
		}
		return fmt.Errorf("uid %d cannot %s %s", u.uid, verb, name)
	}
	return nil
}

// unchanged checks that no opened file was written, truncated or had its
// mode changed since it was opened (its ctime moves with each). The files
// are read by their descriptors, so a rename or a link never matters, but
// whoever may write a file could rewrite an image's header while qemu reads
// it (set a qcow2's external data file bit, give a sparse VMDK capacity 0)
// and make qemu open a file by a name nobody checked.
func (u *userFiles) unchanged() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i, f := range u.files {
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			return fmt.Errorf("cannot look at %s again: %w", u.show(f.Name()), err)
		}
		if was := u.stats[i]; st.Ctim != was.Ctim || st.Mtim != was.Mtim || st.Size != was.Size {
			return sourceChanged{fmt.Sprintf("%s changed while the job read it; nothing it produced is kept (convert files nobody writes meanwhile)", u.pathOf(f))}
		}
	}
	return nil
}

// pathOf is the path f was opened as.
func (u *userFiles) pathOf(f *os.File) string {
	if p, ok := u.names[fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd())]; ok {
		return p
	}
	return f.Name()
}

// close closes the opened files: call it when no process reads them any more.
func (u *userFiles) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range u.keep {
		c.Close()
	}
	for i, f := range u.files {
		if u.leases[i] {
			unix.FcntlInt(f.Fd(), unix.F_SETLEASE, unix.F_UNLCK)
		}
		f.Close()
	}
	u.files, u.stats, u.leases, u.keep, u.spans = nil, nil, nil, nil, nil
}

// explain replaces the /proc/<pid>/fd/<n> names in an error by the paths
// the user gave.
func (u *userFiles) explain(err error) error {
	if u == nil || err == nil {
		return err
	}
	msg := u.show(err.Error())
	if msg == err.Error() {
		return err
	}
	return shown{msg, err}
}

// shown is an error with the user's paths in its text; errors.Is and As
// still see the error it shows.
type shown struct {
	msg string
	err error
}

func (e shown) Error() string { return e.msg }
func (e shown) Unwrap() error { return e.err }

// show replaces the /proc/<pid>/fd/<n> names in s by the paths the user
// gave, longest first so that fd/1 never rewrites part of fd/12.
func (u *userFiles) show(s string) string {
	if u == nil {
		return s
	}
	names := make([]string, 0, len(u.names))
	for name := range u.names {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool { return len(names[i]) > len(names[j]) })
	for _, name := range names {
		s = strings.ReplaceAll(s, name, u.names[name])
	}
	return s
}

// aclEntry is one entry of a POSIX ACL (the system.posix_acl_access xattr).
type aclEntry struct {
	tag  uint16
	perm uint16
	id   uint32
}

// ACL entry tags (linux/posix_acl.h).
const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
)

// readACL reads the access ACL of path; nil when it has none (the
// permission bits say it all).
func readACL(path string) ([]aclEntry, error) {
	buf := make([]byte, 4096)
	n, err := unix.Getxattr(path, "system.posix_acl_access", buf)
	if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return parseACL(buf[:n])
}

func parseACL(b []byte) ([]aclEntry, error) {
	if len(b) < 4 || binary.LittleEndian.Uint32(b) != 2 || (len(b)-4)%8 != 0 {
		return nil, errors.New("malformed POSIX ACL")
	}
	var out []aclEntry
	for b = b[4:]; len(b) > 0; b = b[8:] {
		out = append(out, aclEntry{tag: binary.LittleEndian.Uint16(b), perm: binary.LittleEndian.Uint16(b[2:]), id: binary.LittleEndian.Uint32(b[4:])})
	}
	return out, nil
}

// allowed is the kernel's access check for an unprivileged user (no
// capabilities): the permission bits, or the access ACL when there is one
// (acl(5), "Access check algorithm").
func allowed(uid uint32, gids map[uint32]bool, owner, group, mode uint32, acl []aclEntry, want uint32) bool {
	has := func(perm uint32) bool { return perm&want == want }
	if owner == uid {
		return has((mode >> 6) & 7)
	}
	if len(acl) == 0 {
		if gids[group] {
			return has((mode >> 3) & 7)
		}
		return has(mode & 7)
	}
	mask := uint32(7)
	for _, e := range acl {
		if e.tag == aclMask {
			mask = uint32(e.perm)
		}
	}
	for _, e := range acl {
		if e.tag == aclUser && e.id == uid {
			return has(uint32(e.perm) & mask)
		}
	}
	matched := false
	for _, e := range acl {
		if (e.tag == aclGroupObj && gids[group]) || (e.tag == aclGroup && gids[e.id]) {
			matched = true
			if has(uint32(e.perm) & mask) {
				return true
			}
		}
	}
	if matched {
		return false
	}
	for _, e := range acl {
		if e.tag == aclOther {
			return has(uint32(e.perm))
		}
	}
	return false
}

// checkLinks refuses a file with more than one name (hard link) unless it
// is the submitter's own: where fs.protected_hardlinks is 0 anyone may
// give any file on the file system a name in their own directory, and
// root's job would then read it as theirs. Root's own file qualifies only
// in a directory nobody else may write (owned by root, not writable by
// group or others). parent is the directory the file was opened in.
func (u *userFiles) checkLinks(p string, st, parent unix.Stat_t) error {
	if st.Nlink <= 1 {
		return nil
	}
	submitter := u.uid
	if !u.check {
		submitter = uint32(os.Geteuid())
	}
	if st.Uid != submitter {
		return fmt.Errorf("%s has %d hard links and belongs to uid %d, not to the submitter (uid %d); a job reads a file with several names only when it is the submitter's own (copy the file, or remove its other names)", p, st.Nlink, st.Uid, submitter)
	}
	if submitter == 0 && (parent.Uid != 0 || parent.Mode&0o022 != 0) {
		return fmt.Errorf("%s has %d hard links and lies in %s, a directory others may write; root's job reads a file with several names only from a directory only root writes (copy the file, or remove its other names)", p, st.Nlink, filepath.Dir(p))
	}
	return nil
}

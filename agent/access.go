package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// access answers whether an unprivileged user could reach a file
// themselves. The worker runs as root, so the agent checks a manifest's
// paths against the uid of whoever submitted or dropped it: nobody gets
// root to read (or write) a file for them that they could not.
type access struct {
	uid  uint32
	gids map[uint32]bool
}

func accessFor(uid int64) (*access, error) {
	if uid < 0 || uid > 0xffffffff {
		return nil, fmt.Errorf("invalid uid %d", uid)
	}
	a := &access{uid: uint32(uid), gids: map[uint32]bool{}}
	u, err := user.LookupId(strconv.FormatInt(uid, 10))
	if err != nil {
		return a, nil // a uid without a passwd entry has no groups to add
	}
	if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
		a.gids[uint32(g)] = true
	}
	if gs, err := u.GroupIds(); err == nil {
		for _, s := range gs {
			if g, err := strconv.ParseUint(s, 10, 32); err == nil {
				a.gids[uint32(g)] = true
			}
		}
	}
	return a, nil
}

// allowed checks the permission bits of st for want (4 read, 2 write, 1 exec).
func (a *access) allowed(st *syscall.Stat_t, want uint32) bool {
	mode := st.Mode & 0o777
	switch {
	case st.Uid == a.uid:
		return (mode>>6)&want == want
	case a.gids[st.Gid]:
		return (mode>>3)&want == want
	default:
		return mode&want == want
	}
}

// canReach checks that every directory from / down to dir is searchable.
func (a *access) canReach(dir string) error {
	cur := "/"
	parts := strings.Split(strings.TrimPrefix(filepath.Clean(dir), "/"), "/")
	for i := -1; i < len(parts); i++ {
		if i >= 0 {
			if parts[i] == "" {
				continue
			}
			cur = filepath.Join(cur, parts[i])
		}
		var st syscall.Stat_t
		if err := syscall.Stat(cur, &st); err != nil {
			return fmt.Errorf("cannot look at %s: %w", cur, err)
		}
		if !a.allowed(&st, 1) {
			return fmt.Errorf("uid %d cannot enter %s", a.uid, cur)
		}
	}
	return nil
}

// canRead checks that the user could open path for reading.
func (a *access) canRead(path string) error {
	if err := a.canReach(filepath.Dir(path)); err != nil {
		return err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return fmt.Errorf("cannot look at %s: %w", path, err)
	}
	if !a.allowed(&st, 4) {
		return fmt.Errorf("uid %d cannot read %s", a.uid, path)
	}
	return nil
}

// canCreateIn checks that the user could create files in dir, or in the
// deepest existing directory above it (where the worker would create it).
func (a *access) canCreateIn(dir string) error {
	for {
		fi, err := os.Stat(dir)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("%s is not a directory", dir)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) || dir == "/" {
			return err
		}
		dir = filepath.Dir(dir)
	}
	if err := a.canReach(dir); err != nil {
		return err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return err
	}
	if !a.allowed(&st, 2|1) {
		return fmt.Errorf("uid %d cannot create files in %s", a.uid, dir)
	}
	return nil
}

// resolve follows symlinks in the existing part of p, so that a path
// checks against where it really leads.
func resolve(p string) string {
	p = filepath.Clean(p)
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	if p == "/" {
		return p
	}
	return filepath.Join(resolve(filepath.Dir(p)), filepath.Base(p))
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	dir = filepath.Clean(dir)
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

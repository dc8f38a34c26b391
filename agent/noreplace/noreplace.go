// Package noreplace renames a file without ever replacing what is at the new
// name: the queue's claims and settlements and the engine's outputs (a
// converted disk, domain.xml) all rely on "an existing file is never
// overwritten". It is a leaf package.
package noreplace

import (
	"errors"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// Rename is rename(2) that fails with an error matching fs.ErrExist instead
// of replacing newpath (and fs.ErrNotExist when oldpath is gone). It uses
// renameat2(RENAME_NOREPLACE); on a file system without it (EINVAL,
// ENOSYS, EOPNOTSUPP) it falls back to link(2) and unlink(2), which never
// replaces either. Errors are *os.LinkError with Op "rename".
func Rename(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
		if err = os.Link(oldpath, newpath); err == nil {
			if err = os.Remove(oldpath); err == nil {
				return nil
			}
		}
		var le *os.LinkError
		var pe *os.PathError
		switch {
		case errors.As(err, &le):
			err = le.Err
		case errors.As(err, &pe):
			err = pe.Err
		}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		err = fs.ErrExist
	case errors.Is(err, unix.ENOENT):
		err = fs.ErrNotExist
	}
	return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
}

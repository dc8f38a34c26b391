package manifest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
)

// CheckFiles runs the optional checks that look at the machine rather than
// the text: each source_path exists, is a regular file (not a symbolic
// link, FIFO, device or directory), can be opened for reading by the
// caller, and holds the format its source_type declares, as detected from
// its content by imgfmt.Detect. It reports problems with the same paths as
// Validate and skips sources Validate would refuse. It never writes, and
// reads only the headers imgfmt.Detect needs (sha256 is verified by the
// worker, not here: hashing a large disk takes minutes).
func CheckFiles(m *Manifest) Problems {
	return checkFiles(m, imgfmt.Detect)
}

func checkFiles(m *Manifest, detect func(string) (string, error)) Problems {
	var ps Problems
	if m == nil {
		return nil
	}
	check := func(path string, p *Pipeline) {
		if p == nil {
			return
		}
		ps = append(ps, checkSource(path, &p.Load, detect)...)
	}
	if m.Batch {
		for i := range m.VMs {
			check(fmt.Sprintf("vms[%d].pipeline", i), m.VMs[i].Pipeline)
		}
	} else {
		check("pipeline", m.Pipeline)
	}
	return ps
}

func checkSource(path string, l *Load, detect func(string) (string, error)) Problems {
	pp := path + ".load.source_path"
	src := l.SourcePath
	v := validator{}
	v.absPath(pp, src)
	if src == "" || len(v.ps) > 0 {
		return nil
	}
	bad := func(format string, a ...any) Problems {
		return Problems{{Path: pp, Message: fmt.Sprintf(format, a...)}}
	}
	fi, err := os.Lstat(src)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return bad("%s does not exist", src)
		}
		return bad("cannot look at %s: %v", src, unwrapPath(err))
	}
	switch mode := fi.Mode(); {
	case mode&fs.ModeSymlink != 0:
		target, _ := os.Readlink(src)
		return bad("%s is a symbolic link (to %s); give the path of the image file itself", src, target)
	case mode.IsDir():
		return bad("%s is a directory, not a disk image file", src)
	case mode&fs.ModeNamedPipe != 0:
		return bad("%s is a FIFO, not a disk image file", src)
	case mode&fs.ModeSocket != 0:
		return bad("%s is a socket, not a disk image file", src)
	case mode&fs.ModeDevice != 0:
		return bad("%s is a device, not a disk image file", src)
	case !mode.IsRegular():
		return bad("%s is not a regular file", src)
	}
	// O_NOFOLLOW|O_NONBLOCK: if the file was swapped for a link or FIFO
	// since Lstat, fail instead of following or hanging.
	f, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return bad("%s cannot be read: %v", src, unwrapPath(err))
	}
	f.Close()
	if err := imgfmt.NotImage(src); err != nil {
		return bad("%v", err)
	}

	want := QemuFormat(l.SourceType)
	if want == "" {
		return nil // Validate reports the unknown source_type
	}
	got, err := detect(src)
	if err != nil {
		// Do not repeat the path when the detector's message has it.
		if inner := errors.Unwrap(err); inner != nil && strings.Contains(err.Error(), src) {
			err = inner
		}
		return bad("cannot detect the format of %s: %v", src, err)
	}
	if got != want {
		return Problems{{Path: path + ".load.source_type", Message: fmt.Sprintf(
			"declares %q (qemu format %q) but %s holds %s", l.SourceType, want, src, describeFormat(got))}}
	}
	return nil
}

// describeFormat names a detected qemu format with the source_type a user
// would write for it.
func describeFormat(qemu string) string {
	for _, st := range SourceTypes() {
		if QemuFormat(st) == qemu {
			if st == qemu {
				return fmt.Sprintf("%s %s image", article(st), qemu)
			}
			return fmt.Sprintf("%s %s image (qemu format %q)", article(st), st, qemu)
		}
	}
	return fmt.Sprintf("an image of format %q", qemu)
}

func article(word string) string {
	if word != "" && strings.ContainsRune("aeiou", rune(word[0])) {
		return "an"
	}
	return "a"
}

// unwrapPath drops the *PathError wrapping, whose text repeats the path.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

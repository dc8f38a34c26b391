package sandbox

import (
	"encoding/binary"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// interpret runs the filter on one system call as the kernel would: the
// few classic BPF instructions Filter uses, over struct seccomp_data.
func interpret(t *testing.T, p []unix.SockFilter, arch uint32, nr uint32, arg0 uint64) uint32 {
	t.Helper()
	data := make([]byte, 64)
	binary.NativeEndian.PutUint32(data[0:], nr)
	binary.NativeEndian.PutUint32(data[4:], arch)
	binary.NativeEndian.PutUint64(data[16:], arg0)
	var a uint32
	for pc := 0; pc < len(p); pc++ {
		f := p[pc]
		switch f.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			a = binary.NativeEndian.Uint32(data[f.K:])
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			pc += int(map[bool]uint8{true: f.Jt, false: f.Jf}[a == f.K])
		case unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K:
			pc += int(map[bool]uint8{true: f.Jt, false: f.Jf}[a >= f.K])
		case unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K:
			pc += int(map[bool]uint8{true: f.Jt, false: f.Jf}[a&f.K != 0])
		case unix.BPF_RET | unix.BPF_K:
			return f.K
		default:
			t.Fatalf("instruction %d: unexpected opcode %#x", pc, f.Code)
		}
	}
	t.Fatal("filter fell off its end")
	return 0
}

func TestFilter(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("cases use amd64 numbering")
	}
	p, err := Filter()
	if err != nil {
		t.Fatal(err)
	}
	if len(p) > unix.BPF_MAXINSNS {
		t.Fatalf("filter has %d instructions, the kernel takes %d", len(p), unix.BPF_MAXINSNS)
	}
	arch, _ := auditArch()
	eperm := uint32(unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM))
	enosys := uint32(unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS))
	allow := uint32(unix.SECCOMP_RET_ALLOW)
	for _, c := range []struct {
		name string
		arch uint32
		nr   uint32
		arg0 uint64
		want uint32
	}{
		{"read", arch, unix.SYS_READ, 0, allow},
		{"openat", arch, unix.SYS_OPENAT, 0, allow},
		{"execve", arch, unix.SYS_EXECVE, 0, allow},
		{"chown", arch, unix.SYS_CHOWN, 0, allow},
		{"mknod of a FIFO is left to capabilities", arch, unix.SYS_MKNODAT, 0, allow},
		{"fork (clone without namespaces)", arch, unix.SYS_CLONE, uint64(unix.SIGCHLD), allow},
		{"thread (clone without namespaces)", arch, unix.SYS_CLONE, unix.CLONE_VM | unix.CLONE_THREAD | unix.CLONE_FS, allow},
		{"clone a user namespace", arch, unix.SYS_CLONE, unix.CLONE_NEWUSER | uint64(unix.SIGCHLD), eperm},
		{"clone a mount namespace", arch, unix.SYS_CLONE, unix.CLONE_NEWNS, eperm},
		{"clone3 falls back to clone", arch, unix.SYS_CLONE3, 0, enosys},
		{"chroot", arch, unix.SYS_CHROOT, 0, eperm},
		{"mount", arch, unix.SYS_MOUNT, 0, eperm},
		{"pivot_root", arch, unix.SYS_PIVOT_ROOT, 0, eperm},
		{"unshare", arch, unix.SYS_UNSHARE, 0, eperm},
		{"setns", arch, unix.SYS_SETNS, 0, eperm},
		{"open_tree", arch, unix.SYS_OPEN_TREE, 0, eperm},
		{"open_by_handle_at", arch, unix.SYS_OPEN_BY_HANDLE_AT, 0, eperm},
		{"ptrace", arch, unix.SYS_PTRACE, 0, eperm},
		{"init_module", arch, unix.SYS_INIT_MODULE, 0, eperm},
		{"bpf", arch, unix.SYS_BPF, 0, eperm},
		{"io_uring_setup", arch, unix.SYS_IO_URING_SETUP, 0, eperm},
		{"keyctl", arch, unix.SYS_KEYCTL, 0, eperm},
		{"x32 read", arch, 0x40000000 | unix.SYS_READ, 0, eperm},
		{"i386 call", 0x40000003, unix.SYS_READ, 0, uint32(unix.SECCOMP_RET_KILL_PROCESS)},
	} {
		if got := interpret(t, p, c.arch, c.nr, c.arg0); got != c.want {
			t.Errorf("%s: filter returns %#x, want %#x", c.name, got, c.want)
		}
	}
}

func TestEncode(t *testing.T) {
	b := encode([]unix.SockFilter{{Code: 0x15, Jt: 1, Jf: 2, K: 0x01020304}})
	if len(b) != 8 || binary.NativeEndian.Uint16(b) != 0x15 || b[2] != 1 || b[3] != 2 || binary.NativeEndian.Uint32(b[4:]) != 0x01020304 {
		t.Fatalf("encode = % x", b)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		"/boot":              "/boot",
		`/mnt/with\040space`: "/mnt/with space",
		`/a\134b`:            `/a\b`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

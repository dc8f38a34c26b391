package sandbox

import (
	"encoding/binary"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// denied are the system calls a guest's tool never needs and an escape
// would: mounting and pivoting (a way back to the host's tree), new
// namespaces, the keyring, BPF and perf, tracing other processes, kernel
// modules, kexec and reboot, the clock, swap, handles that open files by
// inode (open_by_handle_at reaches past any mount), io_uring (whose requests
// seccomp never sees) and userfaultfd (a common exploit primitive). They fail
// with EPERM, as they would for an unprivileged user, so the tool sees an
// ordinary error instead of dying.
var denied = []uintptr{
	unix.SYS_MOUNT, unix.SYS_UMOUNT2, unix.SYS_PIVOT_ROOT, unix.SYS_CHROOT,
	unix.SYS_MOVE_MOUNT, unix.SYS_OPEN_TREE, unix.SYS_FSOPEN, unix.SYS_FSCONFIG,
	unix.SYS_FSMOUNT, unix.SYS_FSPICK, unix.SYS_MOUNT_SETATTR,
	unix.SYS_UNSHARE, unix.SYS_SETNS,
	unix.SYS_KEYCTL, unix.SYS_ADD_KEY, unix.SYS_REQUEST_KEY,
	unix.SYS_BPF, unix.SYS_PERF_EVENT_OPEN, unix.SYS_USERFAULTFD,
	unix.SYS_PTRACE, unix.SYS_PROCESS_VM_READV, unix.SYS_PROCESS_VM_WRITEV,
	unix.SYS_KEXEC_LOAD, unix.SYS_KEXEC_FILE_LOAD, unix.SYS_REBOOT,
	unix.SYS_INIT_MODULE, unix.SYS_FINIT_MODULE, unix.SYS_DELETE_MODULE,
	unix.SYS_SWAPON, unix.SYS_SWAPOFF, unix.SYS_SYSLOG, unix.SYS_ACCT,
	unix.SYS_SETTIMEOFDAY, unix.SYS_CLOCK_SETTIME, unix.SYS_CLOCK_ADJTIME, unix.SYS_ADJTIMEX,
	unix.SYS_OPEN_BY_HANDLE_AT, unix.SYS_NAME_TO_HANDLE_AT,
	unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_ENTER, unix.SYS_IO_URING_REGISTER,
	unix.SYS_QUOTACTL, unix.SYS_VHANGUP, unix.SYS_PERSONALITY,
}

// newNamespaces are clone(2) flags that would make a namespace; together
// with unshare and setns they keep the tool in the namespaces it was given.
const newNamespaces = unix.CLONE_NEWNS | unix.CLONE_NEWUSER | unix.CLONE_NEWPID |
	unix.CLONE_NEWNET | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWCGROUP

// seccomp_data offsets.
const (
	offNr   = 0
	offArch = 4
	offArg0 = 16 // low 32 bits on little-endian machines
)

// auditArch is the AUDIT_ARCH_* value of the machine's native system calls;
// a filter for another architecture's numbering would be worthless.
func auditArch() (uint32, error) {
	switch runtime.GOARCH {
	case "amd64":
		return 0xC000003E, nil
	case "arm64":
		return 0xC00000B7, nil
	}
	return 0, fmt.Errorf("no seccomp filter for %s", runtime.GOARCH)
}

// Filter is the classic BPF program bwrap installs (--seccomp FD) before it
// runs the guest's tool. Anything not denied is allowed: the tools FIX runs
// (update-initramfs, dracut, dpkg, rpm and their shell scripts) use most of
// the rest, and the user namespace, dropped capabilities and the detached
// host root are the boundary; the filter shrinks the kernel surface a tool
// can reach.
func Filter() ([]unix.SockFilter, error) {
	arch, err := auditArch()
	if err != nil {
		return nil, err
	}
	const (
		ld   = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jge  = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
		jset = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
		ret  = unix.BPF_RET | unix.BPF_K
	)
	eperm := uint32(unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM))
	enosys := uint32(unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS))
	kill := uint32(unix.SECCOMP_RET_KILL_PROCESS)
	allow := uint32(unix.SECCOMP_RET_ALLOW)

	p := []unix.SockFilter{
		{Code: ld, K: offArch},
		{Code: jeq, Jt: 1, K: arch},
		{Code: ret, K: kill},
		{Code: ld, K: offNr},
	}
	if runtime.GOARCH == "amd64" {
		// The x32 ABI numbers its calls from 0x40000000: the same calls
		// under other numbers, so none of them is allowed.
		p = append(p, unix.SockFilter{Code: jge, Jf: 1, K: 0x40000000}, unix.SockFilter{Code: ret, K: eperm})
	}
	for _, nr := range denied {
		p = append(p, unix.SockFilter{Code: jeq, Jf: 1, K: uint32(nr)}, unix.SockFilter{Code: ret, K: eperm})
	}
	// clone3 passes its flags in memory the filter cannot read: ENOSYS
	// makes the C library fall back to clone, whose flags it can.
	p = append(p,
		unix.SockFilter{Code: jeq, Jf: 1, K: unix.SYS_CLONE3},
		unix.SockFilter{Code: ret, K: enosys},
		unix.SockFilter{Code: jeq, Jf: 3, K: unix.SYS_CLONE},
		unix.SockFilter{Code: ld, K: offArg0},
		unix.SockFilter{Code: jset, Jf: 1, K: newNamespaces},
		unix.SockFilter{Code: ret, K: eperm},
		unix.SockFilter{Code: ret, K: allow},
	)
	return p, nil
}

// encode lays a program out as struct sock_filter[] in the machine's byte
// order, the form bwrap reads from its --seccomp descriptor.
func encode(p []unix.SockFilter) []byte {
	b := make([]byte, 0, 8*len(p))
	for _, f := range p {
		b = binary.NativeEndian.AppendUint16(b, f.Code)
		b = append(b, f.Jt, f.Jf)
		b = binary.NativeEndian.AppendUint32(b, f.K)
	}
	return b
}

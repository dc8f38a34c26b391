// Package boot boots a converted image under qemu-system on virtio disk and
// network with a serial console, and reports whether the guest reached its
// login prompt. It uses KVM when a probe shows KVM works and TCG otherwise.
package boot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options describes one boot test.
type Options struct {
	Image    string
	Format   string
	Firmware string        // bios | efi
	Timeout  time.Duration // default 300s
	Marker   string        // default "login:"
	Console  string        // file to keep the serial console log in, optional
	// Accel forces kvm or tcg; empty means probe KVM and fall back to TCG.
	Accel string
	// MemoryMB is the guest's memory, default 1024.
	MemoryMB int
	// FailMarkers end the test early as not booted when one appears first
	// (e.g. "Gave up waiting for root"), instead of waiting for Timeout.
	FailMarkers []string
	// ExtraDisks are the VM's other disks, attached after Image on
	// virtio-blk in order (vdb, vdc, ...), also with snapshot=on.
	ExtraDisks []Disk
	// Machine is "" (qemu's pc) or "q35": libvirt's layout of a q35 guest,
	// each device behind its own PCIe root port, the NIC first (bus 1, so
	// systemd names it enp1s0), then the disks.
	Machine string
	// Bus is how the disks are attached: virtio (the default), pvscsi
	// (VMware's paravirtual SCSI) or ide: the source VM's own controller,
	// to show that a guest boots before conversion.
	Bus string
	// NIC is the network card's model: virtio (the default) or vmxnet3;
	// MAC its address (default qemu's).
	NIC string
	MAC string
}

// Disk is a further disk of the guest.
type Disk struct {
	Image  string
	Format string
}

// Result is what a boot test saw.
type Result struct {
	Booted      bool    `json:"booted"`
	Accelerator string  `json:"accelerator"` // kvm | tcg
	Seconds     float64 `json:"seconds"`
	Marker      string  `json:"marker"`
	ConsoleTail string  `json:"console_tail,omitempty"`
	// KVMProbe says why KVM was or was not used.
	KVMProbe string `json:"kvm_probe,omitempty"`
	// FailedOn is the fail marker that ended the test, if any.
	FailedOn string `json:"failed_on,omitempty"`
}

// OVMF firmware files, Debian's ovmf package.
var ovmfCode = []string{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd"}

// Test boots o.Image and waits for o.Marker on the serial console. The image
// is opened with snapshot=on: the guest's writes go to a temporary file, so
// booting never changes the converted output. A guest that does not show
// the marker in time is Booted=false with a nil error; errors are for
// tests that could not run.
func Test(ctx context.Context, o Options) (*Result, error) {
	if o.Image == "" {
		return nil, errors.New("cannot boot: no image")
	}
	if _, err := os.Stat(o.Image); err != nil {
		return nil, fmt.Errorf("cannot boot %s: %w", o.Image, err)
	}
	if o.Format == "" {
		o.Format = "qcow2"
	}
	if o.Timeout <= 0 {
		o.Timeout = 300 * time.Second
	}
	if o.Marker == "" {
		o.Marker = "login:"
	}
	if o.MemoryMB <= 0 {
		o.MemoryMB = 1024
	}
	if o.Firmware == "" {
		o.Firmware = "bios"
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return nil, errors.New("cannot boot: qemu-system-x86_64 not found (install qemu-system-x86)")
	}
	res := &Result{Marker: o.Marker, Accelerator: o.Accel}
	if o.Accel == "" {
		res.Accelerator, res.KVMProbe = ProbeKVM(ctx, 20*time.Second)
	}
	dir, err := os.MkdirTemp("", "boot-test-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	args, err := machineArgs(o)
	if err != nil {
		return nil, err
	}
	if res.Accelerator != "kvm" {
		res.Accelerator = "tcg"
	}
	switch o.Firmware {
	case "bios":
	case "efi", "uefi":
		code := ""
		for _, c := range ovmfCode {
			if _, err := os.Stat(c); err == nil {
				code = c
				break
			}
		}
		if code == "" {
			return nil, errors.New("cannot boot with UEFI: no OVMF firmware (install ovmf)")
		}
		vars := filepath.Join(dir, "vars.fd")
		varsSrc := strings.Replace(code, "CODE", "VARS", 1)
		b, err := os.ReadFile(varsSrc)
		if err != nil {
			return nil, fmt.Errorf("cannot boot with UEFI: %w", err)
		}
		if err := os.WriteFile(vars, b, 0o600); err != nil {
			return nil, err
		}
		args = append(args, "-drive", "if=pflash,format=raw,readonly=on,file="+qemuEscape(code),
			"-drive", "if=pflash,format=raw,file="+qemuEscape(vars))
	default:
		return nil, fmt.Errorf("cannot boot: unknown firmware %q (want bios or efi)", o.Firmware)
	}

	var console io.Writer = io.Discard
	if o.Console != "" {
		f, err := os.OpenFile(o.Console, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("cannot create console log: %w", err)
		}
		defer f.Close()
		console = f
	}
	accelArgs := func(a string) []string {
		if a == "kvm" {
			return append(args[:len(args):len(args)], "-accel", "kvm", "-cpu", "host")
		}
		return append(args[:len(args):len(args)], "-accel", "tcg", "-cpu", "max")
	}
	bctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	start := time.Now()
	markers := append([]string{o.Marker}, o.FailMarkers...)
	seen, tailText, err := watch(bctx, qemu, accelArgs(res.Accelerator), markers, console)
	if err == nil && seen == "" && tailText == "" && res.Accelerator == "kvm" && o.Accel == "" && ctx.Err() == nil {
		// Not one byte on the console under KVM although the probe passed:
		// the KVM hang the probe exists for. Try again under TCG.
		res.KVMProbe += "; the guest printed nothing under KVM, retried under TCG"
		res.Accelerator = "tcg"
		cancel()
		bctx, cancel = context.WithTimeout(ctx, o.Timeout)
		defer cancel()
		start = time.Now()
		seen, tailText, err = watch(bctx, qemu, accelArgs("tcg"), markers, console)
	}
	res.Seconds = time.Since(start).Seconds()
	res.ConsoleTail = tailText
	if err != nil {
		return res, err
	}
	res.Booted = seen == o.Marker
	if seen != "" && !res.Booted {
		res.FailedOn = seen
	}
	if ctx.Err() != nil && !res.Booted {
		return res, ctx.Err()
	}
	return res, nil
}

// machineArgs is the qemu command line for o's machine, disks and NIC.
func machineArgs(o Options) ([]string, error) {
	args := []string{"-name", "hyper2kvm-boot-test", "-nodefaults", "-no-user-config",
		"-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
		"-m", fmt.Sprint(o.MemoryMB), "-smp", "1", "-netdev", "user,id=net0"}
	disks := append([]Disk{{Image: o.Image, Format: o.Format}}, o.ExtraDisks...)
	port := 0
	// bus returns the PCI bus option for the next device: its own root
	// port on q35, the root bus on pc.
	bus := func() string {
		if o.Machine != "q35" {
			return ""
		}
		port++
		args = append(args, "-device", fmt.Sprintf("pcie-root-port,id=rp%d,chassis=%d,bus=pcie.0,addr=0x%x", port, port, port+1))
		return fmt.Sprintf(",bus=rp%d", port)
	}
	switch o.Machine {
	case "":
	case "q35":
		args = append(args, "-machine", "q35")
	default:
		return nil, fmt.Errorf("cannot boot: unknown machine %q (want q35 or nothing)", o.Machine)
	}
	nic := "virtio-net-pci"
	switch o.NIC {
	case "", "virtio":
	case "vmxnet3":
		nic = "vmxnet3"
	default:
		return nil, fmt.Errorf("cannot boot: unknown NIC %q (want virtio or vmxnet3)", o.NIC)
	}
	mac := ""
	if o.MAC != "" {
		mac = ",mac=" + o.MAC
	}
	args = append(args, "-device", nic+",netdev=net0"+mac+bus())
	ctrl := ""
	switch o.Bus {
	case "", "virtio":
	case "pvscsi":
		ctrl = "scsi0.0"
		args = append(args, "-device", "pvscsi,id=scsi0"+bus())
	case "ide":
		if o.Machine == "q35" {
			return nil, errors.New("cannot boot: q35 has no IDE controller (use the pc machine)")
		}
	default:
		return nil, fmt.Errorf("cannot boot: unknown disk bus %q (want virtio, pvscsi or ide)", o.Bus)
	}
	for i, d := range disks {
		drive := fmt.Sprintf("file=%s,format=%s,snapshot=on,cache=unsafe", qemuEscape(d.Image), d.Format)
		switch o.Bus {
		case "pvscsi":
			args = append(args, "-drive", fmt.Sprintf("%s,if=none,id=d%d", drive, i),
				"-device", fmt.Sprintf("scsi-hd,drive=d%d,bus=%s,scsi-id=%d", i, ctrl, i))
		case "ide":
			args = append(args, "-drive", fmt.Sprintf("%s,if=ide,index=%d", drive, i))
		default:
			args = append(args, "-drive", fmt.Sprintf("%s,if=none,id=d%d", drive, i),
				"-device", fmt.Sprintf("virtio-blk-pci,drive=d%d%s", i, bus()))
		}
	}
	return args, nil
}

// qemuEscape doubles commas, qemu's option separator, in a file name.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// watch runs qemu until one of markers appears on its serial console (stdout),
// ctx ends, or qemu exits. It returns the marker seen ("" for none) and the
// console's tail.
func watch(ctx context.Context, qemu string, args, markers []string, console io.Writer) (string, string, error) {
	cmd := exec.Command(qemu, args...)
	cmd.Stdin = nil
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", "", err
	}
	if err := cmd.Start(); err != nil {
		return "", "", fmt.Errorf("cannot start qemu: %w", err)
	}
	var mu sync.Mutex
	var buf []byte
	found := make(chan string, 1)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		b := make([]byte, 4096)
		for {
			n, err := out.Read(b)
			if n > 0 {
				console.Write(b[:n])
				mu.Lock()
				buf = append(buf, b[:n]...)
				// Keep enough to match a marker split across reads.
				if len(buf) > 64<<10 {
					buf = append([]byte(nil), buf[len(buf)-32<<10:]...)
				}
				for _, m := range markers {
					if bytes.Contains(buf, []byte(m)) {
						select {
						case found <- m:
						default:
						}
					}
				}
				mu.Unlock()
			}
			if err != nil {
				return
			}
		}
	}()
	waitDone := make(chan error, 1)
	go func() {
		<-readDone
		waitDone <- cmd.Wait()
	}()
	seen := ""
	var werr error
	select {
	case seen = <-found:
	case <-ctx.Done():
	case werr = <-waitDone:
		// qemu ended by itself: a marker may still be in the last read.
		select {
		case seen = <-found:
		default:
		}
		if werr != nil && seen == "" && !strings.Contains(stderr.String(), "terminating") {
			mu.Lock()
			t := tail(buf)
			mu.Unlock()
			return "", t, fmt.Errorf("qemu failed: %v: %s", werr, strings.TrimSpace(stderr.String()))
		}
		mu.Lock()
		t := tail(buf)
		mu.Unlock()
		return seen, t, nil
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-waitDone
	mu.Lock()
	defer mu.Unlock()
	return seen, tail(buf), nil
}

func tail(b []byte) string {
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	return strings.ToValidUTF8(string(b), "?")
}

// ProbeKVM boots a Linux kernel of the host under KVM and returns "kvm" when
// it prints its banner within timeout, "tcg" otherwise, and why. /dev/kvm
// can exist and accept a VM whose guest then never runs (nested
// virtualization without the features a kernel needs); only running a
// kernel shows that.
func ProbeKVM(ctx context.Context, timeout time.Duration) (string, string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return "tcg", "no usable /dev/kvm: " + err.Error()
	}
	f.Close()
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Sort(sort.Reverse(sort.StringSlice(kernels)))
	if len(kernels) == 0 {
		return "tcg", "no host kernel in /boot to probe KVM with"
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "tcg", "qemu-system-x86_64 not found"
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	args := []string{"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-monitor", "none",
		"-no-reboot", "-m", "256", "-accel", "kvm", "-cpu", "host", "-kernel", kernels[0],
		"-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1 loglevel=7"}
	seen, _, err := watch(pctx, qemu, args, []string{"Linux version"}, io.Discard)
	if err != nil {
		return "tcg", "KVM probe failed: " + err.Error()
	}
	if seen == "" {
		return "tcg", fmt.Sprintf("KVM probe: %s printed nothing in %s under KVM", filepath.Base(kernels[0]), timeout)
	}
	return "kvm", "KVM probe: " + filepath.Base(kernels[0]) + " started under KVM"
}

package inspect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/guest"
	"github.com/hyper2kvm/hyper2kvm/agent/hive"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// maxHive bounds a hive INSPECT reads into memory; SOFTWARE hives of
// long-lived servers reach a few hundred MiB.
const maxHive = 384 << 20

// virtioServices are virtio-win's driver services; viostor and vioscsi
// are the boot-critical ones.
var virtioServices = []string{"viostor", "vioscsi", "netkvm", "vioser", "balloon", "viorng", "vioinput", "pvpanic", "fwcfg"}

// vmwareServices are the services VMware Tools installs.
var vmwareServices = []string{"VMTools", "vmci", "vmxnet3ndis6", "pvscsi", "vm3dmp", "vmhgfs", "vmmouse", "vmvss", "VGAuthService"}

// WindowsFromHives reads what INSPECT reports of a Windows guest from its
// SOFTWARE and SYSTEM hives (either may be nil when missing). Blockers
// found in the registry (Fast Startup, pending updates) are added; those
// that need the volume (hiberfil.sys, BitLocker, dynamic disks) are the
// caller's.
func WindowsFromHives(software, system []byte) (*report.Windows, error) {
	w := &report.Windows{}
	if software == nil {
		return nil, errors.New("no SOFTWARE hive")
	}
	sw, err := hive.Open(software)
	if err != nil {
		return nil, fmt.Errorf("SOFTWARE: %w", err)
	}
	cv, err := sw.Lookup(`Microsoft\Windows NT\CurrentVersion`)
	if err != nil {
		return nil, fmt.Errorf(`SOFTWARE: %w`, err)
	}
	w.ProductName = str(cv, "ProductName")
	w.Edition = str(cv, "EditionID")
	w.DisplayVersion = str(cv, "DisplayVersion")
	if w.DisplayVersion == "" {
		w.DisplayVersion = str(cv, "ReleaseId")
	}
	if maj, ok := num(cv, "CurrentMajorVersionNumber"); ok {
		minor, _ := num(cv, "CurrentMinorVersionNumber")
		w.Version = fmt.Sprintf("%d.%d", maj, minor)
	} else {
		w.Version = str(cv, "CurrentVersion")
	}
	w.Build = str(cv, "CurrentBuild")
	if w.Build == "" {
		w.Build = str(cv, "CurrentBuildNumber")
	}
	if ubr, ok := num(cv, "UBR"); ok && w.Build != "" {
		w.Build += "." + strconv.FormatUint(ubr, 10)
	}
	w.SystemRoot = str(cv, "SystemRoot")
	if w.SystemRoot == "" {
		w.SystemRoot = str(cv, "PathName")
	}
	switch it := str(cv, "InstallationType"); {
	case strings.Contains(it, "Server"):
		w.Installation = "Server"
	case it != "":
		w.Installation = "Client"
	case strings.Contains(w.ProductName, "Server"):
		w.Installation = "Server"
	case w.ProductName != "":
		w.Installation = "Client"
	}
	for _, k := range []string{`VMware, Inc.\VMware Tools`, `Wow6432Node\VMware, Inc.\VMware Tools`} {
		if _, err := sw.Lookup(k); err == nil {
			w.VMwareTools = append(w.VMwareTools, `SOFTWARE\`+k)
		}
	}
	for _, k := range []string{`Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending`,
		`Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired`} {
		if _, err := sw.Lookup(k); err == nil {
			w.Blockers = append(w.Blockers, report.Blocker{Kind: "pending-updates",
				Reason: `Windows has updates waiting for a restart (SOFTWARE\` + k + `)`,
				Action: "in the source VM, restart Windows until Windows Update shows no pending restart, then shut it down and export it again"})
			break
		}
	}
	if system == nil {
		return w, errors.New("no SYSTEM hive")
	}
	sy, err := hive.Open(system)
	if err != nil {
		return w, fmt.Errorf("SYSTEM: %w", err)
	}
	cs := "ControlSet001"
	if sel, err := sy.Lookup("Select"); err == nil {
		if n, ok := num(sel, "Current"); ok && n > 0 && n < 1000 {
			cs = fmt.Sprintf("ControlSet%03d", n)
		}
	}
	if _, err := sy.Lookup(cs); err != nil {
		return w, fmt.Errorf("SYSTEM: the current control set: %w", err)
	}
	w.ControlSet = cs
	if k, err := sy.Lookup(cs + `\Control\ComputerName\ComputerName`); err == nil {
		w.Hostname = str(k, "ComputerName")
	}
	if k, err := sy.Lookup(cs + `\Services\Tcpip\Parameters`); err == nil && w.Hostname == "" {
		w.Hostname = str(k, "Hostname")
	}
	if k, err := sy.Lookup(cs + `\Control\Session Manager\Environment`); err == nil {
		switch a := strings.ToUpper(str(k, "PROCESSOR_ARCHITECTURE")); a {
		case "AMD64":
			w.Arch = "x86_64"
		case "X86":
			w.Arch = "i386"
		case "ARM64":
			w.Arch = "aarch64"
		default:
			w.Arch = strings.ToLower(a)
		}
	}
	for _, s := range virtioServices {
		if _, err := sy.Lookup(cs + `\Services\` + s); err == nil {
			w.VirtioDrivers = append(w.VirtioDrivers, s)
		}
	}
	for _, s := range vmwareServices {
		if _, err := sy.Lookup(cs + `\Services\` + s); err == nil {
			w.VMwareTools = append(w.VMwareTools, "service:"+s)
		}
	}
	if k, err := sy.Lookup(cs + `\Control\Session Manager\Power`); err == nil {
		if n, ok := num(k, "HiberbootEnabled"); ok && n != 0 {
			w.Blockers = append(w.Blockers, report.Blocker{Kind: "fast-startup",
				Reason: `Fast Startup is on (SYSTEM\` + cs + `\Control\Session Manager\Power HiberbootEnabled=1): "shut down" leaves the system volume hibernated, not closed`,
				Action: "in the source VM, as Administrator run `powercfg /h off` (turns off hibernation and Fast Startup), then `shutdown /s /t 0`, and export the VM again"})
		}
	}
	if k, err := sy.Lookup(cs + `\Control\Session Manager`); err == nil {
		if v, err := k.Value("PendingFileRenameOperations"); err == nil {
			if ss, _ := v.Strings(); len(ss) > 0 {
				w.Notes = append(w.Notes, fmt.Sprintf("%d file operations wait for the next boot (PendingFileRenameOperations)", len(ss)/2))
			}
		}
	}
	w.NICs = staticNICs(sy, cs)
	return w, nil
}

// staticNICs reads the interfaces with DHCP off and an address.
func staticNICs(sy *hive.Hive, cs string) []report.WindowsNIC {
	k, err := sy.Lookup(cs + `\Services\Tcpip\Parameters\Interfaces`)
	if err != nil {
		return nil
	}
	subs, _ := k.Subkeys()
	var out []report.WindowsNIC
	for _, s := range subs {
		if n, ok := num(s, "EnableDHCP"); !ok || n != 0 {
			continue
		}
		nic := report.WindowsNIC{ID: s.Name, Addresses: strs(s, "IPAddress"), Gateways: strs(s, "DefaultGateway")}
		var addrs []string
		for _, a := range nic.Addresses {
			if a != "" && a != "0.0.0.0" {
				addrs = append(addrs, a)
			}
		}
		if len(addrs) == 0 {
			continue
		}
		nic.Addresses = addrs
		for _, m := range strs(s, "SubnetMask") {
			nic.Prefix = append(nic.Prefix, maskLen(m))
		}
		nic.DNS = strings.FieldsFunc(str(s, "NameServer"), func(r rune) bool { return r == ',' || r == ' ' })
		out = append(out, nic)
	}
	return out
}

// maskLen is a dotted IPv4 mask's prefix length; -1 for a bad mask.
func maskLen(m string) int {
	parts := strings.Split(m, ".")
	if len(parts) != 4 {
		return -1
	}
	n, zero := 0, false
	for _, p := range parts {
		b, err := strconv.Atoi(p)
		if err != nil || b < 0 || b > 255 {
			return -1
		}
		for bit := 7; bit >= 0; bit-- {
			if b&(1<<bit) != 0 {
				if zero {
					return -1
				}
				n++
			} else {
				zero = true
			}
		}
	}
	return n
}

func str(k hive.Key, name string) string {
	v, err := k.Value(name)
	if err != nil {
		return ""
	}
	s, _ := v.String()
	return strings.TrimSpace(s)
}

func strs(k hive.Key, name string) []string {
	v, err := k.Value(name)
	if err != nil {
		return nil
	}
	ss, _ := v.Strings()
	return ss
}

func num(k hive.Key, name string) (uint64, bool) {
	v, err := k.Value(name)
	if err != nil {
		return 0, false
	}
	n, err := v.Uint()
	return n, err == nil
}

// volumeBlockers are the blockers the partitions show: BitLocker volumes
// and dynamic disks.
func volumeBlockers(g *report.Guest) []report.Blocker {
	var out []report.Blocker
	for _, p := range g.Partitions {
		switch {
		case p.FSType == "BitLocker":
			out = append(out, report.Blocker{Kind: "bitlocker",
				Reason: devOf(p) + " is BitLocker-encrypted: its files cannot be read or adapted",
				Action: "in the source VM, as Administrator run `manage-bde -off C:` for every encrypted volume (the letter of each), wait until `manage-bde -status` says Fully Decrypted, then shut down and export again"})
		case p.Type == "windows-ldm":
			out = append(out, report.Blocker{Kind: "dynamic-disk",
				Reason: "disk " + strconv.Itoa(p.Disk+1) + " is a Windows dynamic disk (LDM partition " + devOf(p) + ")",
				Action: "in the source VM, move the volumes to basic disks (Disk Management cannot convert a dynamic disk with volumes back in place: back up, delete the volumes, `Convert to Basic Disk`, restore), then export again"})
		}
	}
	return out
}

// isWindowsGuest: Windows filesystems and no Linux one.
func isWindowsGuest(g *report.Guest) bool {
	if hasLinuxFS(g) {
		return false
	}
	for _, p := range g.Partitions {
		if p.FSType == "ntfs" || p.FSType == "BitLocker" || p.Type == "windows-ldm" {
			return true
		}
	}
	return false
}

// inspectWindows finds the NTFS filesystem holding the Windows directory
// (Windows\System32\config\SOFTWARE, names matched without case, as
// Windows does) on the VM's disks and reads the registry there. Nothing is
// written: the session works on a throwaway overlay.
func inspectWindows(ctx context.Context, imgs []Image, backend string, g *report.Guest) error {
	g.OS = &report.OS{Type: "windows", ID: "windows"}
	blockers := volumeBlockers(g)
	var firstErr error
	for _, p := range g.Partitions {
		if p.FSType != "ntfs" || p.LV != "" || p.Disk >= len(imgs) {
			continue
		}
		w, err := windowsOn(ctx, imgs[p.Disk], backend, p)
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %w", devOf(p), err)
			}
			continue
		}
		if w == nil {
			continue
		}
		w.Volume = devOf(p)
		w.Blockers = append(blockers, w.Blockers...)
		g.Windows = w
		g.Root = devOf(p)
		g.OS.VersionID, g.OS.Pretty = w.Version, w.ProductName
		g.VMwareTools = w.VMwareTools
		return nil
	}
	if len(blockers) > 0 {
		// What blocks explains why no registry was found (an encrypted
		// system volume): the job fails on the blockers.
		g.Windows = &report.Windows{Blockers: blockers}
		return nil
	}
	if firstErr != nil {
		return fmt.Errorf("cannot read the Windows registry: %w", firstErr)
	}
	// NTFS without a Windows directory: data disks, as a Linux-less ext4
	// disk would be ("no operating system" and what to do, in FIX).
	g.OS = &report.OS{Type: "unknown"}
	return nil
}

// windowsOn reads the registry on one NTFS filesystem; nil, nil when it
// holds no Windows directory.
func windowsOn(ctx context.Context, img Image, backend string, p report.Partition) (*report.Windows, error) {
	s, err := guest.Open(ctx, backend, guest.Image{Path: img.Path, Format: img.Format}, guest.Options{})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	m := mountOf(p, "/", true)
	if err := s.Mount(ctx, m); err != nil {
		return nil, fmt.Errorf("%w (the native backend mounts NTFS with ntfs-3g: install it, or use fix.backend guestfs)", err)
	}
	config, ok := findCI(ctx, s, "Windows", "System32", "config")
	if !ok {
		return nil, nil
	}
	read := func(name string) ([]byte, error) {
		f, ok := findCI(ctx, s, strings.TrimPrefix(config, "/"), name)
		if !ok {
			return nil, nil
		}
		return guest.ReadFileLimit(ctx, s, f, maxHive)
	}
	sw, err := read("SOFTWARE")
	if err != nil {
		return nil, err
	}
	if sw == nil {
		return nil, nil
	}
	sy, err := read("SYSTEM")
	if err != nil {
		return nil, err
	}
	w, err := WindowsFromHives(sw, sy)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", config, err)
	}
	// hiberfil.sys starting "hibr" (or "wake") holds a hibernated system:
	// the volume was not closed and Windows will resume from it.
	if f, ok := findCI(ctx, s, "hiberfil.sys"); ok {
		head, err := guest.ReadHead(ctx, s, f, 4)
		sig := strings.ToLower(string(head))
		switch {
		case err == nil && (sig == "hibr" || sig == "wake"):
			w.Blockers = append(w.Blockers, report.Blocker{Kind: "hibernated",
				Reason: "Windows is hibernated (hiberfil.sys starts with " + strconv.Quote(string(head)) + "): the system volume holds a suspended session, not a closed filesystem",
				Action: "in the source VM, start Windows, then as Administrator run `powercfg /h off` and `shutdown /s /t 0`, and export the VM again"})
		case err != nil:
			if ctx.Err() != nil {
				return nil, err
			}
			w.Notes = append(w.Notes, "hiberfil.sys could not be read to tell whether Windows is hibernated: "+err.Error())
		default:
			if !hasBlocker(w, "fast-startup") {
				w.Notes = append(w.Notes, "hiberfil.sys is present but holds no hibernated system")
			}
		}
	} else {
		// Fast Startup needs a hibernation file; without one it did not
		// hibernate at the last shutdown.
		for i, b := range w.Blockers {
			if b.Kind == "fast-startup" {
				w.Blockers = append(w.Blockers[:i], w.Blockers[i+1:]...)
				w.Notes = append(w.Notes, "Fast Startup is set (HiberbootEnabled=1) but there is no hiberfil.sys: the last shutdown was complete")
				break
			}
		}
	}
	return w, nil
}

func hasBlocker(w *report.Windows, kind string) bool {
	for _, b := range w.Blockers {
		if b.Kind == kind {
			return true
		}
	}
	return false
}

// findCI finds a path below the root by its components, each matched
// without case (NTFS through ntfs-3g is case-sensitive, Windows is not).
func findCI(ctx context.Context, s guest.Session, parts ...string) (string, bool) {
	cur := "/"
	for _, want := range parts {
		for _, w := range strings.Split(want, "/") {
			ents, err := s.ReadDir(ctx, cur)
			if err != nil {
				return "", false
			}
			names := make([]string, 0, len(ents))
			for _, e := range ents {
				names = append(names, e.Name)
			}
			sort.Strings(names) // the exact case first when both exist
			found := ""
			for _, n := range names {
				if n == w {
					found = n
					break
				}
				if found == "" && strings.EqualFold(n, w) {
					found = n
				}
			}
			if found == "" {
				return "", false
			}
			cur = path.Join(cur, found)
		}
	}
	return cur, true
}

// Blocked is the error INSPECT returns for a guest with blockers: every
// reason and what to do in the source VM.
func Blocked(w *report.Windows) error {
	if w == nil || len(w.Blockers) == 0 {
		return nil
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "the Windows guest cannot be converted safely as it is (%d blocker", len(w.Blockers))
	if len(w.Blockers) > 1 {
		b.WriteString("s")
	}
	b.WriteString("):")
	for _, x := range w.Blockers {
		fmt.Fprintf(&b, " [%s] %s; what to do: %s.", x.Kind, x.Reason, x.Action)
	}
	return errors.New(strings.TrimSuffix(b.String(), "."))
}

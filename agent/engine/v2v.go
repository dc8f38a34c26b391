package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/fix"
	"github.com/hyper2kvm/hyper2kvm/agent/inspect"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
	"github.com/hyper2kvm/hyper2kvm/agent/v2v"
)

// BackendV2V is fix.backend "virt-v2v": FIX runs virt-v2v-in-place on
// the overlay. It is a FIX backend only: INSPECT reads the guest through
// native or guestfs, as for auto.
const BackendV2V = "virt-v2v"

// VirtioWinHelp says what to do when fix.virtio_win is missing.
const VirtioWinHelp = "download virtio-win.iso (the Fedora project's virtio-win drivers; Debian does not package them), " +
	"set fix.virtio_win in /etc/hyper2kvm/agent.yaml to it or to the directory it unpacks to " +
	"(for example /usr/share/virtio-win/virtio-win.iso), or set pipeline.fix.enabled=false in the manifest " +
	"to convert the disk as it is (domain.xml then uses SATA and e1000e, and the guest needs the virtio drivers before it can use virtio)"

// accessBackend is the guest-access backend INSPECT uses for the FIX
// backend b.
func accessBackend(b string) string {
	if b == BackendV2V {
		return "auto"
	}
	return b
}

// windowsPreflight decides, once INSPECT found a Windows guest, how FIX
// will adapt it, and fails before anything is written when it cannot:
// virt-v2v-in-place must be installed and fix.virtio_win point at
// virtio-win. asked is the FIX backend the manifest or agent named.
func (r *runner) windowsPreflight(asked string, res map[string]any) error {
	if !manifest.Bool(r.p.Fix.Enabled) || !r.p.Fix.AnyEnabled() {
		res["windows_fix"] = "none: pipeline.fix is off, the disk is converted as it is (domain.xml: SATA and e1000e)"
		return nil
	}
	switch asked {
	case "", "auto", BackendV2V:
	default:
		return fmt.Errorf("fix.backend %q cannot adapt a Windows guest: use virt-v2v (or auto, which takes it for Windows), or set pipeline.fix.enabled=false to convert the disk as it is", asked)
	}
	if !v2v.Installed() {
		return fmt.Errorf("a Windows guest is adapted to KVM by %s, which is not installed: install Debian's virt-v2v and nbdkit packages, or set pipeline.fix.enabled=false to convert the disk as it is", v2v.Tool)
	}
	if err := v2v.CheckVirtioWin(r.o.VirtioWin); err != nil {
		return fmt.Errorf("a Windows guest needs the virtio-win drivers to boot on virtio, and fix.virtio_win is %v: %s", err, VirtioWinHelp)
	}
	if !v2v.Firstboot() {
		r.warn("%s", v2v.FirstbootHelp())
	}
	r.backend = BackendV2V
	res["backend"] = BackendV2V
	res["backend_reason"] = "virt-v2v: Windows guests are adapted by virt-v2v-in-place with virtio-win from " + r.o.VirtioWin
	return nil
}

// fixV2V is FIX with virt-v2v-in-place on a qcow2 overlay of the disk
// holding the guest's system.
func (r *runner) fixV2V(set func(any), g *report.Guest) error {
	d, overlay, err := r.rootOverlay(g, "system")
	if err != nil {
		return err
	}
	res := map[string]any{"backend": BackendV2V, "overlay": overlay}
	set(res)
	o := v2v.Options{Image: overlay, Format: "qcow2", WorkDir: r.workDir,
		Progress: func(pct int, msg string) { r.progress("fix", pct, 0, 0, "virt-v2v: "+msg) },
		// The worker's stderr is the job's journal.
		Log: func(line string) { fmt.Fprintln(os.Stderr, "virt-v2v-in-place: "+line) },
	}
	if g.OS != nil && g.OS.Type == "windows" {
		o.VirtioWin = r.o.VirtioWin
		if g.Windows != nil {
			ips, note := matchStaticIPs(g.Windows.NICs, r.vmMACs())
			if len(ips) > 0 && !v2v.Firstboot() {
				// virt-v2v fails outright when it cannot install the
				// script that sets them: convert without them, and say so.
				note = "the static addresses were not carried over (set them again after the first boot): " + v2v.FirstbootHelp()
				ips = nil
			}
			o.StaticIPs = ips
			if note != "" {
				r.warn("%s", note)
			}
			for _, ip := range ips {
				res["static_ips"] = ips
				r.rep.Changes = append(r.rep.Changes, report.Change{Fix: BackendV2V, File: d.display,
					Note: fmt.Sprintf("static address %s/%d (gateway %s, DNS %s) carried over to the NIC with MAC %s (--mac)",
						ip.Address, ip.Prefix, ip.Gateway, strings.Join(ip.DNS, " "), ip.MAC)})
			}
		}
	}
	r.progress("fix", 1, 0, 0, "virt-v2v-in-place on "+filepath.Base(overlay))
	out, err := v2v.Run(r.ctx, o)
	res["virt_v2v"] = out
	for _, m := range out.Messages {
		switch m.Type {
		case "message", "info":
			r.rep.Changes = append(r.rep.Changes, report.Change{Fix: BackendV2V, File: d.display, Note: m.Message})
		case "warning":
			r.rep.Changes = append(r.rep.Changes, report.Change{Fix: BackendV2V, File: d.display, Note: "warning: " + m.Message})
			r.warn("virt-v2v: %s", m.Message)
		}
	}
	if err != nil {
		return fmt.Errorf("cannot adapt the guest with virt-v2v: %w", err)
	}
	if out.Converted != "" {
		res["converted"] = out.Converted
	}
	if g.OS != nil && g.OS.Type == "linux" {
		// virt-v2v renames sda to vda in fstab but keeps a grub.cfg it
		// cannot regenerate ("could not determine a way to update the
		// configuration of Grub2") with root=/dev/sda1, which virtio
		// never has: our fstab, grub and network fixes give the guest
		// stable names as they would with native. The initramfs and
		// VMware Tools are virt-v2v's, already done.
		after := *r.p.Fix
		off := false
		after.Backend = g.Backend
		after.Initramfs = &manifest.InitramfsFix{Enabled: &off}
		after.VMwareTools = &manifest.Toggle{Enabled: &off}
		r.progress("fix", 95, 0, 0, "stable names after virt-v2v")
		changes, err := fix.Apply(r.ctx, inspect.Image{Path: overlay, Format: "qcow2"}, g.Backend, &after, g)
		r.rep.Changes = append(r.rep.Changes, changes...)
		res["after_virt_v2v"] = map[string]any{"backend": g.Backend, "changes": len(changes)}
		if err != nil {
			return fmt.Errorf("cannot apply fixes after virt-v2v: %w", err)
		}
	}
	if len(out.Warnings()) > 0 {
		res["note"] = "virt-v2v converted the guest with warnings: " + strings.Join(out.Warnings(), "; ")
	}
	d.src, d.srcFormat = overlay, "qcow2"
	r.fixed = true
	return nil
}

// matchStaticIPs pairs the guest's static interfaces with the VM's NIC
// MACs for virt-v2v's --mac. The registry does not hold an interface's
// MAC (that lives in the adapter's PnP instance), so only the sure case is
// matched: one static interface and one NIC with a MAC. Otherwise the
// returned note says why nothing was carried over.
func matchStaticIPs(nics []report.WindowsNIC, macs []string) ([]v2v.StaticIP, string) {
	if len(nics) == 0 {
		return nil, ""
	}
	if len(nics) != 1 || len(macs) != 1 {
		return nil, fmt.Sprintf("the guest has %d interface(s) with a static address and the VM %d NIC(s) with a MAC: they cannot be matched from the registry, so the static addresses were not carried over; set them again on the virtio NICs after the first boot", len(nics), len(macs))
	}
	n := nics[0]
	ip := v2v.StaticIP{MAC: macs[0], Address: n.Addresses[0], DNS: n.DNS}
	if len(n.Gateways) > 0 {
		ip.Gateway = n.Gateways[0]
	}
	if len(n.Prefix) > 0 && n.Prefix[0] > 0 {
		ip.Prefix = n.Prefix[0]
	}
	note := ""
	if len(n.Addresses) > 1 {
		note = fmt.Sprintf("only the first of the interface's %d static addresses (%s) was carried over; add %s again after the first boot",
			len(n.Addresses), n.Addresses[0], strings.Join(n.Addresses[1:], ", "))
	}
	return []v2v.StaticIP{ip}, note
}

// vmMACs are the MACs of the VM's NICs the OVF gives.
func (r *runner) vmMACs() []string {
	var macs []string
	if r.ovf != nil {
		for _, n := range r.ovf.NICs {
			if n.MAC != "" {
				macs = append(macs, n.MAC)
			}
		}
	}
	return macs
}

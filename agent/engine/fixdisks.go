package engine

import (
	"path/filepath"

	"github.com/hyper2kvm/hyper2kvm/agent/inspect"
	"github.com/hyper2kvm/hyper2kvm/agent/qemuimg"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// spanOverlays gives FIX the VM's other disks when the guest's root (or its
// /boot, /usr, /var) is an md array or an LV spanning several disks
// (inspect.WriteDisks): others[i] is disk i, a writable qcow2 overlay in the
// work directory for each disk FIX writes besides the root's, the source
// for the rest (the guestfs appliance attaches those behind a private
// overlay, so it assembles what INSPECT saw). written maps each disk
// overlaid to its overlay, for CONVERT. For a root on one disk it returns
// nothing: FIX then writes the root's overlay alone, as always.
func (r *runner) spanOverlays(g *report.Guest) (others []inspect.Image, written map[*disk]string, err error) {
	ws := inspect.WriteDisks(g)
	if len(ws) < 2 {
		return nil, nil, nil
	}
	writes := map[int]bool{}
	for _, i := range ws[1:] {
		writes[i] = true
	}
	written = map[*disk]string{}
	for i, d := range r.disks {
		if !writes[i] {
			others = append(others, inspect.Image{Path: d.path, Format: d.format, Name: d.display})
			continue
		}
		ov := filepath.Join(r.workDir, d.id+"-overlay.qcow2")
		if err := qemuimg.CreateOverlay(r.ctx, d.path, d.format, ov); err != nil {
			return nil, nil, err
		}
		written[d] = ov
		others = append(others, inspect.Image{Path: ov, Format: "qcow2", Name: d.display, Writable: true})
	}
	return others, written, nil
}

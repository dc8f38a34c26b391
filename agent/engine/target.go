package engine

// The job's target: which bridge or libvirt network each source NIC goes
// to (with its MAC), the domain's UUID, firmware and display, and, when
// pipeline.target.libvirt asks, the domain defined in libvirt with its
// disks placed in a pool. Everything that can refuse the job (an
// unmapped network, a domain or volume already there, a missing pool or
// network) refuses it in LOAD, before anything is converted.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"libvirt.org/go/libvirtxml"

	"github.com/hyper2kvm/hyper2kvm/agent/inspect"
	"github.com/hyper2kvm/hyper2kvm/agent/libvirtd"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// targetPlan is the target as LOAD settled it.
type targetPlan struct {
	t    *manifest.Target // the manifest's merged with agent.yaml's
	uuid string
	nics []report.TargetNIC
}

// libvirt says whether the job talks to libvirt after VALIDATE.
func (p targetPlan) libvirt() bool {
	return p.t != nil && p.t.Libvirt != nil && (p.t.Libvirt.Defines() || p.pool() != "")
}

// pool is the storage pool the disks go into, "" for none.
func (p targetPlan) pool() string {
	if p.t == nil || p.t.Storage == nil {
		return ""
	}
	return p.t.Storage.Pool
}

// graphics is the display asked for: vnc unless the target says.
func (p targetPlan) graphics() string {
	if p.t == nil {
		return "vnc"
	}
	switch g := p.t.Graphics; g {
	case "":
		return "vnc"
	case "none":
		return ""
	default:
		return g
	}
}

// planTarget settles the target at the end of LOAD.
func (r *runner) planTarget() error {
	own := r.p.Target
	if own != nil && own.Libvirt != nil && r.o.SourceUID > 0 && !r.o.LibvirtForUsers {
		return errors.New("pipeline.target.libvirt: only root's manifests may define domains in libvirt unless agent.yaml sets libvirt_for_users: true; remove target.libvirt to get the domain XML only")
	}
	t := own.WithDefaults(r.o.Target)
	if t == nil {
		t = &manifest.Target{}
	}
	if ps := manifest.ValidateTarget("pipeline.target", t); len(ps) > 0 {
		return fmt.Errorf("invalid target (the manifest's with agent.yaml's): %w", ps)
	}
	if t.Storage != nil && t.Storage.Pool != "" && t.Libvirt == nil {
		return errors.New("pipeline.target.storage.pool: the disks go into a pool through libvirt; set pipeline.target.libvirt (or agent.yaml's target.libvirt)")
	}
	uuid, err := newUUID()
	if err != nil {
		return err
	}
	r.tgt = targetPlan{t: t, uuid: uuid}
	if err := r.planNICs(); err != nil {
		return err
	}
	if t.KubeVirt != nil && r.outDir != "" {
		name := manifest.KubeVirtFile(r.vm.Name)
		if _, err := os.Lstat(filepath.Join(r.outDir, name)); err == nil {
			return fmt.Errorf("output %s exists; not overwriting (remove it or choose another output directory)", filepath.Join(r.outShow, name))
		}
	}
	if !r.tgt.libvirt() {
		return nil
	}
	return r.checkLibvirt()
}

// planNICs maps every source NIC to its bridge or network: the OVF's NICs
// in order, or one NIC for a source without an OVF.
func (r *runner) planNICs() error {
	t := r.tgt.t
	type srcNIC struct{ network, mac string }
	var src []srcNIC
	switch hw := r.hardware(); {
	case hw != nil:
		// The source's API, not a guess: its NICs, networks and MACs.
		for _, n := range hw.NICs {
			src = append(src, srcNIC{n.Network, n.MAC})
		}
	case r.ovf != nil:
		for _, n := range r.ovf.NICs {
			src = append(src, srcNIC{n.Network, n.MAC})
		}
	}
	if len(src) == 0 {
		src = []srcNIC{{}}
	}
	var unmapped []string
	seen := map[string]bool{}
	for i, n := range src {
		nic := report.TargetNIC{Source: n.network, MAC: n.mac}
		d, ok := t.Lookup(n.network)
		switch {
		case ok:
		case !t.Mapped():
			// No mapping anywhere: libvirt's default network, as before
			// mappings existed.
			d = manifest.NetworkDest{Network: "default"}
		default:
			name := n.network
			if name == "" {
				name = "(no network named by the source)"
			}
			if !seen[name] {
				seen[name] = true
				unmapped = append(unmapped, fmt.Sprintf("%q (NIC %d)", name, i+1))
			}
			continue
		}
		nic.Bridge, nic.Network = d.Bridge, d.Network
		r.tgt.nics = append(r.tgt.nics, nic)
	}
	if len(unmapped) > 0 {
		return fmt.Errorf("pipeline.target.networks: source network %s not mapped; add {source: NAME, bridge: BRIDGE} or {source: NAME, network: NETWORK} for it, or set target.default_network", strings.Join(unmapped, ", "))
	}
	return nil
}

// checkLibvirt refuses, before anything is converted, what the define
// stage would refuse: a domain of the same name, a missing network or
// pool, a volume already in the pool.
func (r *runner) checkLibvirt() error {
	c, err := libvirtd.Dial(r.ctx, r.tgt.t.Libvirt.URIOrDefault())
	if err != nil {
		return err
	}
	defer c.Close()
	if err := r.removeOwnLeftover(c); err != nil {
		return err
	}
	if r.tgt.t.Libvirt.Defines() {
		if err := c.CheckFree(r.vm.Name, r.tgt.uuid); err != nil {
			return err
		}
	}
	checked := map[string]bool{}
	for _, n := range r.tgt.nics {
		if n.Network != "" && !checked[n.Network] {
			checked[n.Network] = true
			if err := c.CheckNetwork(n.Network); err != nil {
				return fmt.Errorf("pipeline.target: %w", err)
			}
		}
	}
	if pool := r.tgt.pool(); pool != "" {
		var names []string
		for _, d := range r.disks {
			if d.output != "" {
				names = append(names, filepath.Base(d.output))
			}
		}
		if err := c.CheckVolumes(pool, names); err != nil {
			return fmt.Errorf("pipeline.target.storage: %w", err)
		}
	}
	return nil
}

// removeOwnLeftover undoes what an earlier attempt of this very job left
// in libvirt when its worker was killed in the define stage (a SIGKILL,
// the machine stopping), before the agent ran the job again: a domain of
// the VM's name whose metadata names this job (and is not running), and
// the pool volumes of this job's disk names that it uses. Anything else
// of that name stays, and CheckFree refuses the job.
func (r *runner) removeOwnLeftover(c *libvirtd.Conn) error {
	if r.o.JobID == "" {
		return nil
	}
	dom, x, err := c.Lookup(r.vm.Name)
	if err != nil || dom == nil || DomainJob(x) != r.o.JobID || c.Running(dom) {
		return err
	}
	var d libvirtxml.Domain
	if err := d.Unmarshal(x); err != nil {
		return fmt.Errorf("cannot read domain %q: %w", r.vm.Name, err)
	}
	if err := c.Undefine(dom); err != nil {
		return err
	}
	r.warn("removed domain %s (UUID %s), left defined by an interrupted earlier attempt of this job", dom.Name, dom.UUID)
	pool, mine := r.tgt.pool(), map[string]bool{}
	for _, dk := range r.disks {
		if dk.output != "" {
			mine[filepath.Base(dk.output)] = true
		}
	}
	if d.Devices == nil || pool == "" {
		return nil
	}
	for _, dk := range d.Devices.Disks {
		if s := dk.Source; s != nil && s.Volume != nil && s.Volume.Pool == pool && mine[s.Volume.Volume] {
			if err := c.DeleteVolume(pool, s.Volume.Volume); err != nil {
				return err
			}
			r.warn("removed volume %s of pool %s, left by an interrupted earlier attempt of this job", s.Volume.Volume, pool)
		}
	}
	return nil
}

// newUUID is a random (version 4) UUID for the domain: the report and the
// XML name the domain by it before libvirt has seen it.
func newUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("cannot make a domain UUID: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

// ovmfSets are the OVMF code and vars template pairs of the distributions
// (a 4 MiB code needs the 4 MiB vars), Secure Boot builds first.
var ovmfSets = []struct {
	secure            bool
	code, varsTemplat string
}{
	{true, "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"}, // Debian, Ubuntu
	{true, "/usr/share/OVMF/OVMF_CODE.secboot.fd", "/usr/share/OVMF/OVMF_VARS.ms.fd"},
	{true, "/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd", "/usr/share/edk2/ovmf/OVMF_VARS.secboot.fd"}, // Fedora, RHEL
	{false, "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"},
	{false, "/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"},
	{false, "/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"},
	{false, "/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"}, // Arch
}

// findOVMF is the first installed pair for secure (or not); zero when none
// is, and libvirt's autoselection then chooses.
func findOVMF(secure bool) OVMF {
	for _, s := range ovmfSets {
		if s.secure != secure {
			continue
		}
		if regular(s.code) && regular(s.varsTemplat) {
			return OVMF{Code: s.code, VarsTemplate: s.varsTemplat}
		}
	}
	return OVMF{}
}

func regular(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// domainSpec is the domain of the converted disks.
func (r *runner) domainSpec() DomainSpec {
	spec := DomainSpec{Name: r.vm.Name, UUID: r.tgt.uuid, Firmware: r.firmware(), NICs: 1, Graphics: r.tgt.graphics(),
		Description: fmt.Sprintf("Converted by hyper2kvm from %s", r.p.Load.SourcePath), Job: r.o.JobID}
	if r.o.JobID != "" {
		spec.Description += " (job " + r.o.JobID + ")"
	}
	if r.ovf != nil {
		spec.MemoryMB, spec.CPUs = r.ovf.MemoryMB, r.ovf.CPUs
		spec.NICs = max(len(r.ovf.NICs), 1)
		spec.SecureBoot = r.ovf.SecureBoot && spec.Firmware == "efi"
	}
	if hw := r.hardware(); hw != nil {
		spec.MemoryMB, spec.CPUs, spec.CoresPerSocket = hw.MemoryMB, hw.CPUs, hw.CoresPerSocket
		spec.NICs = max(len(hw.NICs), 1)
		spec.SecureBoot = hw.SecureBoot && spec.Firmware == "efi"
	}
	if spec.Firmware == "efi" {
		spec.OVMF = findOVMF(spec.SecureBoot)
	}
	for _, n := range r.tgt.nics {
		spec.Interfaces = append(spec.Interfaces, DomainNIC{MAC: n.MAC, Bridge: n.Bridge, Network: n.Network})
	}
	g := r.rep.Guest
	if g != nil && g.OS != nil && g.OS.Type == "windows" {
		spec.Windows = true
		// virtio only when the guest can boot from it: virt-v2v installed
		// the drivers, or they were there (viostor or vioscsi).
		spec.VirtioDrivers = r.fixed && r.backend == BackendV2V
		if w := g.Windows; w != nil {
			for _, d := range w.VirtioDrivers {
				spec.VirtioDrivers = spec.VirtioDrivers || d == "viostor"
			}
		}
	}
	root := -1
	if g != nil && g.OS != nil && g.OS.Type != "" && g.OS.Type != "unknown" {
		root = inspect.RootDisk(g)
	}
	pool := r.tgt.pool()
	for i, d := range r.disks {
		if !d.converted {
			continue
		}
		if i == root {
			spec.BootDisk = len(spec.Disks)
		}
		dd := DomainDisk{Path: d.output, Format: d.outFormat}
		if pool != "" {
			dd.Pool, dd.Volume = pool, filepath.Base(d.output)
		}
		spec.Disks = append(spec.Disks, dd)
	}
	return spec
}

// targetReport is the report's target section for spec.
func (r *runner) targetReport(spec DomainSpec) *report.Target {
	t := &report.Target{Domain: spec.Name, UUID: spec.UUID, Firmware: spec.Firmware, SecureBoot: spec.SecureBoot,
		Loader: spec.OVMF.Code, NVRAM: spec.OVMF.VarsTemplate, Graphics: spec.Graphics,
		NICs: append([]report.TargetNIC(nil), r.tgt.nics...)}
	if t.Firmware == "" {
		t.Firmware = "bios"
	}
	return t
}

// define is the define stage: the disks uploaded into the pool (when
// target.storage.pool), the domain defined, marked autostart and started
// as target.libvirt asks. A step that fails undoes every earlier one: no
// volume and no domain of the job stays behind, and a domain that was
// there before is never touched (libvirt refuses a name or UUID in use).
func (r *runner) define(set func(any)) error {
	lv := r.tgt.t.Libvirt
	res := &report.Libvirt{URI: lv.URIOrDefault(), Pool: r.tgt.pool()}
	set(res)
	// The connection outlives a cancel, so that the undo below still
	// runs; a cancel stops an upload between its chunks.
	c, err := libvirtd.Dial(context.WithoutCancel(r.ctx), res.URI)
	if err != nil {
		return err
	}
	defer c.Close()
	var vols []*libvirtd.Volume
	var dom *libvirtd.Domain
	ok := false
	defer func() {
		if ok {
			return
		}
		if dom != nil {
			if err := c.Undefine(dom); err != nil {
				r.warn("%v", err)
			}
			res.Defined, res.Started, res.Autostart = false, false, false
		}
		for _, v := range vols {
			if err := c.Delete(v); err != nil {
				r.warn("%v", err)
			}
		}
		res.Volumes = nil
	}()
	if res.Pool != "" {
		for _, d := range r.disks {
			if !d.converted {
				continue
			}
			text := "upload " + filepath.Base(d.output) + " to pool " + res.Pool
			r.progress("define", 0, 0, 0, text)
			v, err := c.Upload(r.ctx, res.Pool, filepath.Base(d.output), d.target, func(done, total int64) {
				r.progress("define", int(done*100/max(total, 1)), done, total, text)
			})
			if err != nil {
				return err
			}
			vols = append(vols, v)
			res.Volumes = append(res.Volumes, v.Path)
		}
	}
	if lv.Defines() {
		xml, err := os.ReadFile(filepath.Join(r.outDir, manifest.DomainXMLFile(r.vm.Name)))
		if err != nil {
			return fmt.Errorf("cannot read the domain XML back: %w", err)
		}
		def := string(xml)
		if kvm, err := c.HasKVM(); err != nil {
			return err
		} else if !kvm {
			// Defined all the same, to run (slowly) under emulation until
			// the domain is moved to a host with KVM.
			var d libvirtxml.Domain
			if err := d.Unmarshal(def); err != nil {
				return fmt.Errorf("cannot read the domain XML back: %w", err)
			}
			d.Type = "qemu"
			if def, err = d.Marshal(); err != nil {
				return fmt.Errorf("cannot write the domain XML: %w", err)
			}
			r.warn("libvirt %s has no KVM for x86_64 guests (no /dev/kvm): domain %s is defined with type qemu (emulation, slow); %s keeps type kvm", res.URI, r.vm.Name, manifest.DomainXMLFile(r.vm.Name))
			res.Emulated = true
		}
		if dom, err = c.Define(r.vm.Name, r.tgt.uuid, def); err != nil {
			return err
		}
		res.Defined = true
		if lv.Autostart {
			if err := c.SetAutostart(dom); err != nil {
				return err
			}
			res.Autostart = true
		}
		if lv.Start {
			if err := c.Start(dom); err != nil {
				return err
			}
			res.Started = true
		}
		if x, err := c.XML(dom); err == nil {
			r.recordDefined(x)
		}
	}
	if r.ctx.Err() != nil {
		return r.ctx.Err()
	}
	ok = true
	if r.rep.Target != nil {
		r.rep.Target.Libvirt = res
	}
	return nil
}

// recordDefined takes the MACs libvirt chose for NICs the source gave
// none, from the domain as defined.
func (r *runner) recordDefined(x string) {
	var d libvirtxml.Domain
	if d.Unmarshal(x) != nil || d.Devices == nil || r.rep.Target == nil {
		return
	}
	for i, in := range d.Devices.Interfaces {
		if i < len(r.rep.Target.NICs) && in.MAC != nil && r.rep.Target.NICs[i].MAC == "" {
			r.rep.Target.NICs[i].MAC = in.MAC.Address
		}
	}
}

// hardware is the VM's hardware as a remote source's API reported it, nil
// for a file source.
func (r *runner) hardware() *report.Hardware {
	if r.rep == nil {
		return nil
	}
	return r.rep.Source.Hardware
}

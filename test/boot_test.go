package test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/boot"
	"github.com/hyper2kvm/hyper2kvm/agent/fix"
	"github.com/hyper2kvm/hyper2kvm/agent/guest"
	"github.com/hyper2kvm/hyper2kvm/agent/inspect"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// bootTimeout bounds each TCG boot; a cloud kernel reaches login in well
// under this even on a loaded machine.
const bootTimeout = 8 * time.Minute

// TestBootDebian builds a real Debian 12 guest configured as on VMware,
// ships it as a streamOptimized VMDK in an OVA, and shows that unconverted it
// does not boot on virtio, and that after FIX (native and guestfs backends)
// it boots to a login prompt. Three boots in all.
func TestBootDebian(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	start := time.Now()
	raw := fixture.DebianDisk(t)
	t.Logf("Debian guest ready in %s", time.Since(start).Round(time.Second))
	dir := t.TempDir()
	ova := fixture.OVA(t, dir, raw)
	ovaSum := sha(t, ova)
	vmdk := extractVMDK(t, ova)
	ctx := context.Background()
	consoles := filepath.Join(os.TempDir(), "hyper2kvm-boot-consoles")
	os.MkdirAll(consoles, 0o755)

	t.Run("unconverted", func(t *testing.T) {
		res, err := boot.Test(ctx, boot.Options{Image: vmdk, Format: "vmdk", Timeout: bootTimeout,
			FailMarkers: []string{"Gave up waiting for root", "(initramfs)"},
			Console:     filepath.Join(consoles, "unconverted.log")})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("accelerator %s (%s), %.0fs, failed on %q", res.Accelerator, res.KVMProbe, res.Seconds, res.FailedOn)
		if res.Booted {
			t.Fatalf("the VMware-configured guest booted on virtio without FIX:\n%s", res.ConsoleTail)
		}
		// It must have failed for the reason FIX addresses, not a broken fixture.
		if res.FailedOn == "" {
			t.Fatalf("guest neither booted nor gave up waiting for its root:\n%s", res.ConsoleTail)
		}
	})

	for _, be := range []string{guest.Native, guest.Guestfs} {
		t.Run("fixed-"+be, func(t *testing.T) {
			if be == guest.Guestfs {
				if _, err := exec.LookPath("guestfish"); err != nil {
					t.Skip("guestfish not installed")
				}
			}
			img, how := convertDebian(t, ova, vmdk, be)
			t.Logf("converted with %s", how)
			res, err := boot.Test(ctx, boot.Options{Image: img, Format: "qcow2", Timeout: bootTimeout,
				FailMarkers: []string{"Gave up waiting for root"},
				Console:     filepath.Join(consoles, "fixed-"+be+".log")})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("accelerator %s, %.0fs to %q", res.Accelerator, res.Seconds, res.Marker)
			if !res.Booted {
				t.Fatalf("converted guest did not reach a login prompt (failed on %q):\n%s", res.FailedOn, res.ConsoleTail)
			}
		})
	}
	if sha(t, ova) != ovaSum {
		t.Fatal("source OVA modified")
	}
}

func extractVMDK(t *testing.T, ova string) string {
	t.Helper()
	dir := t.TempDir()
	run(t, "tar", "-xf", ova, "-C", dir)
	m, _ := filepath.Glob(filepath.Join(dir, "*.vmdk"))
	if len(m) != 1 {
		t.Fatalf("OVA holds %d VMDKs", len(m))
	}
	return m[0]
}

// convertDebian converts the OVA with `hyper2kvmd convert` when the binary
// is built and the engine works, and otherwise runs INSPECT and FIX on a
// qcow2 overlay of the VMDK as the engine would. It returns the image to
// boot and how it was made.
func convertDebian(t *testing.T, ova, vmdk, backend string) (string, string) {
	t.Helper()
	ctx := context.Background()
	bin, _ := filepath.Abs("../bin/hyper2kvmd")
	if _, err := os.Stat(bin); err == nil {
		out := t.TempDir()
		m := map[string]any{"version": "1.0", "name": "debian-" + backend, "pipeline": map[string]any{
			"load": map[string]any{"source_type": "ova", "source_path": ova},
			"fix": map[string]any{"backend": backend, "network": map[string]any{"fix_level": "full"},
				"vmware_tools": map[string]any{"enabled": true}},
			"convert":  map[string]any{"output_format": "qcow2"},
			"validate": map[string]any{"enabled": true},
		}}
		b, _ := json.Marshal(m)
		mf := filepath.Join(t.TempDir(), "debian.json")
		os.WriteFile(mf, b, 0o644)
		res, err := exec.Command(bin, "convert", "-f", mf, "-o", out).CombinedOutput()
		if err == nil {
			disks, _ := filepath.Glob(filepath.Join(out, "*", "*.qcow2"))
			if len(disks) == 1 {
				return disks[0], "hyper2kvmd convert"
			}
			t.Fatalf("hyper2kvmd convert made %d qcow2 disks:\n%s", len(disks), res)
		}
		if !strings.Contains(string(res), "not implemented") {
			t.Fatalf("hyper2kvmd convert: %v\n%s", err, res)
		}
		t.Logf("hyper2kvmd convert not ready (%s); running INSPECT and FIX directly", strings.TrimSpace(string(res)))
	}
	g, err := inspect.Guest(ctx, inspect.Image{Path: vmdk, Format: "vmdk"}, backend, true)
	if err != nil {
		t.Fatal(err)
	}
	if g.Root != "/dev/sda1" || g.InitramfsTool != "initramfs-tools" || g.OS.ID != "debian" {
		t.Fatalf("inspection: root %q initramfs %q os %+v", g.Root, g.InitramfsTool, g.OS)
	}
	ov := overlayOf(t, vmdk, "vmdk")
	yes := true
	changes, err := fix.Apply(ctx, inspect.Image{Path: ov, Format: "qcow2"}, backend, &manifest.Fix{
		Network: &manifest.NetworkFix{FixLevel: "full"}, VMwareTools: &manifest.Toggle{Enabled: &yes}}, g)
	if err != nil {
		t.Fatal(err)
	}
	regenerated := false
	for _, c := range changes {
		t.Logf("change %s %s %s", c.Fix, c.File, c.Note)
		regenerated = regenerated || c.Fix == "initramfs" && strings.Contains(c.Note, "update-initramfs")
	}
	if !regenerated {
		t.Fatal("FIX did not regenerate the initramfs")
	}
	return ov, "inspect.Guest + fix.Apply (" + backend + ") on a qcow2 overlay"
}

package test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/boot"
	"github.com/hyper2kvm/hyper2kvm/agent/engine"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// TestBootDebianVirtV2V: the Debian fixture (configured as on VMware; it
// does not boot on virtio unconverted, TestBootDebian) converted with
// fix.backend virt-v2v: FIX runs the real virt-v2v-in-place on the
// overlay, and the result boots on virtio to a login prompt. This proves
// the backend is wired end to end; a real Windows boot cannot be tested
// here (docs/WINDOWS.md). Slow (virt-v2v's appliance and the guest's
// initramfs rebuilt under TCG, then a boot: five to ten minutes on a
// 2-core machine), so it runs beside the other parallel tests.
func TestBootDebianVirtV2V(t *testing.T) {
	needRoot(t)
	t.Parallel()
	needTools(t, "virt-v2v-in-place", "nbdkit", "qemu-system-x86_64")
	start := time.Now()
	raw := fixture.DebianDisk(t)
	t.Logf("Debian guest ready in %s", time.Since(start).Round(time.Second))
	ova := fixture.OVA(t, t.TempDir(), raw)
	sum := fixture.SHA256(t, ova)
	m := engManifest("debian-v2v", "ova", ova)
	on := true
	m.Pipeline.Inspect = &manifest.Inspect{}
	m.Pipeline.Fix = &manifest.Fix{Enabled: &on, Backend: "virt-v2v"}
	m.Pipeline.Validate = &manifest.Validate{Compare: new(bool)}
	m.SetDefaults()
	out := filepath.Join(t.TempDir(), "out")
	start = time.Now()
	rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: out})
	if err != nil {
		b, _ := json.MarshalIndent(rep.Stages, "", "  ")
		t.Fatalf("Run: %v\n%s", err, b)
	}
	fix := engStage(t, rep, "fix")
	t.Logf("converted in %s (FIX %.0fs)", time.Since(start).Round(time.Second), fix.Seconds)
	res, _ := json.Marshal(fix.Result)
	if !strings.Contains(string(res), `"backend":"virt-v2v"`) || !strings.Contains(string(res), "-overlay.qcow2") {
		t.Errorf("FIX result: %s", res)
	}
	var notes []string
	for _, c := range rep.Changes {
		notes = append(notes, c.Fix+": "+c.Note)
	}
	t.Logf("changes:\n%s", strings.Join(notes, "\n"))
	// virt-v2v names a Debian guest by /etc/debian_version ("Converting
	// 12.15 to run on KVM").
	if !regexp.MustCompile(`(?m)^virt-v2v: Converting .+ to run on KVM$`).MatchString(strings.Join(notes, "\n")) {
		t.Errorf("virt-v2v's conversion is not in the report's changes")
	}
	if fixture.SHA256(t, ova) != sum {
		t.Error("the OVA changed")
	}
	consoles := filepath.Join(os.TempDir(), "hyper2kvm-boot-consoles")
	os.MkdirAll(consoles, 0o755)
	br, err := boot.Test(context.Background(), boot.Options{Image: filepath.Join(out, "debian-v2v.qcow2"), Format: "qcow2",
		Timeout: bootTimeout, FailMarkers: []string{"Gave up waiting for root"}, Console: filepath.Join(consoles, "fixed-virt-v2v.log")})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("accelerator %s, %.0fs to %q", br.Accelerator, br.Seconds, br.Marker)
	if !br.Booted {
		t.Fatalf("the guest virt-v2v converted did not reach a login prompt (failed on %q):\n%s", br.FailedOn, br.ConsoleTail)
	}
}

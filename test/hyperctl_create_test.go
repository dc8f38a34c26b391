package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

// TestHyperctlManifestCreateOnATerminal answers manifest create's prompts
// through a pseudo-terminal, as a person would, going back twice.
func TestHyperctlManifestCreateOnATerminal(t *testing.T) {
	t.Parallel()
	bin := buildHyperctl(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "web01.vhdx")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "vhdx", img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	out := filepath.Join(dir, "web01.yaml")
	cmd := exec.Command(bin, "manifest", "create")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TERM=xterm")
	term := startTerm(t, cmd)
	ctx := hyperctlCtx(t, 2*time.Minute)

	at := term.WaitFor(ctx, 0, "Step 1/4: Source")
	at = term.WaitFor(ctx, at, "Source image (absolute path): ")
	term.Send(filepath.Join(dir, "wrong.vmdk"))
	at = term.WaitFor(ctx, at, "Source type")
	term.Send("back") // the path was wrong
	at = term.WaitFor(ctx, at, "Source image (absolute path)")
	term.Send(img)
	// The type is detected from the image's bytes and offered as default.
	at = term.WaitFor(ctx, at, "[vhdx]: ")
	term.Send("")
	at = term.WaitFor(ctx, at, "VM name [web01]: ")
	term.Send("")
	at = term.WaitFor(ctx, at, "Step 2/4: Inspection")
	at = term.WaitFor(ctx, at, "Inspect the guest (yes/no) [yes]: ")
	term.Send("")
	at = term.WaitFor(ctx, at, "Detect the guest OS (yes/no) [yes]: ")
	term.Send("")
	at = term.WaitFor(ctx, at, "Step 3/4: Fixes")
	at = term.WaitFor(ctx, at, "Apply fixes for KVM (yes/no) [yes]: ")
	term.Send("")
	at = term.WaitFor(ctx, at, "[stabilize-all]: ")
	term.Send("bypath-only")
	at = term.WaitFor(ctx, at, "Rebuild the initramfs with virtio drivers (yes/no) [yes]: ")
	term.Send("back") // reconsider the fstab mode
	at = term.WaitFor(ctx, at, "[bypath-only]: ")
	term.Send("noop")
	at = term.WaitFor(ctx, at, "Rebuild the initramfs")
	term.Send("")
	at = term.WaitFor(ctx, at, "Network fix level")
	term.Send("turbo") // not allowed: refused and asked again
	at = term.WaitFor(ctx, at, `"turbo" is not one of`)
	at = term.WaitFor(ctx, at, "Network fix level")
	term.Send("moderate")
	at = term.WaitFor(ctx, at, "Remove VMware tools (yes/no) [no]: ")
	term.Send("")
	at = term.WaitFor(ctx, at, "Step 4/4: Conversion")
	at = term.WaitFor(ctx, at, "Output format (qcow2, raw, vdi) [qcow2]: ")
	term.Send("")
	at = term.WaitFor(ctx, at, "Compress the qcow2 (yes/no) [no]: ")
	term.Send("y")
	at = term.WaitFor(ctx, at, "Output file name [web01.qcow2]: ")
	term.Send("")
	at = term.WaitFor(ctx, at, "Boot-test the converted VM (yes/no) [no]: ")
	term.Send("")
	at = term.WaitFor(ctx, at, "Save the manifest as (.yaml or .json) [web01.yaml]: ")
	term.Send("")
	at = term.WaitFor(ctx, at, "Write web01.yaml (yes/no) [yes]: ")
	term.Send("")
	term.WaitFor(ctx, at, "Wrote web01.yaml")
	if code := term.Wait(ctx); code != 0 {
		t.Fatalf("manifest create exited %d:\n%s", code, term.Text())
	}
	// Defaults are shown in bold on a terminal.
	if !strings.Contains(term.Raw(), "\x1b[1m") {
		t.Errorf("no highlighting on a terminal")
	}

	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse(data)
	if err != nil {
		t.Fatalf("written manifest: %v\n%s", err, data)
	}
	if ps := manifest.CheckFiles(m); len(ps) > 0 {
		t.Errorf("written manifest fails the file checks: %v", ps)
	}
	p := m.Pipeline
	if m.Name != "web01" || p.Load.SourcePath != img || p.Load.SourceType != "vhdx" ||
		p.Fix.Fstab.Mode != "noop" || p.Fix.Network.FixLevel != "moderate" || !p.Convert.Compress {
		t.Errorf("manifest does not hold the answers:\n%s", data)
	}

	// The same command refuses to write over it (and says so at the prompt).
	cmd = exec.Command(bin, "manifest", "create", "--source-path", img, "--yes", "--out", out)
	cmd.Dir = dir
	res, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(res), "already exists") {
		t.Errorf("second create over %s: %v: %s", out, err, res)
	}
	if again, _ := os.ReadFile(out); string(again) != string(data) {
		t.Errorf("existing manifest changed")
	}
}

package test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/engine"
	"github.com/hyper2kvm/hyper2kvm/agent/progress"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// holdQemuImg is a qemu-img put first on PATH: the real one, except that
// each "convert -p" runs in slices of a few milliseconds (SIGSTOP and
// SIGCONT) until its output holds 512 KiB, and is then kept stopped
// with a marker in $H2K_HOLD_DIR saying so. It forwards SIGTERM (the
// engine's cancel) to the real qemu-img and lets it run to its end.
const holdQemuImg = `#!/bin/bash
real=%q
if [ "$1 $2" != "convert -p" ] || [ -z "$H2K_HOLD_DIR" ]; then
	exec "$real" "$@"
fi
out=${!#}
"$real" "$@" &
child=$!
kill -STOP "$child"
trap 'kill -TERM "$child"; kill -CONT "$child"; wait "$child"; exit 143' TERM INT
while kill -0 "$child" 2>/dev/null && [ "$(stat -L -c %%s "$out" 2>/dev/null || echo 0)" -lt 524288 ]; do
	kill -CONT "$child"
	sleep 0.002
	kill -STOP "$child"
done
echo "$out $(stat -L -c %%s "$out" 2>/dev/null)" >"$H2K_HOLD_DIR/held.$$"
wait "$child"
exit $?
`

// holdQemuImgDir installs holdQemuImg and returns the PATH that puts it
// first and the directory its markers go to.
func holdQemuImgDir(t *testing.T) (path, holdDir string) {
	t.Helper()
	real, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img not installed (packaging/deps.txt)")
	}
	binDir, holdDir := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(binDir, "qemu-img"), []byte(fmt.Sprintf(holdQemuImg, real)), 0o755); err != nil {
		t.Fatal(err)
	}
	return binDir + ":" + os.Getenv("PATH"), holdDir
}

// waitHeld waits until n conversions are held at once.
func waitHeld(ctx context.Context, t *testing.T, holdDir string, n int) []string {
	t.Helper()
	for {
		m, _ := filepath.Glob(filepath.Join(holdDir, "held.*"))
		if len(m) >= n {
			var held []string
			for _, p := range m {
				b, _ := os.ReadFile(p)
				held = append(held, strings.TrimSpace(string(b)))
			}
			return held
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d of %d disks' conversions were in flight at once (the disks of a VM convert in parallel)", len(m), n)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// threeDiskOVF is an OVF of three 64 MiB disks of random bytes.
func threeDiskOVF(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	var raws []string
	for i := range 3 {
		raw := filepath.Join(dir, fmt.Sprintf("d%d.raw", i+1))
		data := make([]byte, 64<<20)
		rand.Read(data)
		if err := os.WriteFile(raw, data, 0o644); err != nil {
			t.Fatal(err)
		}
		raws = append(raws, raw)
	}
	src := t.TempDir()
	return fixture.OVF(t, src, fixture.VM{Name: "three"}, raws...)
}

// noLeftovers fails when dir holds a partial output or a work directory.
func noLeftovers(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && (strings.HasSuffix(p, ".part") || strings.HasPrefix(d.Name(), ".work-") || strings.Contains(d.Name(), "overlay")) {
			t.Errorf("left %s behind", p)
		}
		return nil
	})
}

// The three disks of a VM convert at once, each with its own qemu-img and
// .part, and the job's progress names each one in flight. Cancelled
// while all three are mid-disk, the job ends "cancelled" with no .part, no
// work directory and no overlay left, in the engine and in hyper2kvmd
// convert stopped the way systemd stops a job unit (SIGTERM to every
// process of it).
func TestDisksInFlightCancel(t *testing.T) {
	engNeedTools(t)
	path, holdDir := holdQemuImgDir(t)
	ovf := threeDiskOVF(t)

	t.Run("engine", func(t *testing.T) {
		t.Setenv("PATH", path)
		t.Setenv("H2K_HOLD_DIR", holdDir)
		out := filepath.Join(t.TempDir(), "out")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		wait, stop := context.WithTimeout(ctx, 2*time.Minute)
		defer stop()
		texts := make(chan string, 1000)
		done := make(chan struct{})
		var status string
		var err error
		go func() {
			defer close(done)
			r, e := engine.Run(ctx, engManifest("three", "ovf", ovf), engine.Options{OutputDir: out, DiskParallelism: 3,
				Progress: func(u progress.Update) {
					if u.Stage == "convert" {
						select {
						case texts <- u.Text:
						default:
						}
					}
				}})
			status, err = string(r.Status), e
		}()
		held := waitHeld(wait, t, holdDir, 3)
		t.Logf("in flight: %v", held)
		cancel()
		<-done
		if err == nil || status != "cancelled" {
			t.Fatalf("err %v, status %s", err, status)
		}
		close(texts)
		all := false
		for s := range texts {
			if strings.Count(s, "%") == 3 && strings.Contains(s, "three.qcow2") && strings.Contains(s, "three-disk3.qcow2") {
				all = true
			}
		}
		if !all {
			t.Error("no progress line named the three disks in flight with their percentages")
		}
		noLeftovers(t, out)
		for _, n := range engList(t, out) {
			if strings.HasSuffix(n, ".qcow2") {
				t.Errorf("cancelled mid-disk, yet %s was kept", n)
			}
		}
	})

	t.Run("hyper2kvmd convert stopped like a unit", func(t *testing.T) {
		for _, p := range []string{"held.*"} {
			m, _ := filepath.Glob(filepath.Join(holdDir, p))
			for _, f := range m {
				os.Remove(f)
			}
		}
		bin := buildHyper2kvmd(t)
		dir := t.TempDir()
		m := filepath.Join(dir, "m.json")
		os.WriteFile(m, []byte(`{"version": "1.0", "name": "three", "pipeline": {"load": {"source_type": "ovf", "source_path": "`+ovf+`"}, "fix": {"enabled": false}}}`), 0o644)
		out := filepath.Join(dir, "out")
		cmd := exec.Command(bin, "convert", "-f", m, "-o", out, "--disk-parallelism", "3")
		cmd.Env = append(os.Environ(), "PATH="+path, "H2K_HOLD_DIR="+holdDir)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		var log strings.Builder
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wait, stop := context.WithTimeout(context.Background(), 2*time.Minute)
		defer stop()
		held := waitHeld(wait, t, holdDir, 3)
		t.Logf("in flight: %v", held)
		// systemd stopping a unit: SIGTERM to every process of it at once.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(log.String(), "three: cancelled") {
			t.Errorf("exit %d, want 1 and the VM cancelled:\n%s", code, log.String())
		}
		noLeftovers(t, out)
		if out, _ := exec.Command("pgrep", "-g", fmt.Sprint(cmd.Process.Pid)).Output(); len(out) > 0 {
			t.Errorf("processes left in the group: %s", out)
		}
	})
}

// buildHyper2kvmd builds the hyper2kvmd binary into a temporary directory.
func buildHyper2kvmd(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	bin := filepath.Join(t.TempDir(), "hyper2kvmd")
	if out, err := exec.Command(goBin, "build", "-o", bin, "../cmd/hyper2kvmd").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// A disk that fails mid-conversion while the others are in flight fails
// the job naming that disk; the others are cancelled and none leaves a
// .part behind.
func TestDiskFailureCancelsTheOthers(t *testing.T) {
	engNeedTools(t)
	ovf := threeDiskOVF(t)
	// The second disk's grains, past its header and grain tables, made
	// garbage: qemu-img fails on them in CONVERT, not in LOAD.
	bad := filepath.Join(filepath.Dir(ovf), "three-disk2.vmdk")
	f, err := os.OpenFile(bad, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	junk := make([]byte, 1<<20)
	rand.Read(junk)
	f.WriteAt(junk, st.Size()/2)
	f.Close()
	out := filepath.Join(t.TempDir(), "out")
	rep, err := engine.Run(context.Background(), engManifest("three", "ovf", ovf), engine.Options{OutputDir: out, DiskParallelism: 3})
	if err == nil {
		t.Fatal("a damaged disk converted")
	}
	if rep.Status != "failed" || rep.Error == nil || rep.Error.Stage != "convert" || !strings.Contains(err.Error(), "vmdisk2") {
		t.Fatalf("status %s, error %+v (%v): want a failed CONVERT naming vmdisk2", rep.Status, rep.Error, err)
	}
	noLeftovers(t, out)
}

package test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/test/box"
)

// TestBox checks that the harness gives the other e2e tests what they rely on:
// a real systemd, D-Bus and polkit, transient units with limits, the journal,
// and state that survives a reboot.
func TestBox(t *testing.T) {
	t.Parallel()
	shared := t.TempDir()
	b := box.Start(t, box.Options{
		Users:  []string{"alice"},
		Groups: map[string][]string{"hyper2kvm": {"bob"}},
		Binds:  []string{shared},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	if got := strings.TrimSpace(b.MustExec(t, "systemctl", "is-system-running")); got != "running" && got != "degraded" {
		t.Errorf("is-system-running = %q, want running", got)
	}
	names := b.MustExec(t, "busctl", "list", "--no-legend", "--acquired")
	for _, want := range []string{"org.freedesktop.systemd1", "org.freedesktop.PolicyKit1"} {
		if !strings.Contains(names, want) {
			t.Errorf("busctl list does not show %s:\n%s", want, names)
		}
	}

	t.Run("users and groups", func(t *testing.T) {
		if out := b.MustExec(t, "id", "-nG", "bob"); !strings.Contains(out, "hyper2kvm") {
			t.Errorf("bob is not in group hyper2kvm: %q", out)
		}
		if _, _, err := b.Exec(ctx, "id", "alice"); err != nil {
			t.Errorf("user alice missing: %v", err)
		}
		if _, err := os.Stat(b.Path("/home/alice")); err != nil {
			t.Errorf("alice has no home: %v", err)
		}
	})

	t.Run("transient unit with limits and journal", func(t *testing.T) {
		b.MustExec(t, "systemd-run", "--wait", "-p", "MemoryMax=64M", "true")
		b.MustExec(t, "systemd-run", "--unit=box-limits",
			"-p", "MemoryMax=64M", "-p", "CPUQuota=50%", "-p", "TasksMax=16",
			"sh", "-c", "echo hello-from-box-limits; exec sleep infinity")
		defer b.MustExec(t, "systemctl", "stop", "box-limits.service")
		show := b.MustExec(t, "systemctl", "show", "-p", "MemoryMax", "-p", "TasksMax", "-p", "CPUQuotaPerSecUSec", "box-limits.service")
		for _, want := range []string{"MemoryMax=67108864", "TasksMax=16", "CPUQuotaPerSecUSec=500ms"} {
			if !strings.Contains(show, want) {
				t.Errorf("systemctl show box-limits.service lacks %s:\n%s", want, show)
			}
		}
		err := b.WaitFor(ctx, "the unit's output in the journal", func() (bool, error) {
			return strings.Contains(b.Journal(ctx, "-u", "box-limits.service"), "hello-from-box-limits"), nil
		})
		if err != nil {
			t.Errorf("%v; journal:\n%s", err, b.Journal(ctx, "-u", "box-limits.service"))
		}
	})

	t.Run("polkit denies an unprivileged user", func(t *testing.T) {
		out, stderr, err := b.ExecAs(ctx, "alice", "sh", "-c",
			"exec pkcheck --action-id org.freedesktop.systemd1.manage-units --process $$")
		if err == nil {
			t.Fatalf("pkcheck as alice succeeded; want not authorized\n%s%s", out, stderr)
		}
		if !strings.Contains(out+stderr, "Authorization requires authentication") && !strings.Contains(out+stderr, "Not authorized") {
			t.Errorf("pkcheck as alice: %v, output %q; want a polkit refusal", err, out+stderr)
		}
		_, stderr, err = b.ExecAs(ctx, "bob", "busctl", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
			"org.freedesktop.systemd1.Manager", "StartUnit", "ss", "dbus.service", "replace")
		if err == nil || !strings.Contains(stderr, "Interactive authentication required") {
			t.Errorf("StartUnit as bob: err %v, stderr %q; want Interactive authentication required", err, stderr)
		}
	})

	t.Run("files survive a reboot", func(t *testing.T) {
		b.WriteFile(t, "/var/lib/box-test/kept", []byte("kept\n"), 0o600)
		b.MustExec(t, "sh", "-c", "echo written-inside > /var/lib/box-test/inside")
		before := b.PID()
		b.Reboot(t)
		if b.PID() == before {
			t.Errorf("PID 1 is the same after reboot (%d): the box did not reboot", before)
		}
		for p, want := range map[string]string{"/var/lib/box-test/kept": "kept\n", "/var/lib/box-test/inside": "written-inside\n"} {
			got, err := os.ReadFile(b.Path(p))
			if err != nil || string(got) != want {
				t.Errorf("after reboot %s = %q, %v; want %q", p, got, err, want)
			}
		}
		if got := strings.TrimSpace(b.MustExec(t, "systemctl", "is-system-running")); got != "running" && got != "degraded" {
			t.Errorf("after reboot is-system-running = %q", got)
		}
		if _, _, err := b.Exec(ctx, "id", "alice"); err != nil {
			t.Errorf("user alice gone after reboot: %v", err)
		}
	})

	t.Run("a bound directory is shared", func(t *testing.T) {
		b.MustExec(t, "sh", "-c", "echo from-box > "+shared+"/out")
		if got, err := os.ReadFile(shared + "/out"); err != nil || string(got) != "from-box\n" {
			t.Errorf("file written in the bound directory: %q, %v", got, err)
		}
	})

	t.Run("nothing reaches the host", func(t *testing.T) {
		if _, err := os.Stat("/var/lib/box-test"); err == nil {
			t.Errorf("/var/lib/box-test exists on the host: the box wrote through")
		}
		if _, err := os.Stat("/home/alice"); err == nil {
			t.Errorf("/home/alice exists on the host")
		}
	})
}

// TestBoxCgroupsEnforced checks that WritableCgroups makes MemoryMax= bite:
// a unit limited to 64M that allocates 200 MB is OOM-killed.
func TestBoxCgroupsEnforced(t *testing.T) {
	t.Parallel()
	b := box.Start(t, box.Options{WritableCgroups: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// python3 is on the image; a shell string grows too slowly to be sure.
	_, _, err := b.Exec(ctx, "systemd-run", "--wait", "--unit=box-oom", "-p", "MemoryMax=64M", "-p", "MemorySwapMax=0",
		"python3", "-c", "b = bytearray(200*1024*1024); b[::4096] = b'x' * len(b[::4096]); print('sur' + 'vived')")
	if err == nil {
		t.Fatalf("a 64M unit allocating 200MB was not killed; journal:\n%s", b.Journal(ctx, "-u", "box-oom"))
	}
	res := b.Journal(ctx, "-u", "box-oom")
	if strings.Contains(res, "survived") {
		t.Errorf("the unit ran to the end despite MemoryMax=64M:\n%s", res)
	}
	if !strings.Contains(res, "oom") && !strings.Contains(res, "status=9/KILL") {
		t.Errorf("the unit failed but not by the OOM killer:\n%s", res)
	}
}

// TestBoxInstall checks Options.Install: the project is installed into the
// box as `make install PREFIX=/usr` would, and set up as a package would.
func TestBoxInstall(t *testing.T) {
	t.Parallel()
	b := box.Start(t, box.Options{Install: true, Devices: true, Files: map[string]string{"/etc/box-test/file": "from Files\n"}})
	for _, d := range []string{"/dev/fuse", "/dev/loop-control", "/dev/kvm"} {
		if _, err := os.Stat(d); err != nil {
			continue
		}
		if _, _, err := b.Exec(context.Background(), "test", "-c", d); err != nil {
			t.Errorf("Devices: %s is not in the box", d)
		}
	}
	for _, p := range []string{
		"/usr/bin/hyper2kvmd", "/usr/bin/hyperctl",
		"/usr/lib/systemd/system/hyper2kvmd.service",
		"/usr/lib/sysusers.d/hyper2kvm.conf", "/usr/lib/tmpfiles.d/hyper2kvm.conf",
		"/etc/hyper2kvm/agent.yaml",
	} {
		if _, err := os.Stat(b.Path(p)); err != nil {
			t.Errorf("not installed in the box: %v", err)
		}
	}
	if got, err := os.ReadFile(b.Path("/etc/box-test/file")); err != nil || string(got) != "from Files\n" {
		t.Errorf("Options.Files: /etc/box-test/file = %q, %v", got, err)
	}
	if out := b.MustExec(t, "getent", "group", "hyper2kvm"); !strings.HasPrefix(out, "hyper2kvm:") {
		t.Errorf("group hyper2kvm missing: %q", out)
	}
	if out := b.MustExec(t, "stat", "-c", "%a %U %G", "/var/lib/hyper2kvm/manifest-workflow/to_be_processed"); strings.TrimSpace(out) != "3770 root hyper2kvm" {
		t.Errorf("to_be_processed is %q, want 3770 root hyper2kvm", out)
	}
	if out := b.MustExec(t, "systemctl", "show", "-p", "LoadState", "hyper2kvmd.service"); strings.TrimSpace(out) != "LoadState=loaded" {
		t.Errorf("hyper2kvmd.service: %q", out)
	}
	if _, err := os.Stat("/usr/lib/sysusers.d/hyper2kvm.conf"); err == nil {
		t.Logf("note: the host has /usr/lib/sysusers.d/hyper2kvm.conf (a real install?); the box test cannot tell it wrote it")
	}
}

package test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/test/box"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// escapeProgram is what a hostile guest puts at /usr/sbin/update-initramfs:
// the classic chroot escape (chroot into a subdirectory, chdir("..") past
// the root, chroot(".")), then a remount of /etc read-write, a write there,
// reads of /etc/shadow by every path that led to the host's before, a new
// user namespace, a block device node and a proc mount. It logs what each
// attempt gave into the guest (/root/escape.log), into its initramfs (so
// FIX reports the run) and, on its last line, the /etc/shadow it read: the
// line FIX copies into the report.
const escapeProgram = `package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

var log strings.Builder

func try(what string, err error) {
	if err != nil {
		fmt.Fprintf(&log, "%s: %v\n", what, err)
	} else {
		fmt.Fprintf(&log, "%s: ok\n", what)
	}
}

func main() {
	fmt.Fprintf(&log, "uid %d euid %d\n", os.Getuid(), os.Geteuid())
	os.MkdirAll("/escape-jail", 0o755)
	try("chroot /escape-jail", syscall.Chroot("/escape-jail"))
	for i := 0; i < 64; i++ {
		syscall.Chdir("..")
	}
	try("chroot .", syscall.Chroot("."))
	try("remount /etc rw", syscall.Mount("/etc", "/etc", "", syscall.MS_REMOUNT|syscall.MS_BIND, ""))
	try("write /etc/PWNED-by-guest", os.WriteFile("/etc/PWNED-by-guest", []byte("pwned\n"), 0o644))
	shadow := ""
	for _, p := range []string{"/proc/1/root/etc/shadow", "/etc/shadow"} {
		b, err := os.ReadFile(p)
		try("read "+p, err)
		if err == nil {
			shadow = strings.ReplaceAll(string(b), "\n", " | ")
			fmt.Fprintf(&log, "%s holds: %s\n", p, shadow)
		}
	}
	try("unshare user+mount", syscall.Unshare(syscall.CLONE_NEWUSER|syscall.CLONE_NEWNS))
	try("mknod block 8:0", syscall.Mknod("/escape-sda", syscall.S_IFBLK|0o600, 8<<8))
	try("mount proc", syscall.Mount("proc", "/mnt", "proc", 0, ""))
	try("sethostname", syscall.Sethostname([]byte("pwned")))
	os.WriteFile("/root/escape.log", []byte(log.String()), 0o644)
	if f, err := os.OpenFile("/boot/initrd.img-6.1.0-13-amd64", os.O_APPEND|os.O_WRONLY, 0); err == nil {
		f.WriteString(log.String())
		f.Close()
	}
	fmt.Print(log.String())
	fmt.Println("hyper2kvm-escape done; /etc/shadow: " + shadow)
}
`

// TestSandboxGuestEscape: a member of group hyper2kvm drops a guest whose
// update-initramfs tries to escape to the host (issue: with the old chroot
// it wrote /etc/PWNED-by-guest on the host and copied the host's
// /etc/shadow into the report). The sandbox must hold: the program runs
// (its log is in the converted guest), every escape fails, the box's
// /etc is untouched and the box's /etc/shadow canary is nowhere in the
// report, the journal or the outputs.
func TestSandboxGuestEscape(t *testing.T) {
	t.Parallel()
	needRoot(t)
	if _, err := exec.LookPath("bwrap"); err != nil {
		t.Fatalf("bwrap not installed: the native backend cannot run guest programs (packaging/deps.txt has bubblewrap)")
	}
	bin := buildEscape(t)
	guestShadow := "guest-shadow-" + strings.ReplaceAll(fixture.NewUUID(t), "-", "")
	disk := fixture.LinuxDisk(t, t.TempDir(), fixture.Options{Name: "escape", SizeMB: 64,
		Files: map[string]string{
			"usr/sbin/update-initramfs": bin,
			"etc/shadow":                "root:" + guestShadow + ":19000:0:99999:7:::\n",
		},
		Executable: []string{"usr/sbin/update-initramfs"}})

	b := relStart(t, box.Options{Devices: true, Groups: map[string][]string{"hyper2kvm": {"bob"}}}, false, "")
	ctx := relCtx(t, 8*time.Minute)
	canary := "hyper2kvm-canary-" + strings.ReplaceAll(fixture.NewUUID(t), "-", "")
	b.MustExec(t, "sh", "-c", "echo '"+canary+":!:19000:0:99999:7:::' >> /etc/shadow")
	if out, err := exec.Command("cp", "--sparse=always", disk, b.Path("/srv/src/escape.raw")).CombinedOutput(); err != nil {
		t.Fatalf("copy fixture into the box: %v %s", err, out)
	}
	b.MustExec(t, "chmod", "0644", "/srv/src/escape.raw")
	etcBefore := b.MustExec(t, "sh", "-c", "ls -la /etc | sha256sum")

	m := `{"version":"1.0","name":"escape","pipeline":{"load":{"source_type":"raw","source_path":"/srv/src/escape.raw"},` +
		`"inspect":{"enabled":true},"fix":{"enabled":true,"backend":"native","initramfs":{"enabled":true,"regenerate":true}},` +
		`"convert":{"output_format":"qcow2"},"validate":{"enabled":false}}}`
	b.drop("bob", "escape.json", m)
	dir, rep := b.waitSettled(ctx, "escape.json")
	repText, _ := json.Marshal(rep)
	t.Logf("settled in %s", dir)

	if _, _, err := b.Exec(ctx, "test", "-e", "/etc/PWNED-by-guest"); err == nil {
		t.Errorf("the guest's program wrote /etc/PWNED-by-guest on the host")
	}
	if after := b.MustExec(t, "sh", "-c", "ls -la /etc | sha256sum"); after != etcBefore {
		t.Errorf("the host's /etc changed during the job:\n%s", b.MustExec(t, "ls", "-la", "/etc"))
	}
	if strings.Contains(string(repText), canary) {
		t.Errorf("the report holds the host's /etc/shadow:\n%s", repText)
	}
	if j := b.Journal(ctx, "-o", "cat"); strings.Contains(j, canary) {
		t.Errorf("the journal holds the host's /etc/shadow")
	}
	out, _, _ := b.Exec(ctx, "find", "/var/lib/hyper2kvm", "-name", "*.qcow2", "-type", "f")
	outputs := strings.Fields(out)
	for _, f := range outputs {
		if _, _, err := b.Exec(ctx, "sh", "-c", "qemu-img convert -O raw '"+f+"' /var/tmp/escape-out.raw && grep -q -a -F '"+canary+"' /var/tmp/escape-out.raw"); err == nil {
			t.Errorf("output %s holds the host's /etc/shadow", f)
		}
	}
	// The test means something only if the program ran: the job completed
	// with its last line in the report, and its log in the converted guest
	// shows every escape refused.
	if dir != "processed" {
		t.Fatalf("job ended %s: %s", dir, repText)
	}
	if !strings.Contains(string(repText), "hyper2kvm-escape done") || !strings.Contains(string(repText), guestShadow) {
		t.Fatalf("the report does not show the guest's program ran and read the guest's own /etc/shadow:\n%s", repText)
	}
	if len(outputs) != 1 {
		t.Fatalf("want one converted disk, found %q", outputs)
	}
	log, ok := fixture.ReadFile(t, b.Path(outputs[0]), "qcow2", "/root/escape.log")
	if !ok {
		t.Fatalf("no /root/escape.log in the converted guest")
	}
	t.Logf("the guest program's log:\n%s", log)
	if !strings.HasPrefix(log, "uid 0 euid 0") {
		t.Errorf("the guest program did not run as the guest's root: %q", log)
	}
	if strings.Contains(log, canary) || !strings.Contains(log, "/proc/1/root/etc/shadow holds: root:"+guestShadow) {
		t.Errorf("the sandbox's PID 1 root is not the guest's: %s", lineOf(log, "/proc/1/root/etc/shadow holds"))
	}
	for _, attempt := range []string{"chroot /escape-jail", "chroot .", "remount /etc rw",
		"unshare user+mount", "mknod block 8:0", "mount proc", "sethostname"} {
		if !strings.Contains(log, attempt+": operation not permitted") && !strings.Contains(log, attempt+": permission denied") &&
			!strings.Contains(log, attempt+": no such file or directory") {
			t.Errorf("%s was not refused: %s", attempt, lineOf(log, attempt))
		}
	}
}

func lineOf(text, prefix string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return "(no line)"
}

// buildEscape compiles escapeProgram as a static binary and returns it.
func buildEscape(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(escapeProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "escape")
	cmd := exec.Command("go", "build", "-o", out, "main.go")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GO111MODULE=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the escape program: %v\n%s", err, b)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

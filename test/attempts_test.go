package test

import (
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/test/box"
)

// attemptsQemuImg fails the first qemu-img info that a job's unit runs with
// the I/O error a flaky datastore gives, then is the real qemu-img: the
// job's first run fails retryably, its second succeeds.
const attemptsQemuImg = `#!/bin/bash
# Test wrapper (test/attempts_test.go).
if [ "$1" = info ] && grep -q hyper2kvm-job- /proc/self/cgroup && mkdir /srv/attempts-failed-once 2>/dev/null; then
	echo "qemu-img: Could not open '${!#}': Input/output error" >&2
	exit 1
fi
exec /usr/bin/qemu-img "$@"
`

// TestRetryAttemptShown: a job whose first run fails with an I/O error is
// run again (manifest retry) and ends in processed/; hyperctl show then
// names the host that ran it and lists the failed attempt with its host
// and error, and -o json carries the same.
func TestRetryAttemptShown(t *testing.T) {
	t.Parallel()
	b := relStart(t, box.Options{}, false, "")
	ctx := relCtx(t, 10*time.Minute)
	b.WriteFile(t, "/usr/local/bin/qemu-img", []byte(attemptsQemuImg), 0o755)
	host := strings.TrimSpace(b.MustExec(t, "hostname"))

	b.drop("", "flaky.json", relManifest("flaky", "/srv/src/disk.raw", "raw",
		`"retry":{"max_attempts":3,"backoff":"fixed","initial":"100ms","max":"1s"},`))
	if dir, rep := b.waitSettled(ctx, "flaky.json"); dir != "processed" {
		t.Fatalf("flaky ended in %s, want processed after a retry: %v", dir, rep)
	}
	if _, _, err := b.Exec(ctx, "test", "-d", "/srv/attempts-failed-once"); err != nil {
		t.Fatalf("the first run never failed: the wrapper was not used")
	}
	out, errOut, code := hyperctlRun(ctx, t, b.Box, "", "show", "flaky")
	if code != 0 {
		t.Fatalf("hyperctl show flaky: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("hyperctl show flaky:\n%s", out)
	for _, want := range []string{"Host:", host, "Attempts:", "1  on " + host, "input/output error"} {
		if !strings.Contains(strings.ToLower(out), strings.ToLower(want)) {
			t.Errorf("hyperctl show lacks %q:\n%s", want, out)
		}
	}
	js, _, _ := hyperctlRun(ctx, t, b.Box, "", "show", "-o", "json", "flaky")
	for _, want := range []string{`"host": "` + host + `"`, `"attempts": [`} {
		if !strings.Contains(js, want) {
			t.Errorf("hyperctl show -o json lacks %s:\n%s", want, js)
		}
	}
}

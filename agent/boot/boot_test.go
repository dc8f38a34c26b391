package boot

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// watch is exercised with /bin/sh standing in for qemu: it only reads a
// serial console from stdout. The real qemu runs in test/boot_test.go.
func TestWatch(t *testing.T) {
	tests := []struct {
		name, script string
		markers      []string
		want         string
	}{
		{"login", `printf 'Debian GNU/Linux 12 vmware-guest ttyS0\n\nvmware-guest lo'; sleep 0.2; printf 'gin: '; exec sleep 60`, []string{"login:", "Gave up"}, "login:"},
		{"fail-marker", `echo 'Gave up waiting for root file system device'; exec sleep 60`, []string{"login:", "Gave up"}, "Gave up"},
		{"exits", `echo 'kernel panic'; exit 0`, []string{"login:"}, ""},
		{"silent", `exec sleep 60`, []string{"login:"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			var console bytes.Buffer
			seen, tail, err := watch(ctx, "/bin/sh", []string{"-c", tt.script}, tt.markers, &console)
			if err != nil {
				t.Fatal(err)
			}
			if seen != tt.want {
				t.Errorf("seen %q, want %q (console %q)", seen, tt.want, console.String())
			}
			if tail != console.String() {
				t.Errorf("tail %q differs from the console log %q", tail, console.String())
			}
		})
	}
}

func TestOptionsErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := Test(ctx, Options{}); err == nil || !strings.Contains(err.Error(), "no image") {
		t.Errorf("no image: %v", err)
	}
	if _, err := Test(ctx, Options{Image: "/nonexistent/disk.qcow2"}); err == nil || !strings.Contains(err.Error(), "/nonexistent/disk.qcow2") {
		t.Errorf("missing image: %v", err)
	}
}

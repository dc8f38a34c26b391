package v2v_test

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/v2v"
)

// fakeTool puts a virt-v2v-in-place on PATH that records its arguments
// and VIRTIO_WIN in dir/args and dir/env, prints what virt-v2v 2.2 prints
// with --machine-readable, and exits with rc (printing errMsg as its
// machine-readable error first when set).
func fakeTool(t *testing.T, rc int, errMsg string) string {
	t.Helper()
	dir := t.TempDir()
	script := `#!/bin/sh
printf '%s\n' "$@" > ` + dir + `/args
echo "VIRTIO_WIN=$VIRTIO_WIN LIBGUESTFS_BACKEND=$LIBGUESTFS_BACKEND" > ` + dir + `/env
m() { printf '{ "message": "%s", "timestamp": "2026-01-01T00:00:00.0+00:00", "type": "%s" }\n' "$1" "$2"; echo "[   0.0] $1"; }
m "Setting up the source: -i disk overlay" message
m "Opening the source" message
m "Inspecting the source" message
m "Checking for sufficient free disk space in the guest" message
m "Converting Windows Server 2022 Standard to run on KVM" message
m "there is no QXL driver for this version of Windows" warning
if [ -n "` + errMsg + `" ]; then m "` + errMsg + `" error; echo "virt-v2v-in-place: error: ` + errMsg + `" >&2; exit ` + strconv.Itoa(rc) + `; fi
m "Mapping filesystem data to avoid copying unused and blank areas" message
m "Closing the overlay" message
m "Finishing off" message
exit ` + strconv.Itoa(rc) + `
`
	if err := os.WriteFile(filepath.Join(dir, v2v.Tool), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	return dir
}

func TestRun(t *testing.T) {
	tests := []struct {
		name    string
		rc      int
		errMsg  string
		wantErr string
	}{
		{"converts", 0, "", ""},
		{"its error surfaces", 1, "inspection could not detect the source guest", "virt-v2v-in-place failed (exit status 1): inspection could not detect the source guest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := fakeTool(t, tt.rc, tt.errMsg)
			var pcts []int
			var lines []string
			res, err := v2v.Run(context.Background(), v2v.Options{Image: "/work/overlay.qcow2", Format: "qcow2", VirtioWin: "/srv/virtio-win",
				WorkDir:   t.TempDir(),
				StaticIPs: []v2v.StaticIP{{MAC: "00:50:56:aa:bb:cc", Address: "192.168.10.20", Gateway: "192.168.10.1", Prefix: 24, DNS: []string{"192.168.10.53"}}},
				Progress:  func(p int, _ string) { pcts = append(pcts, p) },
				Log:       func(l string) { lines = append(lines, l) },
			})
			args, _ := os.ReadFile(filepath.Join(dir, "args"))
			want := "--machine-readable\n-i\ndisk\n-if\nqcow2\n--mac\n00:50:56:aa:bb:cc:ip:192.168.10.20,192.168.10.1,24,192.168.10.53\n/work/overlay.qcow2\n"
			if string(args) != want {
				t.Errorf("args:\n%s\nwant:\n%s", args, want)
			}
			if env, _ := os.ReadFile(filepath.Join(dir, "env")); string(env) != "VIRTIO_WIN=/srv/virtio-win LIBGUESTFS_BACKEND=direct\n" {
				t.Errorf("env %q", env)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(pcts, []int{5, 10, 40, 50, 60, 85, 90, 99}) {
					t.Errorf("progress %v", pcts)
				}
			} else if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
			if res.Converted != "Windows Server 2022 Standard" || !reflect.DeepEqual(res.Warnings(), []string{"there is no QXL driver for this version of Windows"}) {
				t.Errorf("result %+v", res)
			}
			if !reflect.DeepEqual(res.Env, []string{"VIRTIO_WIN=/srv/virtio-win"}) {
				t.Errorf("env in the result %q", res.Env)
			}
			if len(lines) == 0 || !strings.Contains(strings.Join(lines, "\n"), "[   0.0] Opening the source") {
				t.Errorf("log lines %q", lines)
			}
		})
	}
}

func TestArgsWithoutOptionalMACFields(t *testing.T) {
	got := v2v.Args(v2v.Options{Image: "/x.qcow2", StaticIPs: []v2v.StaticIP{{MAC: "00:50:56:00:00:01", Address: "10.0.0.5"}}})
	want := []string{"--machine-readable", "-i", "disk", "--mac", "00:50:56:00:00:01:ip:10.0.0.5", "/x.qcow2"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Args = %q, want %q", got, want)
	}
}

func TestCheckVirtioWin(t *testing.T) {
	dir := t.TempDir()
	iso := filepath.Join(dir, "virtio-win.iso")
	os.WriteFile(iso, []byte("CD001"), 0o644)
	for p, want := range map[string]string{"": "not set", "relative/x.iso": "not an absolute path", dir + "/nope": "no such file", dir: "", iso: "", "/dev/null": "neither"} {
		err := v2v.CheckVirtioWin(p)
		if (want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), want) {
			t.Errorf("CheckVirtioWin(%q) = %v, want %q", p, err, want)
		}
	}
}

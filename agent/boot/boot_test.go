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

func TestMachineArgs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		o       Options
		want    []string // substrings of the joined command line, in order
		wantErr string
	}{
		{"pc virtio", Options{Image: "a.qcow2", Format: "qcow2"},
			[]string{"-device virtio-net-pci,netdev=net0 ", "file=a.qcow2,format=qcow2,snapshot=on,cache=unsafe,if=none,id=d0 -device virtio-blk-pci,drive=d0"}, ""},
		{"q35: the NIC on the first root port (enp1s0), then the disks", Options{Image: "a", Format: "raw", Machine: "q35", ExtraDisks: []Disk{{Image: "b", Format: "raw"}}},
			[]string{"-machine q35", "pcie-root-port,id=rp1,chassis=1,bus=pcie.0,addr=0x2", "virtio-net-pci,netdev=net0,bus=rp1",
				"virtio-blk-pci,drive=d0,bus=rp2", "virtio-blk-pci,drive=d1,bus=rp3"}, ""},
		{"pvscsi and vmxnet3 with VMware's MAC", Options{Image: "a", Format: "raw", Bus: "pvscsi", NIC: "vmxnet3", MAC: "00:50:56:a1:b2:c3"},
			[]string{"vmxnet3,netdev=net0,mac=00:50:56:a1:b2:c3", "-device pvscsi,id=scsi0", "scsi-hd,drive=d0,bus=scsi0.0,scsi-id=0"}, ""},
		{"ide", Options{Image: "a", Format: "raw", Bus: "ide"}, []string{"if=ide,index=0"}, ""},
		{"ide on q35", Options{Image: "a", Format: "raw", Bus: "ide", Machine: "q35"}, nil, "q35 has no IDE"},
		{"unknown bus", Options{Image: "a", Bus: "sata"}, nil, `unknown disk bus "sata"`},
		{"unknown machine", Options{Image: "a", Machine: "virt"}, nil, `unknown machine "virt"`},
		{"unknown NIC", Options{Image: "a", NIC: "e1000"}, nil, `unknown NIC "e1000"`},
		{"a comma in the file name", Options{Image: "a,b", Format: "raw"}, []string{"file=a,,b,format=raw"}, ""},
	} {
		args, err := machineArgs(tc.o)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		line := strings.Join(args, " ") + " "
		at := 0
		for _, w := range tc.want {
			i := strings.Index(line[at:], w)
			if i < 0 {
				t.Errorf("%s: %q missing (or out of order) in\n%s", tc.name, w, line)
				break
			}
			at += i + len(w)
		}
	}
}

package inspect

import (
	"reflect"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/hive/hivetest"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

func server2022() hivetest.Windows {
	return hivetest.Windows{ProductName: "Windows Server 2022 Standard", EditionID: "ServerStandard",
		InstallationType: "Server", CurrentBuild: "20348", UBR: 2227, Major: 10, CurrentVersion: "6.3",
		DisplayVersion: "21H2", Arch: "AMD64", Hostname: "WIN-FILESRV01", VMwareTools: true}
}

func TestWindowsFromHives(t *testing.T) {
	kinds := func(w *report.Windows) []string {
		var k []string
		for _, b := range w.Blockers {
			k = append(k, b.Kind)
		}
		return k
	}
	tests := []struct {
		name  string
		w     func() hivetest.Windows
		check func(t *testing.T, w *report.Windows)
	}{
		{"server 2022 with VMware Tools", server2022, func(t *testing.T, w *report.Windows) {
			want := report.Windows{ProductName: "Windows Server 2022 Standard", Edition: "ServerStandard", Version: "10.0",
				Build: "20348.2227", DisplayVersion: "21H2", Arch: "x86_64", Hostname: "WIN-FILESRV01", Installation: "Server",
				SystemRoot: `C:\Windows`, ControlSet: "ControlSet001",
				VMwareTools: []string{`SOFTWARE\VMware, Inc.\VMware Tools`, "service:VMTools", "service:vmxnet3ndis6"}}
			if !reflect.DeepEqual(*w, want) {
				t.Errorf("got  %+v\nwant %+v", *w, want)
			}
		}},
		{"2012 R2 client-less fields, 32-bit, control set 2", func() hivetest.Windows {
			return hivetest.Windows{ProductName: "Windows 8.1 Pro", EditionID: "Professional", CurrentBuild: "9600",
				CurrentVersion: "6.3", Arch: "x86", Hostname: "DESK", ControlSet: 2}
		}, func(t *testing.T, w *report.Windows) {
			if w.Version != "6.3" || w.Build != "9600" || w.Arch != "i386" || w.ControlSet != "ControlSet002" || w.Hostname != "DESK" {
				t.Errorf("got %+v", *w)
			}
			if w.Installation != "Client" || len(w.VMwareTools) != 0 || len(w.Blockers) != 0 {
				t.Errorf("got %+v", *w)
			}
		}},
		{"server core", func() hivetest.Windows {
			w := server2022()
			w.InstallationType, w.ProductName = "Server Core", "Windows Server 2019 Datacenter"
			return w
		}, func(t *testing.T, w *report.Windows) {
			if w.Installation != "Server" {
				t.Errorf("installation %q", w.Installation)
			}
		}},
		{"virtio drivers already there", func() hivetest.Windows {
			w := server2022()
			w.Virtio = []string{"vioscsi", "viostor", "netkvm"}
			return w
		}, func(t *testing.T, w *report.Windows) {
			if !reflect.DeepEqual(w.VirtioDrivers, []string{"viostor", "vioscsi", "netkvm"}) {
				t.Errorf("virtio %q", w.VirtioDrivers)
			}
		}},
		{"fast startup and pending updates", func() hivetest.Windows {
			w := server2022()
			w.HiberbootEnabled, w.RebootPending = true, true
			return w
		}, func(t *testing.T, w *report.Windows) {
			if k := kinds(w); !reflect.DeepEqual(k, []string{"pending-updates", "fast-startup"}) {
				t.Errorf("blockers %q", k)
			}
			for _, b := range w.Blockers {
				if b.Reason == "" || !strings.Contains(b.Action, "source VM") {
					t.Errorf("blocker without reason or action: %+v", b)
				}
			}
		}},
		{"static addresses", func() hivetest.Windows {
			w := server2022()
			w.StaticNICs = []hivetest.NIC{{GUID: "{6F4C2D1A-0000-4000-8000-000000000001}", Addresses: []string{"192.168.10.20", "192.168.10.21"},
				Masks: []string{"255.255.255.0", "255.255.0.0"}, Gateways: []string{"192.168.10.1"}, DNS: "192.168.10.53,8.8.8.8"},
				{GUID: "{no-address}", Addresses: []string{"0.0.0.0"}, Masks: []string{"0.0.0.0"}}}
			return w
		}, func(t *testing.T, w *report.Windows) {
			want := []report.WindowsNIC{{ID: "{6F4C2D1A-0000-4000-8000-000000000001}", Addresses: []string{"192.168.10.20", "192.168.10.21"},
				Prefix: []int{24, 16}, Gateways: []string{"192.168.10.1"}, DNS: []string{"192.168.10.53", "8.8.8.8"}}}
			if !reflect.DeepEqual(w.NICs, want) {
				t.Errorf("nics %+v\nwant %+v", w.NICs, want)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hw := tt.w()
			w, err := WindowsFromHives(hw.Software(), hw.System())
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, w)
		})
	}
}

func TestWindowsFromBadHives(t *testing.T) {
	w := server2022()
	empty := hivetest.Build(&hivetest.Key{Name: "ROOT"})
	tests := []struct {
		name    string
		sw, sys []byte
		want    string
		partial bool
	}{
		{"no SOFTWARE", nil, w.System(), "no SOFTWARE hive", false},
		{"garbage SOFTWARE", []byte("MZ not a hive at all"), w.System(), "SOFTWARE: hive: not a registry hive", false},
		{"SOFTWARE without CurrentVersion", empty, w.System(), `subkey "Microsoft"`, false},
		{"no SYSTEM", w.Software(), nil, "no SYSTEM hive", true},
		{"SYSTEM without control set", w.Software(), empty, "the current control set", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := WindowsFromHives(tt.sw, tt.sys)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if tt.partial && (got == nil || got.ProductName == "") {
				t.Errorf("SOFTWARE's findings lost: %+v", got)
			}
		})
	}
}

func TestMaskLen(t *testing.T) {
	for m, want := range map[string]int{"255.255.255.0": 24, "255.255.255.255": 32, "0.0.0.0": 0, "255.255.254.0": 23,
		"255.0.255.0": -1, "255.255.255": -1, "a.b.c.d": -1, "256.0.0.0": -1} {
		if got := maskLen(m); got != want {
			t.Errorf("maskLen(%q) = %d, want %d", m, got, want)
		}
	}
}

func TestVolumeBlockers(t *testing.T) {
	g := &report.Guest{Partitions: []report.Partition{
		{Number: 1, Type: "ntfs", FSType: "ntfs"},
		{Number: 2, Type: "ntfs", FSType: "BitLocker"},
		{Number: 1, Disk: 1, Type: "windows-ldm"},
	}}
	bs := volumeBlockers(g)
	if len(bs) != 2 || bs[0].Kind != "bitlocker" || !strings.Contains(bs[0].Reason, "/dev/sda2") ||
		bs[1].Kind != "dynamic-disk" || !strings.Contains(bs[1].Reason, "disk 2") {
		t.Fatalf("blockers %+v", bs)
	}
	if !isWindowsGuest(g) {
		t.Error("not taken for Windows")
	}
	err := Blocked(&report.Windows{Blockers: bs})
	if err == nil || !strings.Contains(err.Error(), "2 blockers") || !strings.Contains(err.Error(), "manage-bde -off") {
		t.Errorf("Blocked: %v", err)
	}
	if Blocked(&report.Windows{}) != nil {
		t.Error("no blockers, still blocked")
	}
}

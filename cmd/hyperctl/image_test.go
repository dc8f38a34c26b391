package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// TestSniffImage: the bytes decide whether submit sends a manifest or an
// image; a text file named as an image is refused.
func TestSniffImage(t *testing.T) {
	dir := t.TempDir()
	qcow := append([]byte("QFI\xfb\x00\x00\x00\x03"), make([]byte, 504)...)
	for _, tc := range []struct {
		name, content, want, err string
	}{
		{"web01.json", `{"version":"1.0","name":"web01"}`, "", ""},
		{"web01.yaml", "version: \"1.0\"\nname: web01\n", "", ""},
		{"blank.vmdk", string(make([]byte, 4096)), "raw", ""},
		{"disk.img", string(qcow), "qcow2", ""},
		{"notes.vmdk", "just some notes\n", "", "is a text file"},
		{"empty.vhd", "", "", "is empty"},
		{"d.vmdk", "# Disk DescriptorFile\nversion=1\n", "vmdk", ""},
	} {
		p := filepath.Join(dir, tc.name)
		os.WriteFile(p, []byte(tc.content), 0o644)
		got, err := sniffImage(p)
		if got != tc.want || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %q, %v; want %q, error with %q", tc.name, got, err, tc.want, tc.err)
		}
	}
}

// reportingClient is fakeClient that also reads reports.
type reportingClient struct {
	*fakeClient
	reports map[string]string
}

func (r *reportingClient) JobReport(ctx context.Context, id string, interactive bool) ([]byte, error) {
	return []byte(r.reports[id]), nil
}

// TestShowReport: hyperctl show of a finished job prints the guest's
// operating system and every change FIX made as a diff.
func TestShowReport(t *testing.T) {
	fake := &fakeClient{jobs: []jobs.Job{{ID: "j1", Name: "web01", State: jobs.Completed}}}
	rc := &reportingClient{fakeClient: fake, reports: map[string]string{"j1": `{"report_version":"1","job_id":"j1","status":"completed",
		"guest":{"os":{"type":"linux","id":"debian","version_id":"12","pretty_name":"Debian GNU/Linux 12 (bookworm)"}},
		"changes":[{"fix":"fstab","file":"/etc/fstab","before":"# fstab\n/dev/sda1 / ext4 defaults 0 1\n","after":"# fstab\nUUID=0b1c / ext4 defaults 0 1\n"}]}`}}
	e, _, _ := testEnv(nil, fake)
	e.dial = func(context.Context) (agentClient, error) { return rc, nil }
	r := runWith(t, e, "show", "j1")
	for _, want := range []string{"Guest OS: Debian GNU/Linux 12 (bookworm)", "Changes (1):", "fstab: /etc/fstab",
		"      # fstab", "    - /dev/sda1 / ext4 defaults 0 1", "    + UUID=0b1c / ext4 defaults 0 1"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("show lacks %q:\n%s", want, r.stdout)
		}
	}
}

// TestShowReportTarget: hyperctl show prints the domain the job defined,
// its UUID, what it did in libvirt and each NIC's MAC; a job without a
// domain prints none of it.
func TestShowReportTarget(t *testing.T) {
	for _, tc := range []struct {
		name, target string
		want, not    []string
	}{
		{"defined", `,"target":{"domain":"web01","uuid":"0b1c2d3e-0000-4000-8000-000000000001","firmware":"efi",
			"nics":[{"source_network":"VM Network","mac":"00:50:56:aa:bb:01","bridge":"br0"},{"mac":"00:50:56:aa:bb:02","network":"isolated"}],
			"libvirt":{"uri":"qemu:///system","defined":true,"autostart":true,"pool":"images","emulated":true}}`,
			[]string{"Domain: web01 (UUID 0b1c2d3e-0000-4000-8000-000000000001, efi)",
				"Libvirt: qemu:///system: defined, autostart, disks in pool images, type qemu (no KVM)",
				`  NIC 00:50:56:aa:bb:01 on bridge br0 (source network "VM Network")`, "  NIC 00:50:56:aa:bb:02 on network isolated"}, nil},
		{"xml only", `,"target":{"domain":"plain","uuid":"u1","firmware":"bios","nics":[]}`,
			[]string{"Domain: plain (UUID u1, bios)"}, []string{"Libvirt:"}},
		{"none", ``, nil, []string{"Domain:", "Libvirt:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeClient{jobs: []jobs.Job{{ID: "j1", Name: "web01", State: jobs.Completed}}}
			rc := &reportingClient{fakeClient: fake, reports: map[string]string{"j1": `{"report_version":"1","job_id":"j1","status":"completed"` + tc.target + `}`}}
			e, _, _ := testEnv(nil, fake)
			e.dial = func(context.Context) (agentClient, error) { return rc, nil }
			r := runWith(t, e, "show", "j1")
			for _, want := range tc.want {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("show lacks %q:\n%s", want, r.stdout)
				}
			}
			for _, not := range tc.not {
				if strings.Contains(r.stdout, not) {
					t.Errorf("show has %q:\n%s", not, r.stdout)
				}
			}
		})
	}
}

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

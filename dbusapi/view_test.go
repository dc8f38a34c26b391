package dbusapi

import (
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// TestViewerShow: a job's details are shown to root and holders of the
// read action, to its submitter, and to nobody else; a drop (submitted by
// nobody, -1) only to the first.
func TestViewerShow(t *testing.T) {
	full := jobs.Job{ID: "a", Name: "web01", State: jobs.Failed, SubmittedBy: 1001,
		Manifest: "/srv/vms/web01.json", Outputs: []string{"/out/a.qcow2"}, ReportPath: "/out/report.json",
		Error: "cannot open /srv/vms/web01.vmdk", Warnings: []string{"guest web01.example.com"}}
	drop := full
	drop.SubmittedBy = -1
	for _, tc := range []struct {
		name string
		v    viewer
		j    jobs.Job
		sees bool
	}{
		{"root", viewer{all: true, uid: 0}, full, true},
		{"group member", viewer{all: true, uid: 1002}, full, true},
		{"submitter", viewer{uid: 1001}, full, true},
		{"other user", viewer{uid: 1003}, full, false},
		{"unknown caller", viewer{uid: -1}, drop, false},
		{"other user, a drop", viewer{uid: 1003}, drop, false},
	} {
		got := tc.v.show(tc.j)
		if tc.sees {
			if got.Manifest != tc.j.Manifest || got.Error != tc.j.Error {
				t.Errorf("%s: details hidden: %+v", tc.name, got)
			}
			continue
		}
		if got.Manifest != "" || got.Outputs != nil || got.ReportPath != "" || got.Error != "" || got.Warnings != nil {
			t.Errorf("%s: details shown: %+v", tc.name, got)
		}
		if got.ID != tc.j.ID || got.Name != tc.j.Name || got.State != tc.j.State {
			t.Errorf("%s: summary lost: %+v", tc.name, got)
		}
	}
	for k := range detailProps {
		if _, ok := jobProps(full)[k]; !ok {
			t.Errorf("detail %s is no Job property", k)
		}
	}
}

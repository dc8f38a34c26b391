package api_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// TestImagesEndpoint: GET /api/workflow/images lists the agent's images
// with format, size and the generated manifest (as JSON, not a string);
// it names files, so over TCP it needs the token.
func TestImagesEndpoint(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.SetImages([]apitype.Image{{Path: "/srv/import/web02.qcow2", Format: "qcow2", Size: 1 << 30,
		Manifest: `{"version":"1.0","name":"web02","pipeline":{"load":{"source_type":"qcow2","source_path":"/srv/import/web02.qcow2"}}}`}},
		[]string{"/srv/import"})
	if a := e.do(t, "GET", "/api/workflow/images", "", ""); a.status != 401 {
		t.Errorf("images without the token: %d %s, want 401", a.status, a.body)
	}
	a := e.do(t, "GET", "/api/workflow/images", "", token)
	var got struct {
		Images []struct {
			Path, Format string
			Size         int64
			Manifest     struct{ Name string }
		}
		Dirs []string
	}
	if err := json.Unmarshal(a.body, &got); err != nil || a.status != 200 || len(got.Images) != 1 || got.Images[0].Manifest.Name != "web02" ||
		got.Images[0].Format != "qcow2" || got.Images[0].Size != 1<<30 || len(got.Dirs) != 1 {
		t.Errorf("images: %d %v %s", a.status, err, a.body)
	}
}

// TestListsWithoutDetails: job lists over TCP without the token leave out
// every detail (paths, error, warnings) and say so; with it they carry them.
func TestListsWithoutDetails(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.Set(jobs.Job{ID: "f", Name: "web01", State: jobs.Failed, FinishedAt: time.Now(), Manifest: "/srv/vms/web01.json",
		Error: "cannot open /srv/vms/web01.vmdk", ReportPath: "/var/lib/hyper2kvm/manifest-workflow/failed/x/web01.json.error.json",
		Outputs: []string{"/var/lib/hyper2kvm/output/x/web01.qcow2"}})
	for _, p := range []string{"/api/workflow/jobs", "/api/workflow/jobs?status=failed"} {
		a := e.do(t, "GET", p, "", "")
		if a.status != 200 || strings.Contains(string(a.body), "/srv/vms") || strings.Contains(string(a.body), "/var/lib") ||
			!strings.Contains(string(a.body), `"details_hidden":true`) || !strings.Contains(string(a.body), `"name":"web01"`) {
			t.Errorf("GET %s without the token: %d %s", p, a.status, a.body)
		}
		if a := e.do(t, "GET", p, "", token); !strings.Contains(string(a.body), "/srv/vms/web01.vmdk") || strings.Contains(string(a.body), "details_hidden") {
			t.Errorf("GET %s with the token: %d %s", p, a.status, a.body)
		}
	}
}

// TestReportEndpoint: GET /api/workflow/jobs/{id}/report is the agent's
// report as JSON, 404 while there is none, and needs the token on TCP.
func TestReportEndpoint(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.Set(jobs.Job{ID: "r", Name: "r", State: jobs.Completed, FinishedAt: time.Now()})
	e.fake.Set(jobs.Job{ID: "n", Name: "n", State: jobs.Running})
	e.fake.SetReport("r", []byte(`{"report_version":"1","job_id":"r","guest":{"os":{"type":"linux","pretty_name":"Alpine Linux v3.20"}}}`))
	if a := e.do(t, "GET", "/api/workflow/jobs/r/report", "", ""); a.status != 401 {
		t.Errorf("report without the token: %d", a.status)
	}
	if a := e.do(t, "GET", "/api/workflow/jobs/r/report", "", token); a.status != 200 || !strings.Contains(string(a.body), "Alpine Linux v3.20") {
		t.Errorf("report: %d %s", a.status, a.body)
	}
	if a := e.do(t, "GET", "/api/workflow/jobs/n/report", "", token); a.status != 404 {
		t.Errorf("report of a running job: %d %s, want 404", a.status, a.body)
	}
}

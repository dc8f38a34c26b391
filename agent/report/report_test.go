package report_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

func TestReadRoundTrip(t *testing.T) {
	zone := time.FixedZone("CEST", 2*3600)
	r := report.Report{ReportVersion: report.Version, Name: "web01", Status: "completed",
		StartedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, zone),
		Stages:    []report.Stage{{Name: "load", Status: "ok"}, {Name: "convert", Status: "failed", Error: "boom"}},
		Artifacts: []report.Artifact{{Path: "/o/a.qcow2", Kind: "disk"}, {Path: "/o/domain.xml", Kind: "domain-xml"}}}
	b, _ := json.Marshal(r)
	if !strings.Contains(string(b), `"started_at":"2025-01-02T03:04:05+02:00"`) {
		t.Errorf("times are not RFC 3339 with their zone: %s", b)
	}
	p := filepath.Join(t.TempDir(), "report.json")
	os.WriteFile(p, b, 0o644)
	got, err := report.Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if got.Stage("convert").Error != "boom" || got.Stage("fix") != nil || len(got.Disks()) != 1 {
		t.Errorf("read back %+v", got)
	}
	os.WriteFile(p, []byte(`{"report_version": "99"}`), 0o644)
	if _, err := report.Read(p); err == nil || !strings.Contains(err.Error(), `"99"`) {
		t.Errorf("unknown version: %v", err)
	}
}

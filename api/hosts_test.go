package api_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

func TestHosts(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.Set(jobs.Job{ID: "a", Name: "a", State: jobs.Running})
	a := e.do(t, "GET", "/api/workflow/hosts", "", "")
	if a.status != http.StatusOK {
		t.Fatalf("%d %s", a.status, a.body)
	}
	var out struct {
		Hosts []apitype.Host `json:"hosts"`
	}
	if err := json.Unmarshal(a.body, &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Hosts) != 2 || out.Hosts[0].Name != "fake-a" || out.Hosts[0].Busy != 1 || out.Hosts[0].Labels["datastore"] != "ds01" ||
		!out.Hosts[0].Alive || out.Hosts[1].Alive || out.Hosts[1].Queue != "draining" {
		t.Errorf("hosts: %s", a.body)
	}
}

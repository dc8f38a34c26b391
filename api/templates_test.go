package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/templates"
	"github.com/hyper2kvm/hyper2kvm/api"
)

func TestTemplatesEndpoints(t *testing.T) {
	e := newEnv(t, func(c *api.Config) {
		c.Templates = templates.Library{Dirs: []string{"../packaging/templates"}}
	})
	tests := []struct {
		name, method, path, body string
		status                   int
		want                     string
	}{
		{"list", "GET", "/api/workflow/templates", "", http.StatusOK, `"name":"linux-default"`},
		{"one", "GET", "/api/workflow/templates/rhel-lvm", "", http.StatusOK, `"load.source_path"`},
		{"missing", "GET", "/api/workflow/templates/nope", "", http.StatusNotFound, "no such template"},
		{"render", "POST", "/api/workflow/templates/quick-no-fix/render", `{"set":{"load.source_path":"/srv/a/b.vhdx","name":"b"}}`, http.StatusOK, `"source_path":"/srv/a/b.vhdx"`},
		{"render without required", "POST", "/api/workflow/templates/quick-no-fix/render", `{}`, http.StatusUnprocessableEntity, `"path":"pipeline.load.source_path"`},
		{"render bad body", "POST", "/api/workflow/templates/quick-no-fix/render", `[1]`, http.StatusBadRequest, "bad-request"},
		{"render windows through virt-v2v", "POST", "/api/workflow/templates/windows-v2v/render", `{"set":{"load.source_path":"/a.vmdk"}}`, http.StatusOK, `"backend":"virt-v2v"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := e.do(t, tc.method, tc.path, tc.body, "")
			if a.status != tc.status || !strings.Contains(string(a.body), tc.want) {
				t.Fatalf("%d %s, want %d with %q", a.status, a.body, tc.status, tc.want)
			}
		})
	}
	a := e.do(t, "POST", "/api/workflow/templates/linux-default/render", `{"set":{"load.source_path":"/srv/w.vmdk"}}`, "")
	var got struct{ Manifest json.RawMessage }
	if err := json.Unmarshal(a.body, &got); err != nil {
		t.Fatal(err)
	}
	if _, err := manifest.Parse(got.Manifest); err != nil {
		t.Fatalf("rendered manifest does not parse: %v\n%s", err, got.Manifest)
	}
}

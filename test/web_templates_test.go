package test

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/templates"
	"github.com/hyper2kvm/hyper2kvm/api"
	"github.com/hyper2kvm/hyper2kvm/api/apitest"
	"github.com/hyper2kvm/hyper2kvm/test/box"
)

// TestWebBuilderStartsFromATemplate picks a shipped template in the
// builder (headless Chromium, the real bridge handler, the fake agent):
// the form takes the template's manifest, the user fills the source path
// and the manifest validates; an unavailable template is not offered.
func TestWebBuilderStartsFromATemplate(t *testing.T) {
	chromiumPath(t)
	t.Parallel()
	srv := httptest.NewUnstartedServer(api.New(api.Config{
		Client: apitest.New(), Token: "web-test-token", Version: "test",
		Schema:    manifest.Schema(),
		Templates: templates.Library{Dirs: []string{filepath.Join(box.RepoRoot(), "packaging", "templates")}},
	}))
	srv.Config.ConnContext = api.ConnContext
	srv.Start()
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := startChromium(t, 1280, 900)
	c.navigate(ctx, srv.URL+"/")
	c.mustEval(ctx, pageHelpers, nil)
	c.waitJS(ctx, "the templates in the builder", `[...T.$("template-select").options].some(o => o.value === "compress-for-archive")`,
		`[...T.$("template-select").options].map(o => o.value)`)
	var offered []string
	c.mustEval(ctx, `[...T.$("template-select").options].map(o => o.value)`, &offered)
	for _, o := range offered {
		if o == "windows-v2v" && !hasBackend("virt-v2v") {
			t.Errorf("the builder offers windows-v2v, which this build cannot run: %v", offered)
		}
	}
	c.mustEval(ctx, `T.choose("template-select", "compress-for-archive"); true`, nil)
	c.waitJS(ctx, "the template's fields in the form", `T.$("f-pipeline-convert-compress").checked && !T.$("f-pipeline-fix-enabled").checked`,
		`JSON.stringify(H2KBuilder.doc)`)
	c.mustEval(ctx, `T.type("f-name", "arch01"); T.type("f-pipeline-load-source-path", "/data/arch01.vmdk"); true`, nil)
	c.waitJS(ctx, "the manifest to be valid", `T.text("validity") === "Valid manifest"`, `[T.text("validity"), T.text("general-errors")]`)
	var doc map[string]any
	c.mustEval(ctx, `H2KBuilder.doc`, &doc)
	if doc["priority"] != float64(-50) || doc["name"] != "arch01" {
		t.Errorf("builder manifest: %v", doc)
	}
	c.screenshot(ctx, webOutput(t), "builder-from-template.png")
	if p := c.pageProblems(); len(p) > 0 {
		t.Errorf("errors in the page: %v", p)
	}
}

func hasBackend(b string) bool {
	for _, x := range manifest.Backends() {
		if x == b {
			return true
		}
	}
	return false
}

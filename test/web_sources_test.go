package test

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/api"
	"github.com/hyper2kvm/hyper2kvm/api/apitest"
)

// pickerAgent is the fake agent with one source and a small inventory.
type pickerAgent struct{ *apitest.Fake }

func (pickerAgent) ListSources(ctx context.Context, interactive bool) ([]apitype.Source, error) {
	return []apitype.Source{{Name: "vc1", Type: "vsphere", URL: "https://vc.example/sdk", Username: "svc", PasswordSet: true}}, nil
}

func (pickerAgent) BrowseSource(ctx context.Context, name, path string, interactive bool) ([]apitype.InventoryEntry, error) {
	vm := func(n, power string) apitype.InventoryEntry {
		return apitype.InventoryEntry{Kind: "vm", Name: n, Path: "/DC0/vm/web/" + n, PowerState: power, CPUs: 2, MemoryMB: 2048,
			Disks: []apitype.InventoryDisk{{Label: "Hard disk 1", Bytes: 16 << 30}}}
	}
	switch path {
	case "/":
		return []apitype.InventoryEntry{{Kind: "datacenter", Name: "DC0", Path: "/DC0"}}, nil
	case "/DC0":
		return []apitype.InventoryEntry{{Kind: "folder", Name: "web", Path: "/DC0/vm/web"}}, nil
	case "/DC0/vm/web":
		return []apitype.InventoryEntry{vm("web01", "poweredOff"), vm("web02", "poweredOn")}, nil
	}
	return nil, apierr.New(apierr.NoSuchSource, "source vc1 has no VM %s", path)
}

// The builder's source picker: open the tree, check two VMs, and the
// manifest becomes a batch that reads both from the source.
func TestWebSourcePicker(t *testing.T) {
	chromiumPath(t)
	fake := pickerAgent{apitest.New()}
	srv := httptest.NewUnstartedServer(api.New(api.Config{Client: fake, Token: "web-test-token", Version: "test", Schema: manifest.Schema()}))
	srv.Config.ConnContext = api.ConnContext
	srv.Start()
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := startChromium(t, 1280, 900)
	c.navigate(ctx, srv.URL+"/")
	c.mustEval(ctx, pageHelpers, nil)
	// The token, entered on the sign-in screen as a user would.
	c.waitJS(ctx, "the sign-in screen", `!T.$("signin").hidden`, `T.$("signin").hidden`)
	c.mustEval(ctx, `T.$("signin-token").value = "web-test-token"; T.click("signin-submit"); true`, nil)
	c.waitJS(ctx, "the token", `sessionStorage.getItem("hyper2kvm-api-token") === "web-test-token" && T.text("token-button").startsWith("Signed in as ")`, `T.text("token-button")`)
	c.waitJS(ctx, "the builder", `T.$("validity").dataset.checked !== undefined`, `T.text("validity")`)

	c.mustEval(ctx, `T.$("picker").open = true; true`, nil)
	c.waitJS(ctx, "the datacenter", `T.text("pick-list").includes("DC0/")`, `[T.text("pick-status"), T.text("pick-list")]`)
	c.mustEval(ctx, `T.click("pick-open-0"); true`, nil)
	c.waitJS(ctx, "the folder", `T.text("pick-list").includes("web/")`, `[T.text("pick-status"), T.text("pick-list")]`)
	c.mustEval(ctx, `T.click("pick-open-0"); true`, nil)
	c.waitJS(ctx, "the VMs", `T.text("pick-list").includes("web02 — poweredOn, 2 CPU, 2048 MiB, 1 disk(s)")`, `[T.text("pick-status"), T.text("pick-list")]`)
	c.mustEval(ctx, `T.check("pick-vm-0", true); T.check("pick-vm-1", true); T.check("pick-snapshot", true); T.click("pick-use"); true`, nil)
	c.waitJS(ctx, "the batch", `H2KBuilder.doc.batch === true && H2KBuilder.doc.vms.length === 2`, `[T.text("pick-status"), JSON.stringify(H2KBuilder.doc)]`)
	c.screenshot(ctx, webOutput(t), "picker.png")
	var doc struct {
		VMs []struct {
			Name     string
			Pipeline struct{ Load manifest.Load }
		}
	}
	c.mustEval(ctx, `H2KBuilder.doc`, &doc)
	for i, want := range []string{"web01", "web02"} {
		l := doc.VMs[i].Pipeline.Load
		if doc.VMs[i].Name != want || l.SourceType != "vsphere" || l.Source != "vc1" || l.VM != "/DC0/vm/web/"+want || !l.Snapshot {
			t.Errorf("vms[%d] = %+v", i, doc.VMs[i])
		}
	}
	if p := c.pageProblems(); len(p) > 0 {
		t.Errorf("page problems: %v", p)
	}
}

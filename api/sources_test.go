package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/api"
	"github.com/hyper2kvm/hyper2kvm/api/apitest"
)

// sourceFake is the fake agent with one source, vc1.
type sourceFake struct {
	*apitest.Fake
	path string // the last path browsed
}

func (f *sourceFake) ListSources(ctx context.Context, interactive bool) ([]apitype.Source, error) {
	return []apitype.Source{{Name: "vc1", Type: "vsphere", URL: "https://vc/sdk", Username: "svc", PasswordSet: true}}, nil
}

func (f *sourceFake) BrowseSource(ctx context.Context, name, path string, interactive bool) ([]apitype.InventoryEntry, error) {
	if name != "vc1" {
		return nil, apierr.New(apierr.NoSuchSource, "source %q is not defined", name)
	}
	f.path = path
	return []apitype.InventoryEntry{{Kind: "vm", Name: "web01", Path: "/DC0/vm/web01", PowerState: "poweredOff", CPUs: 2}}, nil
}

// TestSources runs the endpoints against the agent's connection itself
// and through api.Lazy, which is how the installed bridge holds it (it
// listed no source at all before Lazy passed the calls on).
func TestSources(t *testing.T) {
	for _, lazy := range []bool{false, true} {
		t.Run(map[bool]string{false: "direct", true: "lazy"}[lazy], func(t *testing.T) {
			var f *sourceFake
			e := newEnv(t, func(c *api.Config) {
				f = &sourceFake{Fake: c.Client.(*apitest.Fake)}
				c.Client = f
				if lazy {
					c.Client = api.NewLazy(func(ctx context.Context) (api.Client, error) { return f, nil })
				}
			})
			a := e.do(t, "GET", "/api/workflow/sources", "", token)
			if a.status != http.StatusOK || !strings.Contains(string(a.body), `"name":"vc1"`) || strings.Contains(string(a.body), "password\":\"") {
				t.Errorf("sources: %d %s", a.status, a.body)
			}
			a = e.do(t, "GET", "/api/workflow/sources/vc1/vms?path=/DC0/vm", "", token)
			if a.status != http.StatusOK || !strings.Contains(string(a.body), `"path":"/DC0/vm/web01"`) || f.path != "/DC0/vm" {
				t.Errorf("vms: %d %s (browsed %q)", a.status, a.body, f.path)
			}
			a = e.do(t, "GET", "/api/workflow/sources/nope/vms", "", token)
			if a.status != http.StatusNotFound || a.errCode(t) != "no-such-source" {
				t.Errorf("missing source: %d %s", a.status, a.body)
			}
		})
	}
}

package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/config"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

func TestMatchPlacement(t *testing.T) {
	labels := map[string]string{"datastore": "ds01", "site": "paris"}
	for _, tc := range []struct {
		terms []string
		want  bool
	}{
		{nil, true},
		{[]string{"datastore=ds01"}, true},
		{[]string{"datastore=ds02"}, false},
		{[]string{"datastore=ds01", "site=paris"}, true},
		{[]string{"datastore=ds01", "site=lyon"}, false},
		{[]string{"rack=4"}, false},
		{[]string{"kvm01"}, true},
		{[]string{"kvm02"}, false},
		{[]string{"kvm02", "kvm01"}, true},
		{[]string{"kvm01", "datastore=ds02"}, false},
		{[]string{"kvm02", "datastore=ds01"}, false},
	} {
		if got := matchPlacement(tc.terms, "kvm01", labels); got != tc.want {
			t.Errorf("matchPlacement(%q) on kvm01%v = %v, want %v", tc.terms, labels, got, tc.want)
		}
	}
}

func TestWaitingReason(t *testing.T) {
	hosts := []apitype.Host{
		{Name: "a", Labels: map[string]string{"datastore": "ds01"}, Alive: true},
		{Name: "b", Labels: map[string]string{"datastore": "ds03", "site": "x"}, Alive: true},
		{Name: "dead", Labels: map[string]string{"datastore": "ds02"}, Alive: false},
	}
	for _, tc := range []struct {
		terms []string
		want  string
	}{
		{[]string{"datastore=ds02"}, "no host matches placement datastore=ds02 (hosts: a[datastore=ds01], b[datastore=ds03,site=x])"},
		{[]string{"datastore=ds03"}, "waiting for a host matching placement datastore=ds03 to take it (b)"},
		{[]string{"c"}, "no host matches placement c (hosts: a[datastore=ds01], b[datastore=ds03,site=x])"},
	} {
		if got := waitingReason(tc.terms, hosts); got != tc.want {
			t.Errorf("waitingReason(%q) =\n%q, want\n%q", tc.terms, got, tc.want)
		}
	}
}

// TestPlacementOnOneHost: on one host, a job whose placement the host
// does not match waits and says why in its status text; one it matches
// runs.
func TestPlacementOnOneHost(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Host.Name = "kvm01"
		c.Host.Labels = config.Labels{"datastore": "ds01"}
	})
	e.start()
	e.drop("elsewhere.json", e.manifest("elsewhere", `"placement":["datastore=ds02"],`))
	e.drop("here.json", e.manifest("here", `"placement":["datastore=ds01","kvm01"],`))
	if j, _ := e.a.Job(unitJobID(e.nextStart())); j.Name != "here" {
		t.Fatalf("started %s, want here", j.Name)
	}
	id := e.jobID("elsewhere")
	e.waitFor("the waiting reason", func() bool {
		j, _ := e.a.Job(id)
		return j.StatusText != ""
	})
	j, _ := e.a.Job(id)
	want := "no host matches placement datastore=ds02 (hosts: kvm01[datastore=ds01])"
	if j.State != jobs.Pending || j.StatusText != want || j.Host != "" {
		t.Errorf("job placed on no host: %s, host %q, status %q; want pending, no host, %q", j.State, j.Host, j.StatusText, want)
	}
	e.a.wake()
	select {
	case u := <-e.units.started:
		t.Fatalf("%s started on a host its placement does not match", u)
	case <-time.After(300 * time.Millisecond):
	}
	hs, err := e.a.Hosts(t.Context())
	if err != nil || len(hs) != 1 || hs[0].Name != "kvm01" || hs[0].Labels["datastore"] != "ds01" || !hs[0].Alive {
		t.Errorf("Hosts = %+v, %v", hs, err)
	}
	if !strings.Contains(j.StatusText, "ds02") {
		t.Errorf("status %q does not name the placement", j.StatusText)
	}
}

package dbusapi

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/analytics"
	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/templates"
	"github.com/hyper2kvm/hyper2kvm/polkit"
)

// Housekeep makes the fake backend a Housekeeper: one old report, removed
// unless dryRun.
func (f *fakeBackend) Housekeep(ctx context.Context, dryRun bool) ([]apitype.GCItem, error) {
	return []apitype.GCItem{{Path: "/q/processed/2020-01-01/a.json.report.json", Kind: "settled-file", Reason: "old", Size: 42, Deleted: !dryRun}}, nil
}

func TestGarbageCollect(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	f.authz.set(map[string]bool{polkit.ActionSubmit: true}, nil)
	if _, err := f.client.GarbageCollect(ctx, true, false); !apierr.Is(err, apierr.AccessDenied) || !strings.Contains(err.Error(), polkit.ActionManage) {
		t.Errorf("GarbageCollect without manage: %v, want AccessDenied naming %s", err, polkit.ActionManage)
	}
	f.authz.set(map[string]bool{polkit.ActionManage: true}, nil)
	for _, dry := range []bool{true, false} {
		items, err := f.client.GarbageCollect(ctx, dry, false)
		if err != nil || len(items) != 1 || items[0].Size != 42 || items[0].Kind != "settled-file" || items[0].Deleted == dry {
			t.Errorf("GarbageCollect(dry %v) = %+v, %v", dry, items, err)
		}
	}
}

func (f *fakeBackend) Templates() ([]*templates.Template, error) {
	return templates.Library{Dirs: []string{"../packaging/templates"}}.List()
}

func (f *fakeBackend) Analytics(since, until time.Time) analytics.Summary {
	return analytics.Compute([]jobs.Job{{ID: "a", State: jobs.Completed, StartedAt: since, FinishedAt: since.Add(time.Hour), ConvertedBytes: 1 << 30}}, "h", since, until)
}

func TestTemplatesAndAnalytics(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	ts, err := f.client.Templates(ctx)
	if err != nil || len(ts) < 5 || ts[0].Name != "compress-for-archive" || len(ts[0].Parameters) == 0 {
		t.Fatalf("Templates = %v, %v", ts, err)
	}
	since := time.Now().Add(-2 * time.Hour)
	s, err := f.client.Analytics(ctx, since, time.Time{})
	if err != nil || s.Jobs != 1 || s.GiBPerH != 1 || !s.Since.Equal(since.Truncate(time.Microsecond)) {
		t.Fatalf("Analytics = %+v, %v", s, err)
	}
}

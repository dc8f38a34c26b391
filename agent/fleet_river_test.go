package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/config"
	"github.com/hyper2kvm/hyper2kvm/agent/notify"
	"github.com/hyper2kvm/hyper2kvm/test/pgcluster"
)

// TestFleetRiverWorkRunsOnce: two agents on one PostgreSQL, each with the
// same schedule and the same webhook. A schedule firing that is owed
// when both start (its last run recorded two hours ago, hourly) submits
// one job in the whole fleet, not one per host: River's leader enqueues
// the periodic job and one host's worker takes it. That job's completion
// is delivered once, by whichever host's worker took the delivery, and
// the other job events each once too.
func TestFleetRiverWorkRunsOnce(t *testing.T) {
	pg := pgcluster.Start(t)
	var mu sync.Mutex
	deliveries := map[string][]string{} // delivery id -> the hosts that sent it
	events := map[string]string{}       // delivery id -> event
	schedDir := t.TempDir()
	var es []*env
	for _, host := range []string{"kvm01", "kvm02"} {
		e := newEnv(t, func(c *config.Config) {
			c.Store.URL, c.Host.Name = pg.URL, host
			c.Notify = config.Notify{Webhooks: []config.Webhook{{URL: "https://admin.example/hook"}}}
		})
		e.opts = []Option{WithSchedulesDir(schedDir), WithDeliver(func(ctx context.Context, unit, url string, headers []string, body []byte) (string, error) {
			h := map[string]string{}
			for _, x := range headers {
				n, v, _ := strings.Cut(x, ": ")
				h[n] = v
			}
			mu.Lock()
			defer mu.Unlock()
			id := h[notify.DeliveryHeader]
			deliveries[id] = append(deliveries[id], host)
			events[id] = h[notify.EventHeader]
			return "HTTP 200 OK", nil
		})}
		es = append(es, e)
	}
	// The nightly manifest reads kvm01's image, which kvm02 can read too
	// (one machine): whichever host fires the schedule can run it.
	manifest := filepath.Join(schedDir, "nightly.json")
	if err := os.WriteFile(manifest, []byte(es[0].manifest("nightly", "")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(schedDir, "nightly.yaml"), []byte("cron: '@hourly'\nmanifest: "+manifest+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// River's schema first (as the first agent to start would make it),
	// then the schedule's last run two hours ago: one firing is owed.
	st, err := openStore(pg.URL, "setup", t.TempDir(), NewLogger(os.Stderr, false))
	if err != nil {
		t.Fatal(err)
	}
	last := time.Now().Add(-2 * time.Hour).UTC().Format(time.RFC3339)
	if err := st.db.setMeta(context.Background(), scheduleMetaPf+"nightly", fmt.Sprintf(`{"last":%q}`, last)); err != nil {
		t.Fatal(err)
	}
	st.db.close()

	for _, e := range es {
		e.start()
	}
	// The firing's job starts on the host that fired; finish it there.
	var unit string
	var runs *env
	e0, e1 := es[0], es[1]
	e0.waitFor("the schedule's job to start on a host", func() bool {
		select {
		case unit = <-e0.units.started:
			runs = e0
		case unit = <-e1.units.started:
			runs = e1
		default:
		}
		return unit != ""
	})
	runs.units.finish(t, unit, "success", completed("nightly"))
	runs.waitFor("the job to settle", func() bool {
		runs.a.mu.Lock()
		defer runs.a.mu.Unlock()
		return len(runs.a.st.Claims) == 0
	})
	// Every delivery done: none left to send in the shared queue.
	runs.waitFor("the deliveries", func() bool {
		left := strings.TrimSpace(pg.SQL(t, fmt.Sprintf(`SELECT count(*) FROM river_job WHERE kind = '%s' AND state <> 'completed'`, webhookKind)))
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, ev := range events {
			if ev == notify.JobCompleted {
				n++
			}
		}
		return left == "0" && n > 0
	})
	jobs := strings.Fields(pg.SQL(t, fmt.Sprintf(`SELECT metadata->>'host' FROM river_job WHERE kind = '%s' AND args->>'name' = 'nightly'`, jobKind)))
	if len(jobs) != 1 {
		t.Errorf("the owed firing made jobs on %v, want one job in the fleet", jobs)
	}
	if fired := strings.TrimSpace(pg.SQL(t, fmt.Sprintf(`SELECT count(*) FROM river_job WHERE kind = '%s'`, scheduleKind))); fired != "1" {
		t.Errorf("%s periodic rows, want 1 (the leader's only)", fired)
	}
	for _, e := range es {
		e.stop()
	}
	mu.Lock()
	defer mu.Unlock()
	byEvent := map[string]int{}
	for id, hosts := range deliveries {
		if len(hosts) != 1 {
			t.Errorf("delivery %s (%s) sent by %v, want once", id, events[id], hosts)
		}
		byEvent[events[id]]++
	}
	if byEvent[notify.JobStarted] != 1 || byEvent[notify.JobCompleted] != 1 {
		t.Errorf("deliveries by event %v, want one job.started and one job.completed", byEvent)
	}
	t.Logf("deliveries %v by event %v; the job ran on %v", deliveries, byEvent, jobs)
}

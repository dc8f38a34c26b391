package agent

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/test/pgcluster"
)

// TestFencingOnPostgres: on a real PostgreSQL, a host whose lease ran out
// and whose running job another host took cannot write that job's row
// any more (its save leaves the row as the new host has it, and says
// which job it lost), and a job no host holds (placement) is taken by
// exactly one of two hosts trying.
func TestFencingOnPostgres(t *testing.T) {
	pg := pgcluster.Start(t)
	open := func(host string) *state {
		t.Helper()
		s, err := openStore(pg.URL, host, t.TempDir(), NewLogger(os.Stderr, false))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.db.close)
		return s
	}
	a, b := open("host-a"), open("host-b")
	ctx := t.Context()
	for _, s := range []*state{a, b} {
		if err := s.db.heartbeat(ctx, true, hostBeat{queue: queueRunning}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	r := &record{Job: jobs.Job{ID: "runs0001", State: jobs.Running, CreatedAt: now, StartedAt: now, Host: "host-a"}, Claim: "x.json", Attempt: 1}
	a.add(r)
	free := &record{Job: jobs.Job{ID: "free0002", State: jobs.Pending, CreatedAt: now, StatusText: "no host matches placement site=x (hosts: host-a[])"}, Claim: "y.json"}
	a.add(free)
	if err := a.save(); err != nil {
		t.Fatal(err)
	}
	// host-a goes silent past the lease: host-b takes its job.
	pg.SQL(t, `UPDATE hyper2kvm_host SET heartbeat_at = now() - interval '1 hour' WHERE name = 'host-a'`)
	taken, err := b.db.takeOver(ctx, time.Minute)
	if err != nil || len(taken) != 1 || taken[0].r.ID != "runs0001" {
		t.Fatalf("takeOver = %v, %v", taken, err)
	}
	if err := a.db.heartbeat(ctx, false, hostBeat{}); err == nil || !strings.Contains(err.Error(), errLeaseLost.Error()) {
		t.Errorf("host-a's heartbeat after the takeover: %v, want %v", err, errLeaseLost)
	}
	// host-a comes back and finishes the job: the write is refused.
	r.State, r.FinishedAt = jobs.Completed, time.Now()
	a.touch(r)
	if err := a.save(); err != nil {
		t.Fatal(err)
	}
	if lost := a.takeLost(); len(lost) != 1 || lost[0] != "runs0001" {
		t.Errorf("lost after the takeover: %v, want [runs0001]", lost)
	}
	if got := strings.TrimSpace(pg.SQL(t, `SELECT state || ' ' || (metadata->>'host') FROM river_job WHERE args->>'id' = 'runs0001'`)); got != "running host-b" {
		t.Errorf("runs0001's row after host-a's write: %q, want running host-b", got)
	}
	owners, err := a.db.owners(ctx, []int64{a.rows["runs0001"]})
	if err != nil || owners[a.rows["runs0001"]] != "host-b" {
		t.Errorf("owners = %v, %v", owners, err)
	}
	// The unplaced job: exactly one of two hosts takes it.
	rows, err := b.db.unplaced(ctx, 10)
	if err != nil || len(rows) != 1 || rows[0].r.ID != "free0002" {
		t.Fatalf("unplaced = %v, %v", rows, err)
	}
	okB, errB := b.db.claimUnplaced(ctx, rows[0].rowid)
	okA, errA := a.db.claimUnplaced(ctx, rows[0].rowid)
	if errA != nil || errB != nil || !okB || okA {
		t.Errorf("claims of the unplaced job: host-b %v %v, host-a %v %v; want only host-b", okB, errB, okA, errA)
	}
	hosts, err := b.db.hosts(ctx, time.Minute)
	if err != nil || len(hosts) != 1 || hosts[0].Name != "host-b" || !hosts[0].Alive {
		t.Errorf("hosts = %+v, %v; want host-b alone (host-a taken for dead)", hosts, err)
	}
}

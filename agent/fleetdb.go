package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
)

// The fleet's queries beyond the heartbeat and the takeover (jobdb.go):
// who holds a job now, jobs no host holds yet (placement), the hosts.
// All of them are PostgreSQL only: one host (SQLite) has no fleet.

// owners answers, for the job rows given, the host each is marked with
// now. A row missing from the answer is gone (pruned).
func (d *jobDB) owners(ctx context.Context, rowids []int64) (map[int64]string, error) {
	out := map[int64]string{}
	if len(rowids) == 0 {
		return out, nil
	}
	err := d.rows(ctx, `SELECT id, coalesce(metadata ->> 'host', '') FROM river_job WHERE id = ANY($1)`, []any{rowids},
		func(scan func(...any) error) error {
			var id int64
			var host string
			if err := scan(&id, &host); err != nil {
				return err
			}
			out[id] = host
			return nil
		})
	return out, err
}

// ownerOfJob is the host a job (by id) is marked with, "" and false when
// the store has no such job.
func (d *jobDB) ownerOfJob(ctx context.Context, id string) (string, bool, error) {
	var host string
	found := false
	err := d.rows(ctx, `SELECT coalesce(metadata ->> 'host', '') FROM river_job WHERE kind = $1 AND metadata ->> 'job_id' = $2`, []any{jobKind, id},
		func(scan func(...any) error) error { found = true; return scan(&host) })
	return host, found, err
}

// fleetJob is a job row read from the shared store: the record it holds
// and its row.
type fleetJob struct {
	rowid int64
	host  string
	r     *record
}

// jobsByID reads the jobs given by id, whoever holds them.
func (d *jobDB) jobsByID(ctx context.Context, ids []string) ([]fleetJob, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	return d.fleetJobs(ctx, `SELECT id, coalesce(metadata ->> 'host', ''), args::text FROM river_job WHERE kind = $1 AND metadata ->> 'job_id' = ANY($2)`, jobKind, ids)
}

// unplaced reads up to limit pending jobs no host holds yet (their
// placement did not match the host whose folder they came from), first
// by River's priority, then oldest.
func (d *jobDB) unplaced(ctx context.Context, limit int) ([]fleetJob, error) {
	return d.fleetJobs(ctx, `SELECT id, '', args::text FROM river_job WHERE kind = $1 AND metadata ->> 'host' = '' AND state IN ('available', 'scheduled')
ORDER BY priority, id LIMIT $2`, jobKind, limit)
}

func (d *jobDB) fleetJobs(ctx context.Context, query string, args ...any) ([]fleetJob, error) {
	var out []fleetJob
	err := d.rows(ctx, query, args, func(scan func(...any) error) error {
		var j fleetJob
		var data []byte
		if err := scan(&j.rowid, &j.host, &data); err != nil {
			return err
		}
		j.r = &record{}
		if err := json.Unmarshal(data, j.r); err != nil || j.r.ID == "" {
			return fmt.Errorf("job row %d: %v", j.rowid, err)
		}
		out = append(out, j)
		return nil
	})
	return out, err
}

// claimUnplaced marks a job no host held as this host's. Of hosts trying
// at once exactly one succeeds (compare-and-set on metadata.host).
func (d *jobDB) claimUnplaced(ctx context.Context, rowid int64) (bool, error) {
	tag, err := d.pool.Exec(ctx, `UPDATE river_job SET metadata = jsonb_set(metadata, '{host}', to_jsonb($1::text)) WHERE id = $2 AND metadata ->> 'host' = ''`, d.host, rowid)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

// hosts reads every host's last heartbeat. A host is alive while its
// heartbeat is younger than lease (measured by the database's clock, so
// that hosts' clocks need not agree).
func (d *jobDB) hosts(ctx context.Context, lease time.Duration) ([]apitype.Host, error) {
	var out []apitype.Host
	err := d.rows(ctx, `SELECT name, heartbeat_at, labels, busy, max_workers, queue, heartbeat_at >= now() - make_interval(secs => $1) FROM hyper2kvm_host ORDER BY name`,
		[]any{lease.Seconds()}, func(scan func(...any) error) error {
			var h apitype.Host
			var labels string
			if err := scan(&h.Name, &h.HeartbeatAt, &labels, &h.Busy, &h.MaxWorkers, &h.Queue, &h.Alive); err != nil {
				return err
			}
			json.Unmarshal([]byte(labels), &h.Labels)
			out = append(out, h)
			return nil
		})
	return out, err
}

package agent

import (
	"context"
	"errors"
	"os"
	"slices"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// Fencing. A host cut off from the fleet's database (network, a frozen
// machine) past store.lease_timeout is taken for dead: another host takes
// its unfinished jobs and runs them again. When it comes back it holds
// nothing any more, and must neither keep running those jobs nor write
// over their rows. Two things keep it so:
//
//   - every write of a job's row is a compare-and-set on the host the row
//     is marked with (jobDB.updateRow): a write for a job another host
//     took changes nothing, and the job is given up here;
//   - at every heartbeat the host compares its unfinished jobs with the
//     rows' hosts (and its heartbeat says when its lease was lost): a job
//     another host holds is given up: its unit stopped, its scratch and
//     partial output removed, the record forgotten here (not in the
//     store), with the reason in the journal.
//
// The file such a job came from stays in this host's processing/ and
// settles here, with the job's end as the host that ran it wrote it,
// once that job is final (settleRemoteLocked).

// reconcileLocked gives up the unfinished jobs of this host whose rows
// another host holds. Called with a.mu held.
func (a *Agent) reconcileLocked(ctx context.Context, why string) {
	var rowids []int64
	for id, r := range a.st.live {
		if !r.State.Ready() && a.st.rows[id] != 0 {
			rowids = append(rowids, a.st.rows[id])
		}
	}
	owners, err := a.st.db.owners(ctx, rowids)
	if err != nil {
		a.log.Warnf(nil, "cannot compare this host's jobs with the fleet's store: %v", err)
		return
	}
	var lost []*record
	for id, r := range a.st.live {
		if r.State.Ready() || a.st.rows[id] == 0 {
			continue
		}
		if o, ok := owners[a.st.rows[id]]; ok && o != r.Host {
			lost = append(lost, r)
		}
	}
	slices.SortFunc(lost, func(x, y *record) int { return compareIDs(x.ID, y.ID) })
	for _, r := range lost {
		a.giveUpLocked(ctx, r, owners[a.st.rows[r.ID]], why)
	}
}

func compareIDs(x, y string) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// giveUpLocked forgets a job another host holds now: its unit is stopped
// and what it wrote here removed. Called with a.mu held.
func (a *Agent) giveUpLocked(ctx context.Context, r *record, owner, why string) {
	f := jobFields(r)
	if r.Host == "" {
		// Left for the fleet by placement: taken, as it should be.
		a.log.Infof(f, "job %s: taken by %s (placement)", r.ID, owner)
		a.st.forget(r.ID)
		return
	}
	if r.State == jobs.Running && r.Unit != "" {
		a.log.Warnf(f, "job %s: %s holds it now (%s); stopping %s and giving up the claim here", r.ID, owner, why, r.Unit)
		if err := a.units.Stop(ctx, r.Unit); err != nil {
			a.log.Warnf(f, "cannot stop %s: %v", r.Unit, err)
		}
		a.units.Release(ctx, r.Unit)
		a.removeScratch(r)
		if r.OutputDir != "" {
			if err := os.RemoveAll(r.OutputDir); err != nil {
				a.log.Warnf(f, "cannot remove partial output: %v", err)
			}
		}
	} else {
		a.log.Warnf(f, "job %s: %s holds it now (%s); giving up the claim here", r.ID, owner, why)
	}
	a.st.forget(r.ID)
}

// saveFenced handles what a save found another host holds (the
// compare-and-set failed): those jobs are given up. Called with a.mu
// held, after a save.
func (a *Agent) saveFenced() {
	lost := a.st.takeLost()
	if len(lost) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.heartbeatEvery())
	defer cancel()
	for _, id := range lost {
		r := a.st.Jobs[id]
		if r == nil {
			continue
		}
		owner, _, err := a.st.db.ownerOfJob(ctx, id)
		if err != nil {
			owner = "another host"
		}
		a.giveUpLocked(ctx, r, owner, "its row was taken while this host was away")
	}
}

// settleRemoteLocked settles the claims of this host whose jobs other
// hosts hold (taken over, or placed there), once all of them are final,
// from what those hosts wrote. Called with a.mu held.
func (a *Agent) settleRemoteLocked(ctx context.Context) {
	var ids []string
	var open []*claim
	for _, c := range a.st.Claims {
		away := false
		for _, id := range c.Jobs {
			if a.st.Jobs[id] == nil {
				ids = append(ids, id)
				away = true
			}
		}
		if away {
			open = append(open, c)
		}
	}
	if len(open) == 0 {
		return
	}
	rows, err := a.st.db.jobsByID(ctx, ids)
	if err != nil {
		a.log.Warnf(nil, "cannot read the jobs other hosts ran for this host's files: %v", err)
		return
	}
	a.remote = map[string]*record{}
	for _, j := range rows {
		if j.r.State.Ready() {
			j.r.JobDir = "" // its report is on the host that ran it
			a.remote[j.r.ID] = j.r
		}
	}
	slices.SortFunc(open, func(x, y *claim) int { return compareIDs(x.Name, y.Name) })
	for _, c := range open {
		a.settleClaimLocked(c)
	}
	a.remote = nil
}

// errNotOurs is a row's compare-and-set failing: another host holds it.
var errNotOurs = errors.New("the job's row is another host's")

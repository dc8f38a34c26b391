package agent

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"time"

	"github.com/riverqueue/river"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// record is the agent's persisted view of one job: the public jobs.Job plus
// what the agent needs to finish it after a restart. Code that changes a
// record marks it (state.touch) so that the next save writes it.
type record struct {
	jobs.Job
	Claim        string          `json:"claim"` // the claimed file in processing/ this job came from
	VM           json.RawMessage `json:"vm"`    // the single-VM manifest (defaulted), as the worker gets it
	JobDir       string          `json:"job_dir,omitempty"`
	OutputDir    string          `json:"output_dir,omitempty"` // the default output dir the agent chose
	Concurrency  int             `json:"concurrency,omitempty"`
	FileTime     time.Time       `json:"file_time"` // the dropped file's mtime: second sort key
	DropperUID   int64           `json:"dropper_uid"`
	Cancel       bool            `json:"cancel_requested,omitempty"`
	Attempt      int             `json:"attempt,omitempty"`
	BootID       string          `json:"boot_id,omitempty"` // boot the unit was started in
	UnitResult   string          `json:"unit_result,omitempty"`
	Cursor       string          `json:"journal_cursor,omitempty"`
	Invocation   string          `json:"invocation_id,omitempty"`
	Validation   []string        `json:"validation_errors,omitempty"`
	ReportStatus report.Status   `json:"report_status,omitempty"`
	// NotBefore and NotAfter are the manifest's schedule: the job starts
	// no earlier than NotBefore, and fails, never started, after NotAfter.
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	// Retry is the manifest's retry policy, nil for none.
	Retry *manifest.Retry `json:"retry,omitempty"`
	// KeptOutputs are the files already in the manifest's own output_dir
	// under names the job may write when it started: never its to remove.
	KeptOutputs []string `json:"kept_outputs,omitempty"`

	// Not persisted: what the agent learnt from the unit's signals.
	sawActive bool
	// savedState is State as last saved ("" before the first save): the
	// webhooks announce a change of state once it is written.
	savedState jobs.State
}

// claim is one claimed file: a manifest (one job, or one per VM of a batch),
// a submitted manifest or a dropped image. It settles when all its jobs
// are final. Code that changes a claim marks it (state.touchClaim).
type claim struct {
	Name        string        `json:"name"` // in processing/
	Original    string        `json:"original_name"`
	Kind        string        `json:"kind"` // manifest | image | submitted
	Batch       bool          `json:"batch,omitempty"`
	Jobs        []string      `json:"jobs"`
	ClaimedAt   time.Time     `json:"claimed_at"`
	Target      *queue.Target `json:"target,omitempty"` // reserved when settling
	Error       string        `json:"error,omitempty"`  // claim-level failure (invalid manifest)
	Validation  []string      `json:"validation_errors,omitempty"`
	SubmittedBy int64         `json:"submitted_by"`
}

// state is the agent's working copy of the job store: every job and open
// claim in memory, as the agent's single goroutine changes them, and save
// writing what changed to the River database (jobdb.go) in one
// transaction. Listing and status read the memory, never the database,
// which keeps them as fast as before River.
//
// Code outside this file changes records in place and says so: touch for
// a job (setStateLocked does it for every change of state), putClaim,
// touchClaim and dropClaim for a claim. save writes exactly the jobs and
// claims so marked; a change not marked is not saved until something
// marks that job. Tests compare the database with memory after every save
// (checkSaved in store_test.go), which is how a forgotten mark shows.
type state struct {
	Jobs   map[string]*record
	Claims map[string]*claim // by processing/ name; removed once settled

	// db is the database; nil keeps the store in memory (unit tests that
	// build an Agent by hand).
	db *jobDB
	// rows is the river_job id of every job written.
	rows map[string]int64
	// archived are the jobs done for good (final, their file settled)
	// as last saved.
	archived map[string]bool

	// order is every job by creation (CreatedAt, then ID): the index
	// ListJobs pages through. live is every job not archived. Both follow
	// Jobs through add and remove; a job put into Jobs directly (recovery,
	// tests) is picked up by sync.
	order []*record
	live  map[string]*record

	// dirty are the jobs marked changed since the last save, and
	// dirtyClaims the claims put, changed or dropped since; dropped are
	// the jobs removed since, and settled the jobs of the claims dropped
	// since (archived by save when final).
	dirty       map[string]*record
	dirtyClaims map[string]bool
	dropped     []string
	settled     []string
	writes      int // transactions save committed: what batching saves

	// outbox makes the webhook deliveries of the jobs a save changed
	// (webhooks.go), written in the same transaction; prev is each
	// one's state as last written. nil makes none.
	outbox func(changed []*record, prev map[string]jobs.State, live map[string]*record) []river.InsertManyParams

	// lost are jobs a save did not write because another host of the
	// fleet holds their rows now (fleetfence.go); takeLost empties it.
	lost []string
	// saved is called with what every save that succeeded wrote; tests
	// set it to check that every change was marked. nil in the agent.
	saved func(*batch)
}

func newState() *state {
	return &state{Jobs: map[string]*record{}, Claims: map[string]*claim{}, archived: map[string]bool{}, rows: map[string]int64{},
		live: map[string]*record{}, dirty: map[string]*record{}, dirtyClaims: map[string]bool{}}
}

// loaded marks what load read as saved: done jobs archived, the rest live.
func (s *state) loaded() {
	for id, r := range s.Jobs {
		r.savedState = r.State
		if s.archivable(r) {
			s.archived[id] = true
		}
	}
	s.sync()
}

// touch marks r changed: the next save writes it. Every change to a
// job's record is followed by a touch before the next save.
func (s *state) touch(r *record) {
	s.dirty[r.ID] = r
}

// touchAll marks every job and claim changed (the import of the old
// files writes them all).
func (s *state) touchAll() {
	for _, r := range s.Jobs {
		s.touch(r)
	}
	for name := range s.Claims {
		s.dirtyClaims[name] = true
	}
}

// putClaim adds a claim (or puts a new one in its place).
func (s *state) putClaim(c *claim) {
	s.Claims[c.Name] = c
	s.dirtyClaims[c.Name] = true
}

// touchClaim marks c changed: the next save writes it.
func (s *state) touchClaim(c *claim) {
	s.dirtyClaims[c.Name] = true
}

// dropClaim forgets a settled claim; its final jobs are done for good.
func (s *state) dropClaim(c *claim) {
	delete(s.Claims, c.Name)
	s.dirtyClaims[c.Name] = true
	s.settled = append(s.settled, c.Jobs...)
}

// add puts a new job into the store.
func (s *state) add(r *record) {
	s.sync()
	s.Jobs[r.ID] = r
	s.live[r.ID] = r
	s.touch(r)
	// Jobs are made in time order: the new one almost always goes last.
	i := len(s.order)
	if i > 0 && createdBefore(r, s.order[i-1]) {
		i, _ = slices.BinarySearchFunc(s.order, r, func(e, t *record) int {
			if createdBefore(e, t) {
				return -1
			}
			return 1
		})
	}
	s.order = slices.Insert(s.order, i, r)
}

// remove forgets a job (one never run: a refused file that could not be
// moved) as if it had not been made.
func (s *state) remove(id string) {
	if s.unlink(id) {
		s.dropped = append(s.dropped, id)
	}
}

// unlink takes a job out of memory and its indexes; it reports whether
// there was one. Its row id stays for the caller to drop or forget.
func (s *state) unlink(id string) bool {
	s.sync()
	r := s.Jobs[id]
	if r == nil {
		return false
	}
	delete(s.Jobs, id)
	delete(s.live, id)
	delete(s.archived, id)
	delete(s.dirty, id)
	if i := slices.Index(s.order, r); i >= 0 {
		s.order = slices.Delete(s.order, i, i+1)
	}
	return true
}

func createdBefore(a, b *record) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.Before(b.CreatedAt)
	}
	return a.ID < b.ID
}

// sync rebuilds order and live when Jobs was changed behind add and
// remove (a job put in directly). Cheap when nothing was. A job put in
// directly that the database does not have yet is marked changed.
func (s *state) sync() {
	if len(s.order) == len(s.Jobs) && len(s.live)+len(s.archived) == len(s.Jobs) {
		return
	}
	s.order = s.order[:0]
	clear(s.live)
	for id, r := range s.Jobs {
		s.order = append(s.order, r)
		if !s.archived[id] {
			s.live[id] = r
		}
		if s.db != nil && s.rows[id] == 0 {
			s.touch(r)
		}
	}
	for id := range s.archived {
		if s.Jobs[id] == nil {
			delete(s.archived, id)
		}
	}
	sort.Slice(s.order, func(i, j int) bool { return createdBefore(s.order[i], s.order[j]) })
}

// ordered is every job, oldest first. The caller must not change it.
func (s *state) ordered() []*record {
	s.sync()
	return s.order
}

// archivable reports whether a job is done for good: final, and the file
// it came from settled.
func (s *state) archivable(r *record) bool {
	if !r.State.Ready() {
		return false
	}
	_, open := s.Claims[r.Claim]
	return !open
}

// save writes the jobs and claims marked changed since the last save in
// one transaction, committed (and so durable) before save returns: a
// job's record is durable before anything with an outside effect (its
// unit starting, its file settling) is done. A failed save changes
// nothing: the next one writes the same changes and more.
func (s *state) save() error {
	return s.saveWith(context.Background(), "", "")
}

// saveWith is save, also setting a hyper2kvm_meta key in the same
// transaction (the import marker).
func (s *state) saveWith(ctx context.Context, metaKey, metaValue string) error {
	s.sync()
	b := &batch{metaKey: metaKey, metaValue: metaValue, rows: s.rows}
	for id := range s.dirty {
		r := s.Jobs[id] // the job now under that id, if any
		switch {
		case r == nil:
		case s.db != nil && s.rows[id] == 0:
			b.insert = append(b.insert, r)
		default:
			b.update = append(b.update, r)
		}
	}
	for name := range s.dirtyClaims {
		if c := s.Claims[name]; c != nil {
			b.putClaims = append(b.putClaims, c)
		} else {
			b.claimsGone = append(b.claimsGone, name)
		}
	}
	for _, id := range s.dropped {
		if row := s.rows[id]; row != 0 {
			b.deleteJobs = append(b.deleteJobs, row)
		}
	}
	if s.outbox != nil && s.db != nil {
		prev := map[string]jobs.State{}
		var changed []*record
		for _, r := range append(append([]*record(nil), b.insert...), b.update...) {
			if r.savedState != r.State {
				prev[r.ID] = r.savedState
				changed = append(changed, r)
			}
		}
		if len(changed) > 0 {
			b.deliveries = s.outbox(changed, prev, s.live)
		}
	}
	if len(b.insert)+len(b.update)+len(b.deleteJobs)+len(b.putClaims)+len(b.claimsGone) > 0 || metaKey != "" {
		if s.db != nil {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			defer cancel()
			if err := s.db.write(ctx, b); err != nil {
				return err
			}
			for i, r := range b.insert {
				s.rows[r.ID] = b.insertedIDs[i]
			}
			s.lost = append(s.lost, b.lost...)
		}
		s.writes++
	}
	// What was written is as saved; a job done for good leaves live.
	for _, list := range [][]*record{b.insert, b.update} {
		for _, r := range list {
			r.savedState = r.State
			s.archive(r)
		}
	}
	for _, id := range s.settled {
		if r := s.Jobs[id]; r != nil {
			s.archive(r)
		}
	}
	for _, id := range s.dropped {
		delete(s.rows, id)
	}
	clear(s.dirty)
	clear(s.dirtyClaims)
	s.dropped, s.settled = nil, nil
	if s.saved != nil {
		s.saved(b)
	}
	return nil
}

// archive moves r between live and archived as it is done for good or
// not (a job retried after it ended is live again).
func (s *state) archive(r *record) {
	if s.archivable(r) {
		s.archived[r.ID] = true
		delete(s.live, r.ID)
		return
	}
	delete(s.archived, r.ID)
	s.live[r.ID] = r
}

// prune forgets finished jobs that finished more than keep before now and
// whose claim settled; keep 0 forgets none.
func (s *state) prune(now time.Time, keep time.Duration) {
	if keep <= 0 {
		return
	}
	s.sync()
	pruned := false
	for id, r := range s.Jobs {
		if r.State.Ready() && !r.FinishedAt.IsZero() && now.Sub(r.FinishedAt) > keep {
			if _, open := s.Claims[r.Claim]; !open {
				delete(s.Jobs, id)
				delete(s.live, id)
				delete(s.archived, id)
				delete(s.dirty, id)
				s.dropped = append(s.dropped, id)
				pruned = true
			}
		}
	}
	if pruned {
		s.order = slices.DeleteFunc(s.order, func(r *record) bool { return s.Jobs[r.ID] != r })
	}
}

// forget drops a job from memory only: its row stays as it is in the
// store (another host of the fleet holds it now, fleetfence.go).
func (s *state) forget(id string) {
	if s.unlink(id) {
		delete(s.rows, id)
	}
}

// takeLost returns and clears the jobs saves found another host holds.
func (s *state) takeLost() []string {
	l := s.lost
	s.lost = nil
	return l
}

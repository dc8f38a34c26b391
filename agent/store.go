package agent

import (
	"bytes"
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
// what the agent needs to finish it after a restart. A field added here
// must be added to sameRecord too (TestSameRecordSeesEveryField).
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
}

// claim is one claimed file: a manifest (one job, or one per VM of a batch),
// a submitted manifest or a dropped image. It settles when all its jobs
// are final. A field added here must be added to sameClaim too.
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
// Code outside this file changes records in place and then calls save;
// save finds what changed by comparing each live record with a copy of
// what it last wrote (sameRecord), which costs nanoseconds per live job.
// A job done for good (final, its file settled) is written once more and
// then left out of that comparison: it is not changed again.
type state struct {
	Jobs   map[string]*record
	Claims map[string]*claim // by processing/ name; removed once settled

	// db is the database; nil keeps the store in memory (unit tests that
	// build an Agent by hand).
	db *jobDB
	// rows is the river_job id of every job written.
	rows map[string]int64
	// archived are the jobs done for good and written so.
	archived map[string]bool

	// order is every job by creation (CreatedAt, then ID): the index
	// ListJobs pages through. live is every job not archived. Both follow
	// Jobs through add and remove; a job put into Jobs directly (recovery,
	// tests) is picked up by sync.
	order []*record
	live  map[string]*record

	// written and writtenClaims are the live jobs and claims as the
	// database has them; dropped are jobs removed since.
	written       map[string]record
	writtenClaims map[string]claim
	dropped       []string
	writes        int // transactions save committed: what batching saves

	// outbox makes the webhook deliveries of the jobs a save changed
	// (webhooks.go), written in the same transaction; prev is each
	// one's state as last written. nil makes none.
	outbox func(changed []*record, prev map[string]jobs.State, live map[string]*record) []river.InsertManyParams

	// lost are jobs a save did not write because another host of the
	// fleet holds their rows now (fleetfence.go); takeLost empties it.
	lost []string
}

func newState() *state {
	return &state{Jobs: map[string]*record{}, Claims: map[string]*claim{}, archived: map[string]bool{}, rows: map[string]int64{},
		live: map[string]*record{}, written: map[string]record{}, writtenClaims: map[string]claim{}}
}

// loaded marks what load read as written: done jobs archived, the rest live.
func (s *state) loaded() {
	for name, c := range s.Claims {
		s.writtenClaims[name] = *c
	}
	for id, r := range s.Jobs {
		if s.archivable(r) {
			s.archived[id] = true
			continue
		}
		s.written[id] = *r
	}
	s.sync()
}

// add puts a new job into the store.
func (s *state) add(r *record) {
	s.sync()
	s.Jobs[r.ID] = r
	s.live[r.ID] = r
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
	s.sync()
	r := s.Jobs[id]
	if r == nil {
		return
	}
	delete(s.Jobs, id)
	delete(s.live, id)
	delete(s.archived, id)
	if i := slices.Index(s.order, r); i >= 0 {
		s.order = slices.Delete(s.order, i, i+1)
	}
	s.dropped = append(s.dropped, id)
}

func createdBefore(a, b *record) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.Before(b.CreatedAt)
	}
	return a.ID < b.ID
}

// sync rebuilds order and live when Jobs was changed behind add and
// remove (a job put in directly). Cheap when nothing was.
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

// save writes what changed since the last save in one transaction,
// committed (and so durable) before save returns: a job's record is
// durable before anything with an outside effect (its unit starting, its
// file settling) is done. A failed save changes nothing: the next one
// writes the same changes and more.
func (s *state) save() error {
	return s.saveWith(context.Background(), "", "")
}

// saveWith is save, also setting a hyper2kvm_meta key in the same
// transaction (the import marker).
func (s *state) saveWith(ctx context.Context, metaKey, metaValue string) error {
	s.sync()
	b := &batch{metaKey: metaKey, metaValue: metaValue, rows: s.rows}
	var done []string // live jobs done for good, archived once written
	for id, r := range s.live {
		w, ok := s.written[id]
		switch {
		case s.rows[id] == 0 && s.db != nil || !ok && s.db == nil:
			b.insert = append(b.insert, r)
		case !ok || !sameRecord(&w, r):
			b.update = append(b.update, r)
		}
		if s.archivable(r) {
			done = append(done, id)
		}
	}
	for name, c := range s.Claims {
		if w, ok := s.writtenClaims[name]; !ok || !sameClaim(&w, c) {
			b.putClaims = append(b.putClaims, c)
		}
	}
	for name := range s.writtenClaims {
		if s.Claims[name] == nil {
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
			if w, ok := s.written[r.ID]; ok {
				prev[r.ID] = w.State
			}
			if prev[r.ID] != r.State {
				changed = append(changed, r)
			}
		}
		if len(changed) > 0 {
			b.deliveries = s.outbox(changed, prev, s.live)
		}
	}
	if len(b.insert)+len(b.update)+len(b.deleteJobs)+len(b.putClaims)+len(b.claimsGone) == 0 && metaKey == "" && len(done) == 0 {
		return nil
	}
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
	for _, r := range b.insert {
		s.written[r.ID] = *r
	}
	for _, r := range b.update {
		s.written[r.ID] = *r
	}
	for _, c := range b.putClaims {
		s.writtenClaims[c.Name] = *c
	}
	for _, name := range b.claimsGone {
		delete(s.writtenClaims, name)
	}
	for _, id := range s.dropped {
		delete(s.rows, id)
		delete(s.written, id)
	}
	s.dropped = nil
	for _, id := range done {
		s.archived[id] = true
		delete(s.live, id)
		delete(s.written, id)
	}
	return nil
}

// sameRecord reports whether two records persist the same; only what
// save writes counts. Far cheaper than encoding either.
func sameRecord(a, b *record) bool {
	x, y := &a.Job, &b.Job
	return x.ID == y.ID && x.Name == y.Name && x.Batch == y.Batch && x.Manifest == y.Manifest &&
		x.State == y.State && x.Stage == y.Stage && x.Progress == y.Progress && x.StatusText == y.StatusText &&
		x.Unit == y.Unit && x.SubmittedBy == y.SubmittedBy && x.Priority == y.Priority && x.Host == y.Host &&
		x.CreatedAt.Equal(y.CreatedAt) && x.StartedAt.Equal(y.StartedAt) && x.FinishedAt.Equal(y.FinishedAt) &&
		x.Error == y.Error && x.ErrorStage == y.ErrorStage && slices.Equal(x.Outputs, y.Outputs) &&
		x.ReportPath == y.ReportPath && x.BytesDone == y.BytesDone && x.BytesTotal == y.BytesTotal &&
		x.ConvertedBytes == y.ConvertedBytes && slices.Equal(x.StageTimes, y.StageTimes) && slices.Equal(x.Warnings, y.Warnings) &&
		a.Claim == b.Claim && sameRaw(a.VM, b.VM) && a.JobDir == b.JobDir && a.OutputDir == b.OutputDir &&
		a.Concurrency == b.Concurrency && a.FileTime.Equal(b.FileTime) && a.DropperUID == b.DropperUID &&
		a.Cancel == b.Cancel && a.Attempt == b.Attempt && a.BootID == b.BootID && a.UnitResult == b.UnitResult &&
		a.Cursor == b.Cursor && a.Invocation == b.Invocation && slices.Equal(a.Validation, b.Validation) &&
		a.ReportStatus == b.ReportStatus && slices.Equal(a.KeptOutputs, b.KeptOutputs) &&
		a.NotBefore.Equal(b.NotBefore) && a.NotAfter.Equal(b.NotAfter) &&
		(a.Retry == b.Retry || a.Retry != nil && b.Retry != nil && *a.Retry == *b.Retry) &&
		slices.Equal(x.Attempts, y.Attempts)
}

// sameRaw compares JSON values; a missing one reads back as null.
func sameRaw(a, b json.RawMessage) bool {
	null := func(m json.RawMessage) bool { return len(m) == 0 || string(m) == "null" }
	return bytes.Equal(a, b) || null(a) && null(b)
}

// sameClaim is sameRecord for claims.
func sameClaim(a, b *claim) bool {
	return a.Name == b.Name && a.Original == b.Original && a.Kind == b.Kind && a.Batch == b.Batch &&
		slices.Equal(a.Jobs, b.Jobs) && a.ClaimedAt.Equal(b.ClaimedAt) &&
		(a.Target == b.Target || a.Target != nil && b.Target != nil && *a.Target == *b.Target) &&
		a.Error == b.Error && slices.Equal(a.Validation, b.Validation) && a.SubmittedBy == b.SubmittedBy
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
	s.sync()
	r := s.Jobs[id]
	if r == nil {
		return
	}
	delete(s.Jobs, id)
	delete(s.live, id)
	delete(s.archived, id)
	delete(s.written, id)
	delete(s.rows, id)
	if i := slices.Index(s.order, r); i >= 0 {
		s.order = slices.Delete(s.order, i, i+1)
	}
}

// takeLost returns and clears the jobs saves found another host holds.
func (s *state) takeLost() []string {
	l := s.lost
	s.lost = nil
	return l
}

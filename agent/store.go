package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// stateVersion is bumped on an incompatible change of state.json. Version
// 2 added changes.jsonl: an agent that knows only state.json must refuse
// the store rather than lose what the log holds. Version 1 is still read.
const stateVersion = 2

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

// state is the job store, in three files beside each other:
//
//   - state.json, a snapshot of the live part: claims, and jobs not yet
//     final or whose file has not settled;
//   - changes.jsonl, what changed in the live part since that snapshot,
//     one JSON line per changed job or claim (the whole record), appended
//     and fsynced by each save;
//   - history.jsonl, the archive of finished jobs, one record per line,
//     appended when a job is archived and never rewritten in between.
//
// A save therefore writes what changed since the last one, not the live
// part (10,000 pending jobs after a burst of drops) and not the history (a
// month of finished jobs). When changes.jsonl outgrows the live part a
// save writes a new snapshot instead (amortised O(1) per change), and every
// startLocked folds the log into a fresh snapshot.
//
// Code outside this file changes records in place and then calls save;
// save finds what changed by comparing each live record with a copy of
// what it last wrote (sameRecord), which costs nanoseconds per live job.
// State changes go through setStateLocked, but progress, unit results,
// report paths and claims are still changed in place, so the diff stays
// until the store is replaced.
type state struct {
	Version int                `json:"version"`
	Jobs    map[string]*record `json:"jobs"`
	Claims  map[string]*claim  `json:"claims"` // by processing/ name; removed once settled
	// Generation numbers the snapshots; changes.jsonl names in its first
	// line the snapshot it extends, so that a log left by a crash between
	// writing a snapshot and removing the old log is not applied twice.
	Generation int64 `json:"generation,omitempty"`

	// archived are the jobs in history.jsonl; they are not changed again.
	archived map[string]bool
	// historyLines counts the lines of history.jsonl (for compaction).
	historyLines int

	// order is every job by creation (CreatedAt, then ID): the index
	// ListJobs pages through. live is every job not archived. Both follow
	// Jobs through add and remove; a job put into Jobs directly (recovery,
	// tests) is picked up by sync.
	order []*record
	live  map[string]*record

	// written and writtenClaims are the live jobs and claims as the files
	// on disk have them; dropped are live jobs removed since.
	written       map[string]record
	writtenClaims map[string]claim
	dropped       []string
	snapshotted   bool  // state.json exists (of this Generation)
	logLines      int   // lines in changes.jsonl after its header
	logSize       int64 // its size, to cut a failed append back
	snapshotNext  bool  // the next save writes a snapshot (log damaged, stale or folded at start)
	writes        int   // saves that wrote the live part (an append or a snapshot): what batching saves
}

// File names beside state.json.
const (
	historyName = "history.jsonl"
	changesName = "changes.jsonl"
)

func newState() *state {
	return &state{Version: stateVersion, Jobs: map[string]*record{}, Claims: map[string]*claim{}, archived: map[string]bool{},
		live: map[string]*record{}, written: map[string]record{}, writtenClaims: map[string]claim{}}
}

func historyPath(statePath string) string { return filepath.Join(filepath.Dir(statePath), historyName) }
func changesPath(statePath string) string { return filepath.Join(filepath.Dir(statePath), changesName) }

// change is one line of changes.jsonl: a header naming the snapshot's
// generation, a job or claim as it now is, or one that left the live part.
type change struct {
	Generation *int64  `json:"generation,omitempty"`
	Job        *record `json:"job,omitempty"`
	Claim      *claim  `json:"claim,omitempty"`
	DropJob    string  `json:"drop_job,omitempty"`
	DropClaim  string  `json:"drop_claim,omitempty"`
}

// loadState reads path, the changes logged since and the history beside
// it; missing files are an empty store.
func loadState(path string) (*state, error) {
	s := newState()
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("cannot read job store: %w", err)
	default:
		if err := json.Unmarshal(data, s); err != nil {
			return nil, fmt.Errorf("cannot parse job store %s: %w", path, err)
		}
		if s.Version != stateVersion && s.Version != 1 {
			return nil, fmt.Errorf("cannot read job store %s: version %d, want %d", path, s.Version, stateVersion)
		}
		s.Version = stateVersion
		if s.Jobs == nil {
			s.Jobs = map[string]*record{}
		}
		if s.Claims == nil {
			s.Claims = map[string]*claim{}
		}
		s.snapshotted = true
	}
	if err := s.loadChanges(changesPath(path)); err != nil {
		return nil, err
	}
	for id, r := range s.Jobs {
		s.written[id] = *r
	}
	for name, c := range s.Claims {
		s.writtenClaims[name] = *c
	}
	if err := s.loadHistory(historyPath(path)); err != nil {
		return nil, err
	}
	s.sync()
	for _, r := range s.live {
		if s.archivable(r) {
			s.snapshotNext = true // an old single-file store, or a crash before the move
			break
		}
	}
	return s, nil
}

// loadChanges applies changes.jsonl to the snapshot. A log of another
// generation is stale (a crash after the snapshot that replaced it) and
// ignored; a damaged line (cut short by a crash while appending) ends it.
// Either way, and whenever the log had lines, the next save writes a
// snapshot, so that appends always follow a clean line.
func (s *state) loadChanges(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot read job store changes: %w", err)
	}
	defer f.Close()
	s.snapshotNext = true
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	first := true
	for sc.Scan() {
		var ch change
		if err := json.Unmarshal(sc.Bytes(), &ch); err != nil {
			break
		}
		if first {
			if ch.Generation == nil || *ch.Generation != s.Generation {
				return nil
			}
			first = false
			continue
		}
		switch {
		case ch.Job != nil && ch.Job.ID != "":
			s.Jobs[ch.Job.ID] = ch.Job
		case ch.Claim != nil && ch.Claim.Name != "":
			s.Claims[ch.Claim.Name] = ch.Claim
		case ch.DropJob != "":
			delete(s.Jobs, ch.DropJob)
		case ch.DropClaim != "":
			delete(s.Claims, ch.DropClaim)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("cannot read job store changes %s: %w", path, err)
	}
	return nil
}

// loadHistory adds the archived jobs. A job also in the live part (the
// agent died between appending it and recording that it left) keeps the
// live copy; a later line of a job wins over an earlier one. A damaged
// last line (cut short by a crash while appending) is skipped.
func (s *state) loadHistory(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot read job history: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		s.historyLines++
		var r record
		if err := json.Unmarshal(line, &r); err != nil || r.ID == "" {
			continue
		}
		if _, live := s.Jobs[r.ID]; live && !s.archived[r.ID] {
			continue
		}
		s.Jobs[r.ID] = &r
		s.archived[r.ID] = true
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("cannot read job history %s: %w", path, err)
	}
	return nil
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
	if _, ok := s.written[id]; ok {
		s.dropped = append(s.dropped, id)
	}
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

// save moves newly finished jobs to the history, then records what
// changed in the live part: appended to changes.jsonl, or as a new
// snapshot when the log has grown past the live part. Both are fsynced
// before save returns: a job's record is durable before anything with an
// outside effect (its unit starting, its file settling) is done.
func (s *state) save(path string) error {
	s.sync()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("cannot save job store: %w", err)
	}
	var hist []byte
	var moved []string
	for id, r := range s.live {
		if !s.archivable(r) {
			continue
		}
		line, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("cannot encode job %s: %w", id, err)
		}
		hist = append(append(hist, line...), '\n')
		moved = append(moved, id)
	}
	var histErr error
	if len(hist) > 0 {
		if err := appendSync(historyPath(path), hist); err != nil {
			// The jobs stay live (and are saved as such below); the
			// next save tries the move again.
			histErr = fmt.Errorf("cannot save job history: %w", err)
			moved = nil
		}
		for _, id := range moved {
			s.archived[id] = true
			delete(s.live, id)
			if _, ok := s.written[id]; ok {
				s.dropped = append(s.dropped, id)
			}
		}
		s.historyLines += len(moved)
	}
	if err := s.saveLive(path); err != nil {
		return err
	}
	return histErr
}

// saveLive records what changed in the live part since the last save.
func (s *state) saveLive(path string) error {

	var jobsChanged []*record
	for id, r := range s.live {
		if w, ok := s.written[id]; !ok || !sameRecord(&w, r) {
			jobsChanged = append(jobsChanged, r)
		}
	}
	var claimsChanged []*claim
	for name, c := range s.Claims {
		if w, ok := s.writtenClaims[name]; !ok || !sameClaim(&w, c) {
			claimsChanged = append(claimsChanged, c)
		}
	}
	var claimsGone []string
	for name := range s.writtenClaims {
		if s.Claims[name] == nil {
			claimsGone = append(claimsGone, name)
		}
	}
	n := len(jobsChanged) + len(claimsChanged) + len(claimsGone) + len(s.dropped)
	if n == 0 && s.snapshotted && !s.snapshotNext {
		return nil
	}
	s.writes++
	if !s.snapshotted || s.snapshotNext || s.logLines+n > 2*(len(s.live)+len(s.Claims))+1024 {
		return s.snapshot(path)
	}

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf) // one line per value
	if s.logSize == 0 {
		gen := s.Generation
		enc.Encode(change{Generation: &gen})
	}
	for _, r := range jobsChanged {
		if err := enc.Encode(change{Job: r}); err != nil {
			return fmt.Errorf("cannot encode job %s: %w", r.ID, err)
		}
	}
	for _, c := range claimsChanged {
		if err := enc.Encode(change{Claim: c}); err != nil {
			return fmt.Errorf("cannot encode claim %s: %w", c.Name, err)
		}
	}
	for _, name := range claimsGone {
		enc.Encode(change{DropClaim: name})
	}
	for _, id := range s.dropped {
		enc.Encode(change{DropJob: id})
	}
	if err := s.appendChanges(changesPath(path), buf.Bytes()); err != nil {
		return err
	}
	s.logLines += n
	for _, r := range jobsChanged {
		s.written[r.ID] = *r
	}
	for _, c := range claimsChanged {
		s.writtenClaims[c.Name] = *c
	}
	for _, name := range claimsGone {
		delete(s.writtenClaims, name)
	}
	for _, id := range s.dropped {
		delete(s.written, id)
	}
	s.dropped = nil
	return nil
}

// appendChanges appends to changes.jsonl and fsyncs it; a failed append
// is cut back so that the next one starts on a clean line.
func (s *state) appendChanges(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("cannot save job store: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		if terr := f.Truncate(s.logSize); terr != nil {
			s.snapshotNext = true
		}
		f.Close()
		return fmt.Errorf("cannot save job store: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("cannot save job store: %w", err)
	}
	if s.logSize == 0 {
		syncDir(filepath.Dir(path)) // the log is new: make its name durable too
	}
	s.logSize += int64(len(data))
	return nil
}

// snapshot writes the live part as a new state.json of the next
// generation and removes changes.jsonl, which the new snapshot holds.
func (s *state) snapshot(path string) error {
	live := &state{Version: stateVersion, Generation: s.Generation + 1, Jobs: s.live, Claims: s.Claims}
	data, err := json.Marshal(live)
	if err != nil {
		return fmt.Errorf("cannot encode job store: %w", err)
	}
	if err := queue.WriteFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("cannot save job store: %w", err)
	}
	s.Generation++
	s.snapshotted, s.snapshotNext = true, false
	// A crash before this removal leaves a log of the old generation,
	// which loadChanges ignores.
	if err := os.Remove(changesPath(path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.snapshotNext = true // an append must not follow that log
	}
	s.logLines, s.logSize = 0, 0
	clear(s.written)
	for id, r := range s.live {
		s.written[id] = *r
	}
	clear(s.writtenClaims)
	for name, c := range s.Claims {
		s.writtenClaims[name] = *c
	}
	s.dropped = nil
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// appendSync appends data to path and fsyncs it. A failed append is cut
// back, so that the next one does not continue a damaged line.
func appendSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err == nil {
		_, err = f.Write(data)
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			f.Truncate(fi.Size())
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// sameRecord reports whether two records persist the same; only what
// save writes counts. Far cheaper than encoding either.
func sameRecord(a, b *record) bool {
	x, y := &a.Job, &b.Job
	return x.ID == y.ID && x.Name == y.Name && x.Batch == y.Batch && x.Manifest == y.Manifest &&
		x.State == y.State && x.Stage == y.Stage && x.Progress == y.Progress && x.StatusText == y.StatusText &&
		x.Unit == y.Unit && x.SubmittedBy == y.SubmittedBy && x.Priority == y.Priority &&
		x.CreatedAt.Equal(y.CreatedAt) && x.StartedAt.Equal(y.StartedAt) && x.FinishedAt.Equal(y.FinishedAt) &&
		x.Error == y.Error && x.ErrorStage == y.ErrorStage && slices.Equal(x.Outputs, y.Outputs) &&
		x.ReportPath == y.ReportPath && x.BytesDone == y.BytesDone && x.BytesTotal == y.BytesTotal &&
		x.ConvertedBytes == y.ConvertedBytes && slices.Equal(x.StageTimes, y.StageTimes) && slices.Equal(x.Warnings, y.Warnings) &&
		a.Claim == b.Claim && sameRaw(a.VM, b.VM) && a.JobDir == b.JobDir && a.OutputDir == b.OutputDir &&
		a.Concurrency == b.Concurrency && a.FileTime.Equal(b.FileTime) && a.DropperUID == b.DropperUID &&
		a.Cancel == b.Cancel && a.Attempt == b.Attempt && a.BootID == b.BootID && a.UnitResult == b.UnitResult &&
		a.Cursor == b.Cursor && a.Invocation == b.Invocation && slices.Equal(a.Validation, b.Validation) &&
		a.ReportStatus == b.ReportStatus && slices.Equal(a.KeptOutputs, b.KeptOutputs)
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

// compact rewrites the history with exactly the archived jobs (after
// prune, or when updated jobs left stale lines behind), and folds the
// changes log into a new snapshot. Called at start.
func (s *state) compact(path string) error {
	if s.snapshotNext {
		if err := s.save(path); err != nil {
			return err
		}
	}
	if s.historyLines <= len(s.archived) {
		return nil
	}
	ids := make([]string, 0, len(s.archived))
	for id := range s.archived {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var buf []byte
	for _, id := range ids {
		line, err := json.Marshal(s.Jobs[id])
		if err != nil {
			return fmt.Errorf("cannot encode job %s: %w", id, err)
		}
		buf = append(append(buf, line...), '\n')
	}
	if err := queue.WriteFileAtomic(historyPath(path), buf, 0o600); err != nil {
		return fmt.Errorf("cannot compact job history: %w", err)
	}
	s.historyLines = len(ids)
	return nil
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
				if _, ok := s.written[id]; ok {
					s.dropped = append(s.dropped, id)
				}
				pruned = true
			}
		}
	}
	if pruned {
		s.order = slices.DeleteFunc(s.order, func(r *record) bool { return s.Jobs[r.ID] != r })
	}
}

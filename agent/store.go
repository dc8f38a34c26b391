package agent

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
)

// stateVersion is bumped on an incompatible change of state.json.
const stateVersion = 1

// keepFinished is how long finished jobs stay in the store (and so in
// ListJobs) after they settled.
const keepFinished = 30 * 24 * time.Hour

// record is the agent's persisted view of one job: the public jobs.Job plus
// what the agent needs to finish it after a restart.
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
	ReportStatus string          `json:"report_status,omitempty"`

	// Not persisted: what the agent learnt from the unit's signals.
	sawActive bool
}

// claim is one claimed file: a manifest (one job, or one per VM of a batch),
// a submitted manifest or a dropped image. It settles when all its jobs
// are final.
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

// state is the job store: state.json holds the live part (claims, and
// jobs not yet final or whose file has not settled) and history.jsonl the
// archive of finished jobs, one JSON record per line, appended when a job
// is archived and never rewritten in between. A save therefore costs what
// the live part weighs, not the whole history (a month of finished jobs).
type state struct {
	Version int                `json:"version"`
	Jobs    map[string]*record `json:"jobs"`
	Claims  map[string]*claim  `json:"claims"` // by processing/ name; removed once settled

	// archived are the jobs in history.jsonl; they are not changed again.
	archived map[string]bool
	// historyLines counts the lines of history.jsonl (for compaction).
	historyLines int
}

// historyName is the archive of finished jobs beside state.json.
const historyName = "history.jsonl"

func newState() *state {
	return &state{Version: stateVersion, Jobs: map[string]*record{}, Claims: map[string]*claim{}, archived: map[string]bool{}}
}

func historyPath(statePath string) string { return filepath.Join(filepath.Dir(statePath), historyName) }

// loadState reads path and the history beside it; missing files are an
// empty store.
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
		if s.Version != stateVersion {
			return nil, fmt.Errorf("cannot read job store %s: version %d, want %d", path, s.Version, stateVersion)
		}
		if s.Jobs == nil {
			s.Jobs = map[string]*record{}
		}
		if s.Claims == nil {
			s.Claims = map[string]*claim{}
		}
	}
	if err := s.loadHistory(historyPath(path)); err != nil {
		return nil, err
	}
	return s, nil
}

// loadHistory adds the archived jobs. A job also in state.json (the agent
// died between appending it and rewriting state.json) keeps the live copy;
// a later line of a job wins over an earlier one. A damaged last line
// (cut short by a crash while appending) is skipped.
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

// archivable reports whether a job is done for good: final, and the file
// it came from settled.
func (s *state) archivable(r *record) bool {
	if !r.State.Ready() {
		return false
	}
	_, open := s.Claims[r.Claim]
	return !open
}

// save appends newly finished jobs to the history, then writes the live
// part of the store atomically.
func (s *state) save(path string) error {
	var lines []byte
	var moved []string
	for id, r := range s.Jobs {
		if s.archived[id] || !s.archivable(r) {
			continue
		}
		line, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("cannot encode job %s: %w", id, err)
		}
		lines = append(append(lines, line...), '\n')
		moved = append(moved, id)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("cannot save job store: %w", err)
	}
	if len(lines) > 0 {
		if err := appendSync(historyPath(path), lines); err != nil {
			return fmt.Errorf("cannot save job history: %w", err)
		}
		for _, id := range moved {
			s.archived[id] = true
		}
		s.historyLines += len(moved)
	}
	live := &state{Version: s.Version, Jobs: make(map[string]*record, len(s.Jobs)-len(s.archived)), Claims: s.Claims}
	for id, r := range s.Jobs {
		if !s.archived[id] {
			live.Jobs[id] = r
		}
	}
	data, err := json.MarshalIndent(live, "", " ")
	if err != nil {
		return fmt.Errorf("cannot encode job store: %w", err)
	}
	if err := queue.WriteFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("cannot save job store: %w", err)
	}
	return nil
}

func appendSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// compact rewrites the history with exactly the archived jobs (after
// prune, or when updated jobs left stale lines behind). Called at start.
func (s *state) compact(path string) error {
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

// prune forgets finished jobs older than keepFinished whose claim settled.
func (s *state) prune(now time.Time) {
	for id, r := range s.Jobs {
		if r.State.Ready() && !r.FinishedAt.IsZero() && now.Sub(r.FinishedAt) > keepFinished {
			if _, open := s.Claims[r.Claim]; !open {
				delete(s.Jobs, id)
				delete(s.archived, id)
			}
		}
	}
}

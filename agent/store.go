package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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

// state is state.json.
type state struct {
	Version int                `json:"version"`
	Jobs    map[string]*record `json:"jobs"`
	Claims  map[string]*claim  `json:"claims"` // by processing/ name; removed once settled
}

func newState() *state {
	return &state{Version: stateVersion, Jobs: map[string]*record{}, Claims: map[string]*claim{}}
}

// loadState reads path; a missing file is an empty store.
func loadState(path string) (*state, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return newState(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read job store: %w", err)
	}
	s := newState()
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
	return s, nil
}

// save writes the store atomically.
func (s *state) save(path string) error {
	data, err := json.MarshalIndent(s, "", " ")
	if err != nil {
		return fmt.Errorf("cannot encode job store: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("cannot save job store: %w", err)
	}
	if err := queue.WriteFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("cannot save job store: %w", err)
	}
	return nil
}

// prune forgets finished jobs older than keepFinished whose claim settled.
func (s *state) prune(now time.Time) {
	for id, r := range s.Jobs {
		if r.State.Ready() && !r.FinishedAt.IsZero() && now.Sub(r.FinishedAt) > keepFinished {
			if _, open := s.Claims[r.Claim]; !open {
				delete(s.Jobs, id)
			}
		}
	}
}

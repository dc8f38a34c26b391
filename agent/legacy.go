package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The agent before River kept its jobs in three files in state_dir:
// state.json (a snapshot of the live jobs and claims), changes.jsonl (the
// changes since, one JSON line each) and history.jsonl (finished jobs).
// The first start of an agent with the River store imports them, once,
// and renames them beside (legacySuffix): nothing queued is lost on an
// upgrade, and the files stay for whoever wants to look.

// Old store file names, in state_dir.
const (
	legacyStateName   = "state.json"
	legacyChangesName = "changes.jsonl"
	legacyHistoryName = "history.jsonl"
	// legacySuffix is added to each old file once it is imported.
	legacySuffix = ".imported"
	// legacyImported is the hyper2kvm_meta key set in the transaction
	// that imports: a crash before the renames must not import twice.
	legacyImported = "legacy_imported"
)

// legacyState is state.json.
type legacyState struct {
	Version    int                `json:"version"`
	Jobs       map[string]*record `json:"jobs"`
	Claims     map[string]*claim  `json:"claims"`
	Generation int64              `json:"generation,omitempty"`
}

// legacyChange is one line of changes.jsonl.
type legacyChange struct {
	Generation *int64  `json:"generation,omitempty"`
	Job        *record `json:"job,omitempty"`
	Claim      *claim  `json:"claim,omitempty"`
	DropJob    string  `json:"drop_job,omitempty"`
	DropClaim  string  `json:"drop_claim,omitempty"`
}

// legacyFiles are the old store's files in dir that exist.
func legacyFiles(dir string) []string {
	var out []string
	for _, n := range []string{legacyStateName, legacyChangesName, legacyHistoryName} {
		if _, err := os.Lstat(filepath.Join(dir, n)); err == nil {
			out = append(out, filepath.Join(dir, n))
		}
	}
	return out
}

// loadLegacy reads the old store in dir as the old agent would have:
// the snapshot, the changes logged since it (a log of another generation
// is stale; a damaged line ends it) and the history (the live copy of a
// job wins; a damaged line is skipped).
func loadLegacy(dir string) (jobsByID map[string]*record, claims map[string]*claim, err error) {
	st := legacyState{Jobs: map[string]*record{}, Claims: map[string]*claim{}}
	path := filepath.Join(dir, legacyStateName)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, nil, fmt.Errorf("cannot read the old job store: %w", err)
	default:
		if err := json.Unmarshal(data, &st); err != nil {
			return nil, nil, fmt.Errorf("cannot parse the old job store %s: %w", path, err)
		}
		if st.Version != 1 && st.Version != 2 {
			return nil, nil, fmt.Errorf("cannot import the old job store %s: version %d, want 1 or 2", path, st.Version)
		}
		if st.Jobs == nil {
			st.Jobs = map[string]*record{}
		}
		if st.Claims == nil {
			st.Claims = map[string]*claim{}
		}
	}
	if err := eachLine(filepath.Join(dir, legacyChangesName), true, func(line []byte, first bool) bool {
		var ch legacyChange
		if json.Unmarshal(line, &ch) != nil {
			return false
		}
		if first {
			return ch.Generation != nil && *ch.Generation == st.Generation
		}
		switch {
		case ch.Job != nil && ch.Job.ID != "":
			st.Jobs[ch.Job.ID] = ch.Job
		case ch.Claim != nil && ch.Claim.Name != "":
			st.Claims[ch.Claim.Name] = ch.Claim
		case ch.DropJob != "":
			delete(st.Jobs, ch.DropJob)
		case ch.DropClaim != "":
			delete(st.Claims, ch.DropClaim)
		}
		return true
	}); err != nil {
		return nil, nil, err
	}
	live := make(map[string]bool, len(st.Jobs))
	for id := range st.Jobs {
		live[id] = true
	}
	if err := eachLine(filepath.Join(dir, legacyHistoryName), false, func(line []byte, _ bool) bool {
		var r record
		if json.Unmarshal(line, &r) != nil || r.ID == "" || live[r.ID] {
			return true
		}
		st.Jobs[r.ID] = &r
		return true
	}); err != nil {
		return nil, nil, err
	}
	return st.Jobs, st.Claims, nil
}

// eachLine calls f with each non-empty line of path (a missing file has
// none) until f returns false.
func eachLine(path string, header bool, f func(line []byte, first bool) bool) error {
	fh, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot read the old job store: %w", err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	first := header
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		if !f(sc.Bytes(), first) {
			break
		}
		first = false
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("cannot read the old job store %s: %w", path, err)
	}
	return nil
}

// importLegacy moves the old store in dir into d, once: the jobs and
// claims are inserted in one transaction that also marks the import
// done, then the old files are renamed beside. Called with d's lock held.
func importLegacy(ctx context.Context, d *jobDB, dir string) (int, error) {
	files := legacyFiles(dir)
	if len(files) == 0 {
		return 0, nil
	}
	done, err := d.meta(ctx, legacyImported)
	if err != nil {
		return 0, fmt.Errorf("cannot read the job store: %w", err)
	}
	n := 0
	if done == "" {
		jobsByID, claims, err := loadLegacy(dir)
		if err != nil {
			return 0, err
		}
		s := newState()
		s.db = d
		for _, r := range jobsByID {
			if r.Host == "" {
				r.Host = d.host // the old store had one host: this one
			}
			s.Jobs[r.ID] = r
		}
		for name, c := range claims {
			s.Claims[name] = c
		}
		n = len(s.Jobs)
		s.touchAll()
		if err := s.saveWith(ctx, legacyImported, "1"); err != nil {
			return 0, fmt.Errorf("cannot import the old job store: %w", err)
		}
	}
	for _, f := range files {
		if err := os.Rename(f, f+legacySuffix); err != nil {
			return n, fmt.Errorf("cannot rename the imported %s: %w", f, err)
		}
	}
	syncDir(dir)
	return n, nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

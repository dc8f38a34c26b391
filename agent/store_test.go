package agent

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

func storeWith(t *testing.T) (*state, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.json")
	s := newState()
	now := time.Now()
	add := func(id string, st jobs.State, claim string) {
		s.Jobs[id] = &record{Job: jobs.Job{ID: id, Name: "vm-" + id, State: st, CreatedAt: now, FinishedAt: now}, Claim: claim}
	}
	add("done0001", jobs.Completed, "a.json") // settled: archived
	add("done0002", jobs.Failed, "b.json")    // its claim is open: stays live
	add("runs0003", jobs.Running, "b.json")
	s.Claims["b.json"] = &claim{Name: "b.json", Jobs: []string{"done0002", "runs0003"}}
	return s, path
}

func TestStoreArchivesFinishedJobs(t *testing.T) {
	s, path := storeWith(t)
	if err := s.save(path); err != nil {
		t.Fatal(err)
	}
	live, _ := os.ReadFile(path)
	hist, _ := os.ReadFile(historyPath(path))
	if bytes.Contains(live, []byte("done0001")) || !bytes.Contains(hist, []byte("done0001")) {
		t.Errorf("a settled finished job belongs in the history only:\nstate %s\nhistory %s", live, hist)
	}
	if !bytes.Contains(live, []byte("done0002")) || !bytes.Contains(live, []byte("runs0003")) || bytes.Contains(hist, []byte("done0002")) {
		t.Errorf("jobs of an open claim belong in state.json:\nstate %s\nhistory %s", live, hist)
	}
	// The claim settles: its jobs move to the history, once.
	s.Jobs["runs0003"].State = jobs.Completed
	delete(s.Claims, "b.json")
	for range 2 {
		if err := s.save(path); err != nil {
			t.Fatal(err)
		}
	}
	hist, _ = os.ReadFile(historyPath(path))
	if n := bytes.Count(hist, []byte("\n")); n != 3 {
		t.Errorf("history has %d lines, want 3:\n%s", n, hist)
	}
	got, err := loadState(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Jobs) != 3 || len(got.archived) != 3 || got.Jobs["runs0003"].State != jobs.Completed {
		t.Errorf("reloaded %d jobs, %d archived: %+v", len(got.Jobs), len(got.archived), got.Jobs)
	}
}

func TestStoreHistoryCrashCases(t *testing.T) {
	s, path := storeWith(t)
	if err := s.save(path); err != nil {
		t.Fatal(err)
	}
	// A crash while appending leaves a cut line; a crash between the
	// append and the rewrite of state.json leaves the job in both.
	f, _ := os.OpenFile(historyPath(path), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"id":"done0002","state":"comp`)
	f.Close()
	got, err := loadState(path)
	if err != nil {
		t.Fatalf("a cut last line must not make the store unreadable: %v", err)
	}
	if got.Jobs["done0002"] == nil || got.archived["done0002"] || got.Jobs["done0002"].State != jobs.Failed {
		t.Errorf("the live copy must win: %+v archived %v", got.Jobs["done0002"], got.archived)
	}
	if err := got.compact(path); err != nil {
		t.Fatal(err)
	}
	hist, _ := os.ReadFile(historyPath(path))
	if n := bytes.Count(hist, []byte("\n")); n != 1 || !bytes.HasSuffix(hist, []byte("}\n")) {
		t.Errorf("compacted history:\n%s", hist)
	}
}

func TestStoreReadsOldSingleFile(t *testing.T) {
	// Before the history, state.json held every job.
	path := filepath.Join(t.TempDir(), "state.json")
	os.WriteFile(path, []byte(`{"version":1,"jobs":{"old00001":{"id":"old00001","state":"completed","claim":"x.json"}},"claims":{}}`), 0o600)
	s, err := loadState(path)
	if err != nil || s.Jobs["old00001"] == nil {
		t.Fatalf("%v %+v", err, s)
	}
	if err := s.save(path); err != nil {
		t.Fatal(err)
	}
	live, _ := os.ReadFile(path)
	hist, _ := os.ReadFile(historyPath(path))
	if bytes.Contains(live, []byte("old00001")) || !bytes.Contains(hist, []byte("old00001")) {
		t.Errorf("old finished job not moved to the history:\nstate %s\nhistory %s", live, hist)
	}
}

package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/config"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
	"github.com/hyper2kvm/hyper2kvm/test/pgcluster"
)

// openTestStore opens (or reopens) the River store in dir.
func openTestStore(t *testing.T, dir string) *state {
	t.Helper()
	s, err := openStore("sqlite://"+filepath.Join(dir, "jobs.db"), "testhost", dir, NewLogger(os.Stderr, false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.db.close)
	return s
}

func storeWith(t *testing.T) (*state, string) {
	t.Helper()
	dir := t.TempDir()
	s := openTestStore(t, dir)
	now := time.Now()
	add := func(id string, st jobs.State, claim string) {
		s.add(&record{Job: jobs.Job{ID: id, Name: "vm-" + id, State: st, CreatedAt: now, FinishedAt: now}, Claim: claim})
	}
	add("done0001", jobs.Completed, "a.json") // settled: archived
	add("done0002", jobs.Failed, "b.json")    // its claim is open: stays live
	add("runs0003", jobs.Running, "b.json")
	s.putClaim(&claim{Name: "b.json", Jobs: []string{"done0002", "runs0003"}})
	return s, dir
}

// sameStore compares what two stores hold, as a reload sees it.
func sameStore(t *testing.T, got, want *state) {
	t.Helper()
	if err := storeDiff(got, want); err != nil {
		t.Error(err)
	}
}

// storeDiff says how the jobs and claims of two stores differ, as saved
// (their JSON: what the database keeps), nil when they do not.
func storeDiff(got, want *state) error {
	var diffs []string
	for id, r := range want.Jobs {
		if g := got.Jobs[id]; g == nil || !sameJSON(g, r) {
			diffs = append(diffs, fmt.Sprintf("job %s is %s in the database, %s in memory", id, asJSON(g), asJSON(r)))
		}
	}
	for id := range got.Jobs {
		if want.Jobs[id] == nil {
			diffs = append(diffs, fmt.Sprintf("job %s is in the database, not in memory", id))
		}
	}
	for name, c := range want.Claims {
		if g := got.Claims[name]; g == nil || !sameJSON(g, c) {
			diffs = append(diffs, fmt.Sprintf("claim %s is %s in the database, %s in memory", name, asJSON(g), asJSON(c)))
		}
	}
	for name := range got.Claims {
		if want.Claims[name] == nil {
			diffs = append(diffs, fmt.Sprintf("claim %s is in the database, not in memory", name))
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	slices.Sort(diffs)
	if len(diffs) > 5 {
		diffs = append(diffs[:5], fmt.Sprintf("and %d more", len(diffs)-5))
	}
	return fmt.Errorf("the database and memory differ after a save:\n%s", strings.Join(diffs, "\n"))
}

func asJSON(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(data)
}

// sameJSON compares two values as saved: times by instant, an absent VM
// as null.
func sameJSON(a, b any) bool {
	norm := func(v any) any {
		var out any
		json.Unmarshal([]byte(asJSON(v)), &out)
		return normTimes(out)
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

// normTimes turns every RFC 3339 time in a decoded JSON value into its
// instant (UTC), and drops nulls: the database keeps the same instant in
// UTC, and an omitted field as absent.
func normTimes(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if e == nil {
				delete(x, k)
				continue
			}
			x[k] = normTimes(e)
		}
	case []any:
		for i, e := range x {
			x[i] = normTimes(e)
		}
	case string:
		if t, err := time.Parse(time.RFC3339Nano, x); err == nil {
			return t.UTC().Format(time.RFC3339Nano)
		}
	}
	return v
}

// checkSaved makes s check after every save that the code which changed
// a job or claim marked it (touch, putClaim, touchClaim, dropClaim), and
// reports one that was not as an error of t: its change would not be in
// the database. Every save, each job and claim not written is compared
// with what it was at the last save (with many jobs, the jobs done for
// good at every 16th save only: encoding them all is what costs); with
// few jobs, the database itself is compared with memory too.
func checkSaved(t *testing.T, s *state) {
	jobsWere, claimsWere := map[string]string{}, map[string]string{}
	saves := 0
	look := func(b *batch) {
		saves++
		written := map[string]bool{}
		if b != nil {
			for _, r := range append(slices.Clone(b.insert), b.update...) {
				written[r.ID] = true
			}
			for _, c := range b.putClaims {
				written["claim "+c.Name] = true
			}
		}
		for id, r := range s.Jobs {
			if len(s.Jobs) > 100 && saves%16 != 0 && s.archived[id] && !written[id] {
				continue
			}
			now := asJSON(r)
			if was, ok := jobsWere[id]; ok && b != nil && !written[id] && was != now {
				t.Errorf("job %s changed but was not marked (touch), so not saved:\nsaved  %s\nmemory %s", id, was, now)
			}
			jobsWere[id] = now
		}
		for id := range jobsWere {
			if s.Jobs[id] == nil {
				delete(jobsWere, id)
			}
		}
		for name, c := range s.Claims {
			now := asJSON(c)
			if was, ok := claimsWere[name]; ok && b != nil && !written["claim "+name] && was != now {
				t.Errorf("claim %s changed but was not marked (touchClaim), so not saved:\nsaved  %s\nmemory %s", name, was, now)
			}
			claimsWere[name] = now
		}
		for name := range claimsWere {
			if s.Claims[name] == nil {
				delete(claimsWere, name)
			}
		}
		if len(s.Jobs) > 30 {
			return
		}
		got, err := s.db.load(context.Background()) // also at the test's cleanup
		if err != nil {
			t.Errorf("reloading the store: %v", err)
			return
		}
		if err := storeDiff(got, s); err != nil {
			t.Error(err)
		}
	}
	look(nil)
	s.saved = look
}

// riverStates is each job's River state as the database has it.
func riverStates(t *testing.T, s *state) map[string]string {
	t.Helper()
	rows, err := s.db.db.Query(`SELECT json_extract(json(args), '$.id'), state FROM river_job WHERE kind = ?`, jobKind)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, st string
		if err := rows.Scan(&id, &st); err != nil {
			t.Fatal(err)
		}
		out[id] = st
	}
	return out
}

// TestStoreKeepsJobsInRiver: every job is a river_job row in the River
// state its own state maps to; a job done for good is written once more
// and then left out of the comparison save makes.
func TestStoreKeepsJobsInRiver(t *testing.T) {
	s, dir := storeWith(t)
	if err := s.save(); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"done0001": "completed", "done0002": "discarded", "runs0003": "running"}
	if got := riverStates(t, s); !reflectEqual(got, want) {
		t.Errorf("River states %v, want %v", got, want)
	}
	if !s.archived["done0001"] || s.live["done0002"] == nil {
		t.Errorf("archived %v, live %v", s.archived, s.live)
	}
	// The claim settles: its jobs are written as they end, then archived.
	s.Jobs["runs0003"].State, s.Jobs["runs0003"].FinishedAt = jobs.Completed, time.Now()
	s.touch(s.Jobs["runs0003"])
	s.dropClaim(s.Claims["b.json"])
	for range 2 {
		if err := s.save(); err != nil {
			t.Fatal(err)
		}
	}
	got := openTestStore(t, dir)
	if len(got.Jobs) != 3 || len(got.archived) != 3 || len(got.live) != 0 || got.Jobs["runs0003"].State != jobs.Completed || len(got.Claims) != 0 {
		t.Errorf("reloaded %d jobs, %d archived, %d live, claims %v: %+v", len(got.Jobs), len(got.archived), len(got.live), got.Claims, got.Jobs)
	}
	if st := riverStates(t, got)["runs0003"]; st != "completed" {
		t.Errorf("runs0003 is %q in River", st)
	}
	if _, err := os.Stat(filepath.Join(dir, legacyStateName)); err == nil {
		t.Error("the River store wrote state.json")
	}
}

// changesOf is how many rows the store's connection has written so far.
func changesOf(t *testing.T, s *state) int {
	t.Helper()
	var n int
	if err := s.db.db.QueryRow(`SELECT total_changes()`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestStoreSaveWritesWhatChanged: with many pending jobs live, a save
// writes the changed rows only, and a reload gives what was saved.
func TestStoreSaveWritesWhatChanged(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	vm := json.RawMessage(`{"version":"1.0","name":"vm","pipeline":{"load":{"source_type":"raw","source_path":"/srv/vm.raw"}}}`)
	addPending := func(i int) *record {
		id := fmt.Sprintf("%08x", i)
		r := &record{Job: jobs.Job{ID: id, Name: "vm-" + id, State: jobs.Pending, CreatedAt: t0.Add(time.Duration(i) * time.Millisecond)},
			Claim: id + ".json", VM: vm}
		s.add(r)
		s.putClaim(&claim{Name: id + ".json", Original: id + ".json", Kind: kindManifest, Jobs: []string{id}})
		return r
	}
	for i := range 2000 {
		addPending(i)
	}
	if err := s.save(); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		do   func()
		most int // rows written
	}{
		{"nothing changed", func() {}, 0},
		{"one job starts", func() {
			s.Jobs["00000007"].State = jobs.Running
			s.Jobs["00000007"].Attempt = 1
			s.touch(s.Jobs["00000007"])
		}, 1},
		{"progress", func() { s.Jobs["00000007"].Progress = 40; s.touch(s.Jobs["00000007"]) }, 1},
		{"one new claim with a job", func() { addPending(5000) }, 4}, // River's insert, its queue row, the record, the claim
		{"a claim settles, its job is archived", func() {
			r := s.Jobs["00000003"]
			r.State, r.FinishedAt = jobs.Cancelled, t0
			s.touch(r)
			s.dropClaim(s.Claims[r.Claim])
		}, 2},
		{"a job's outputs change", func() { s.Jobs["00000007"].Outputs = []string{"/out/a.qcow2"}; s.touch(s.Jobs["00000007"]) }, 1},
		{"a claim gets its target", func() {
			c := s.Claims["00000008.json"]
			c.Target = &queue.Target{Dir: "/q/failed/2026-01-02", Name: "00000008.json", Suffix: queue.ErrorSuffix}
			s.touchClaim(c)
		}, 1},
	}
	for _, st := range steps {
		before := changesOf(t, s)
		st.do()
		if err := s.save(); err != nil {
			t.Fatal(err)
		}
		if n := changesOf(t, s) - before; n > st.most || st.most > 0 && n == 0 {
			t.Errorf("%s: wrote %d rows, want at most %d and some", st.name, n, st.most)
		}
		got := openTestStore(t, dir)
		sameStore(t, got, s)
	}
	if st := riverStates(t, s)["00000003"]; st != "cancelled" {
		t.Errorf("a cancelled job is %q in River", st)
	}
}

// TestStoreFailedSaveLosesNothing: a save whose transaction fails (the
// disk full, say) leaves the database as it was, and the next save writes
// everything that changed since the last good one.
func TestStoreFailedSaveLosesNothing(t *testing.T) {
	s, dir := storeWith(t)
	if err := s.save(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.db.Exec(`CREATE TRIGGER fail_updates BEFORE UPDATE ON river_job BEGIN SELECT RAISE(ABORT, 'disk full'); END`); err != nil {
		t.Fatal(err)
	}
	s.Jobs["runs0003"].Progress = 50
	s.touch(s.Jobs["runs0003"])
	s.add(&record{Job: jobs.Job{ID: "new00004", State: jobs.Pending, CreatedAt: time.Now()}, Claim: "c.json"})
	s.putClaim(&claim{Name: "c.json", Jobs: []string{"new00004"}})
	if err := s.save(); err == nil {
		t.Fatal("a save that could not update succeeded")
	}
	if got := openTestStore(t, dir); got.Jobs["new00004"] != nil || got.Claims["c.json"] != nil || got.Jobs["runs0003"].Progress == 50 {
		t.Errorf("half a save was kept: %+v %+v", got.Jobs, got.Claims)
	}
	if _, err := s.db.db.Exec(`DROP TRIGGER fail_updates`); err != nil {
		t.Fatal(err)
	}
	if err := s.save(); err != nil {
		t.Fatal(err)
	}
	sameStore(t, openTestStore(t, dir), s)
}

// writeLegacy writes jobs and claims as the agent before River did:
// state.json, version 2.
func writeLegacy(t *testing.T, dir string, js map[string]*record, cs map[string]*claim) {
	t.Helper()
	data, err := json.Marshal(legacyState{Version: 2, Jobs: js, Claims: cs})
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, legacyStateName), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestStoreImportsTheOldFilesOnce: the first start imports state.json,
// changes.jsonl and history.jsonl as the old agent read them (a stale or
// cut log, a cut history line, a job in both), renames them beside, and
// never imports again.
func TestStoreImportsTheOldFilesOnce(t *testing.T) {
	const state = `{"version":2,"generation":3,"jobs":{` +
		`"pend0001":{"id":"pend0001","state":"pending","claim":"y.json","priority":5},` +
		`"runs0002":{"id":"runs0002","state":"running","claim":"y.json","attempt":1,"unit":"hyper2kvm-job-runs0002.service"},` +
		`"done0003":{"id":"done0003","state":"running","claim":"z.json"}},` +
		`"claims":{"y.json":{"name":"y.json","jobs":["pend0001","runs0002"]},"z.json":{"name":"z.json","jobs":["done0003"]}}}`
	const history = `{"id":"old00004","state":"completed","claim":"x.json","outputs":["/o/x.qcow2"]}
{"id":"done0003","state":"completed","claim":"z.json"}
{"id":"cut`
	tests := []struct {
		name    string
		changes string
		want    map[string]jobs.State
		claims  int
	}{
		{"no log", "", map[string]jobs.State{"pend0001": jobs.Pending, "runs0002": jobs.Running, "done0003": jobs.Running, "old00004": jobs.Completed}, 2},
		{"a log of this snapshot, cut short", `{"generation":3}
{"job":{"id":"done0003","state":"completed","claim":"z.json"}}
{"drop_claim":"z.json"}
{"job":{"id":"pend0001","sta`, map[string]jobs.State{"pend0001": jobs.Pending, "runs0002": jobs.Running, "done0003": jobs.Completed, "old00004": jobs.Completed}, 1},
		{"a stale log", `{"generation":2}
{"drop_job":"pend0001"}`, map[string]jobs.State{"pend0001": jobs.Pending, "runs0002": jobs.Running, "done0003": jobs.Running, "old00004": jobs.Completed}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, legacyStateName), []byte(state), 0o600)
			os.WriteFile(filepath.Join(dir, legacyHistoryName), []byte(history), 0o600)
			if tc.changes != "" {
				os.WriteFile(filepath.Join(dir, legacyChangesName), []byte(tc.changes), 0o600)
			}
			s := openTestStore(t, dir)
			got := map[string]jobs.State{}
			for id, r := range s.Jobs {
				got[id] = r.State
			}
			if !reflectEqual(got, tc.want) || len(s.Claims) != tc.claims {
				t.Errorf("imported %v and %d claims, want %v and %d", got, len(s.Claims), tc.want, tc.claims)
			}
			if r := s.Jobs["pend0001"]; r == nil || r.Priority != 5 {
				t.Errorf("pend0001 imported as %+v", r)
			}
			for _, n := range []string{legacyStateName, legacyHistoryName} {
				if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
					t.Errorf("%s left in place after the import", n)
				}
				if _, err := os.Stat(filepath.Join(dir, n+legacySuffix)); err != nil {
					t.Errorf("%s not kept beside: %v", n, err)
				}
			}
			// A crash after the import committed and before the renames:
			// the files are back, the next start must not import twice.
			os.Rename(filepath.Join(dir, legacyStateName+legacySuffix), filepath.Join(dir, legacyStateName))
			again := openTestStore(t, dir)
			if len(again.Jobs) != len(tc.want) {
				t.Errorf("a second start has %d jobs, want %d", len(again.Jobs), len(tc.want))
			}
			var rows int
			again.db.db.QueryRow(`SELECT count(*) FROM river_job`).Scan(&rows)
			if rows != len(tc.want) {
				t.Errorf("%d river_job rows, want %d", rows, len(tc.want))
			}
		})
	}
}

func TestStoreRefusesAnOldStoreOfAnotherVersion(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, legacyStateName), []byte(`{"version":99}`), 0o600)
	_, err := openStore("sqlite://"+filepath.Join(dir, "jobs.db"), "testhost", dir, NewLogger(os.Stderr, false))
	if err == nil || !strings.Contains(err.Error(), "version 99") {
		t.Errorf("an old store of another version: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, legacyStateName)); err != nil {
		t.Error("an old store that was not imported was renamed")
	}
}

func reflectEqual(a, b any) bool { return reflect.DeepEqual(a, b) }

func TestStoreOrderIndex(t *testing.T) {
	s := newState()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(id string, sec int) *record {
		return &record{Job: jobs.Job{ID: id, State: jobs.Pending, CreatedAt: t0.Add(time.Duration(sec) * time.Second)}}
	}
	ids := func() string {
		var out []string
		for _, r := range s.ordered() {
			out = append(out, r.ID)
		}
		return strings.Join(out, " ")
	}
	s.add(mk("c", 3))
	s.add(mk("a", 1))
	s.add(mk("d", 3)) // same time: by id
	s.add(mk("b", 2))
	if got := ids(); got != "a b c d" {
		t.Errorf("order %q", got)
	}
	s.remove("b")
	if got := ids(); got != "a c d" {
		t.Errorf("after remove: %q", got)
	}
	s.Jobs["e"] = mk("e", 0) // put in directly, as recovery does
	if got := ids(); got != "e a c d" || s.live["e"] == nil {
		t.Errorf("after a direct insert: %q", got)
	}
}

func TestJobPage(t *testing.T) {
	a := &Agent{st: newState()}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 10 {
		st := jobs.Completed
		if i%3 == 0 {
			st = jobs.Failed
		}
		batch := ""
		if i >= 8 {
			batch = "b1"
		}
		a.st.add(&record{Job: jobs.Job{ID: fmt.Sprintf("j%d", i), State: st, Batch: batch, CreatedAt: t0.Add(time.Duration(i) * time.Minute)}})
	}
	tests := []struct {
		name  string
		f     apitype.Filter
		p     apitype.Page
		want  string
		total int
	}{
		{"everything, newest first", apitype.Filter{}, apitype.Page{}, "j9 j8 j7 j6 j5 j4 j3 j2 j1 j0", 10},
		{"first page", apitype.Filter{}, apitype.Page{Limit: 3}, "j9 j8 j7", 10},
		{"second page", apitype.Filter{}, apitype.Page{Offset: 3, Limit: 3}, "j6 j5 j4", 10},
		{"last page is short", apitype.Filter{}, apitype.Page{Offset: 9, Limit: 3}, "j0", 10},
		{"past the end", apitype.Filter{}, apitype.Page{Offset: 10, Limit: 3}, "", 10},
		{"oldest first", apitype.Filter{}, apitype.Page{Limit: 2, OldestFirst: true}, "j0 j1", 10},
		{"oldest first, offset", apitype.Filter{}, apitype.Page{Offset: 8, OldestFirst: true}, "j8 j9", 10},
		{"state filter counts the matches", apitype.Filter{States: []jobs.State{jobs.Failed}}, apitype.Page{Limit: 2}, "j9 j6", 4},
		{"state filter, second page", apitype.Filter{States: []jobs.State{jobs.Failed}}, apitype.Page{Offset: 2, Limit: 2}, "j3 j0", 4},
		{"batch filter", apitype.Filter{Batch: "b1"}, apitype.Page{}, "j9 j8", 2},
		{"no match", apitype.Filter{States: []jobs.State{jobs.Running}}, apitype.Page{Limit: 5}, "", 0},
		{"negative offset is 0", apitype.Filter{}, apitype.Page{Offset: -4, Limit: 1}, "j9", 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			list, total := a.JobPage(tc.f, tc.p)
			var got []string
			for _, j := range list {
				got = append(got, j.ID)
			}
			if strings.Join(got, " ") != tc.want || total != tc.total || list == nil {
				t.Errorf("JobPage(%+v, %+v) = %v (nil %v), %d; want %q, %d", tc.f, tc.p, got, list == nil, total, tc.want, tc.total)
			}
			// A backend with a plain list pages the same.
			if tc.f.States == nil && tc.f.Batch == "" {
				all := a.Jobs(apitype.Filter{})
				sl, n := tc.p.Slice(all)
				var ids []string
				for _, j := range sl {
					ids = append(ids, j.ID)
				}
				if strings.Join(ids, " ") != tc.want || n != tc.total {
					t.Errorf("Page.Slice = %v, %d", ids, n)
				}
			}
		})
	}
}

// TestRelayLosesNothingInABurst: a subscriber that reads slowly still
// gets every event of a burst larger than the channels, in order, up to
// the backlog limit.
func TestRelayLosesNothingInABurst(t *testing.T) {
	// Past the limit, events are dropped and that is reported once; what
	// was queued comes out complete and in order.
	in := make(chan apitype.Event, 4)
	out := make(chan apitype.Event)
	behind := 0
	go relay(in, out, 3000, func(int) { behind++ })
	for i := range 5000 {
		in <- apitype.Event{Job: jobs.Job{ID: fmt.Sprint(i)}}
	}
	for i := range 3000 {
		if ev := <-out; ev.Job.ID != fmt.Sprint(i) {
			t.Fatalf("event %d is %s", i, ev.Job.ID)
		}
	}
	close(in)
	for range out {
	}
	if behind < 1 {
		t.Error("overflow not reported")
	}

	// Below the limit a slow reader gets everything.
	in, out = make(chan apitype.Event, 4), make(chan apitype.Event)
	go relay(in, out, 1<<16, func(int) { t.Error("overflow below the limit") })
	const burst = 20000
	done := make(chan int)
	go func() {
		n := 0
		for ev := range out {
			if ev.Job.ID != fmt.Sprint(n) {
				t.Errorf("event %d is %s", n, ev.Job.ID)
			}
			n++
			if n%1000 == 0 {
				time.Sleep(time.Millisecond) // a slow reader
			}
			if n == burst {
				done <- n
			}
		}
	}()
	for i := range burst {
		in <- apitype.Event{Job: jobs.Job{ID: fmt.Sprint(i)}}
	}
	if got := <-done; got != burst {
		t.Errorf("delivered %d of %d", got, burst)
	}
	close(in)
}

// TestBurstOfDropsIsSavedInBatches: files dropped at once are claimed
// in a few transactions, not one per claim; every job is announced once,
// and a restart finds them all.
func TestBurstOfDropsIsSavedInBatches(t *testing.T) {
	const n = 1200
	e := newEnv(t, func(c *config.Config) { c.MaxQueued = 100000 })
	e.start()
	events, cancel := e.a.Subscribe()
	defer cancel()
	e.a.mu.Lock()
	writes := e.a.st.writes
	e.a.mu.Unlock()
	tbp := filepath.Join(e.cfg.ManifestWorkflowDir, queue.ToBeProcessed)
	for i := range n {
		name := fmt.Sprintf("burst-%04d.json", i)
		os.WriteFile(filepath.Join(tbp, "."+name), []byte(e.manifest(fmt.Sprintf("burst-%04d", i), "")), 0o644)
	}
	for i := range n {
		name := fmt.Sprintf("burst-%04d.json", i)
		if err := os.Rename(filepath.Join(tbp, "."+name), filepath.Join(tbp, name)); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	deadline := time.After(60 * time.Second)
	for len(seen) < n {
		select {
		case ev := <-events:
			if ev.Kind == apitype.JobNew {
				if seen[ev.Job.ID] {
					t.Fatalf("JobNew twice for %s", ev.Job.ID)
				}
				seen[ev.Job.ID] = true
			}
		case <-deadline:
			t.Fatalf("%d of %d jobs announced", len(seen), n)
		}
	}
	if _, total := e.a.JobPage(apitype.Filter{}, apitype.Page{Limit: 1}); total != n {
		t.Errorf("store has %d jobs, want %d", total, n)
	}
	e.a.mu.Lock()
	writes = e.a.st.writes - writes
	e.a.mu.Unlock()
	// A claim's job is saved once when claimed (in batches) and once
	// when it starts; a handful more for the scans in between.
	if writes > n/2 {
		t.Errorf("%d transactions for %d claims", writes, n)
	} else {
		t.Logf("%d transactions for %d claims", writes, n)
	}
	e.stop()
	e.start()
	if _, total := e.a.JobPage(apitype.Filter{}, apitype.Page{Limit: 1}); total != n {
		t.Errorf("after a restart the store has %d jobs, want %d", total, n)
	}
}

// TestStorePrune: keep_finished forgets settled jobs that finished longer
// ago, and only those; a reload does not bring them back.
func TestStorePrune(t *testing.T) {
	now := time.Now()
	build := func() (*state, string) {
		s, dir := storeWith(t) // done0001 settled, done0002 with an open claim, runs0003 running
		for _, r := range s.Jobs {
			r.FinishedAt = now.Add(-40 * 24 * time.Hour)
		}
		s.add(&record{Job: jobs.Job{ID: "new00004", State: jobs.Completed, CreatedAt: now, FinishedAt: now.Add(-time.Hour)}, Claim: "c.json"})
		if err := s.save(); err != nil {
			t.Fatal(err)
		}
		return s, dir
	}
	for _, tc := range []struct {
		keep time.Duration
		want []string
	}{
		{30 * 24 * time.Hour, []string{"done0002", "new00004", "runs0003"}},
		{time.Minute, []string{"done0002", "runs0003"}},
		{0, []string{"done0001", "done0002", "new00004", "runs0003"}},
	} {
		t.Run(tc.keep.String(), func(t *testing.T) {
			s, dir := build()
			s.prune(now, tc.keep)
			if err := s.save(); err != nil {
				t.Fatal(err)
			}
			for _, st := range []*state{s, openTestStore(t, dir)} {
				var ids []string
				for _, r := range st.ordered() {
					ids = append(ids, r.ID)
				}
				slices.Sort(ids)
				if !slices.Equal(ids, tc.want) {
					t.Errorf("kept %v, want %v", ids, tc.want)
				}
			}
		})
	}
}

// TestOrphanedClaimsAreSavedInBatches: files left in processing/ with no
// job (the agent died between claiming a burst and saving it) become jobs
// at the next start, each announced once and saved a batch at a time, as
// the burst would have been, not one fsynced write per file.
func TestOrphanedClaimsAreSavedInBatches(t *testing.T) {
	const n = 1200
	e := newEnv(t, func(c *config.Config) { c.MaxQueued = 100000 })
	e.start()
	e.stop()
	proc := filepath.Join(e.cfg.ManifestWorkflowDir, queue.Processing)
	for i := range n {
		name := fmt.Sprintf("orphan-%04d.json", i)
		if err := os.WriteFile(filepath.Join(proc, name), []byte(e.manifest(fmt.Sprintf("orphan-%04d", i), "")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e.start()
	e.stop()
	e.a.mu.Lock()
	defer e.a.mu.Unlock()
	names := map[string]int{}
	for _, r := range e.a.st.ordered() {
		names[r.Name]++
	}
	for i := range n {
		if c := names[fmt.Sprintf("orphan-%04d", i)]; c != 1 {
			t.Fatalf("orphan-%04d has %d jobs, want 1", i, c)
		}
	}
	// Two batches of 500, the rest, and a few saves of the start itself.
	if w := e.a.st.writes; w > n/claimBatch+6 {
		t.Errorf("the start wrote the store %d times for %d orphaned files", w, n)
	} else {
		t.Logf("the start wrote the store %d times for %d orphaned files", w, n)
	}
}

// TestStatusTodayCounts: a cancel is no failure: failed_today counts failed
// jobs only, cancelled ones have their own count, and yesterday's none.
func TestStatusTodayCounts(t *testing.T) {
	now := time.Date(2026, 12, 7, 15, 0, 0, 0, time.Local)
	a := &Agent{st: newState(), now: func() time.Time { return now }, started: now}
	for i, c := range []struct {
		state jobs.State
		at    time.Time
	}{
		{jobs.Completed, now}, {jobs.Completed, now}, {jobs.Failed, now},
		{jobs.Cancelled, now}, {jobs.Cancelled, now}, {jobs.Cancelled, now},
		{jobs.Failed, now.AddDate(0, 0, -1)}, {jobs.Running, time.Time{}},
	} {
		a.st.add(&record{Job: jobs.Job{ID: fmt.Sprintf("j%d", i), State: c.state, FinishedAt: c.at, CreatedAt: now}})
	}
	s := a.Status()
	if s.ProcessedToday != 2 || s.FailedToday != 1 || s.CancelledToday != 3 {
		t.Errorf("today: %d processed, %d failed, %d cancelled; want 2, 1, 3", s.ProcessedToday, s.FailedToday, s.CancelledToday)
	}
}

// TestStorePostgres runs the store on a real PostgreSQL (a throwaway
// cluster): River's migrations, a save, a reload, the host marks that
// keep two hosts' claims apart, and an old store imported once.
func TestStorePostgres(t *testing.T) {
	pg := pgcluster.Start(t)
	dir := t.TempDir()
	open := func(host string) *state {
		t.Helper()
		s, err := openStore(pg.URL, host, dir, NewLogger(os.Stderr, false))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.db.close)
		return s
	}
	writeLegacy(t, dir, map[string]*record{"old00001": {Job: jobs.Job{ID: "old00001", State: jobs.Completed, CreatedAt: time.Now()}, Claim: "o.json"}}, nil)
	a := open("host-a")
	if a.Jobs["old00001"] == nil {
		t.Fatalf("the old store was not imported: %v", a.Jobs)
	}
	now := time.Now()
	a.add(&record{Job: jobs.Job{ID: "runs0002", State: jobs.Running, CreatedAt: now, StartedAt: now, Priority: 3, Host: "host-a"}, Claim: "x.json", Attempt: 1})
	a.add(&record{Job: jobs.Job{ID: "pend0003", State: jobs.Pending, CreatedAt: now, Host: "host-a"}, Claim: "x.json"})
	a.putClaim(&claim{Name: "x.json", Jobs: []string{"runs0002", "pend0003"}})
	if err := a.save(); err != nil {
		t.Fatal(err)
	}
	b := open("host-b")
	b.add(&record{Job: jobs.Job{ID: "pend0004", State: jobs.Pending, CreatedAt: now, Host: "host-b"}, Claim: "x.json"})
	b.putClaim(&claim{Name: "x.json", Jobs: []string{"pend0004"}})
	if err := b.save(); err != nil {
		t.Fatal(err)
	}
	sameStore(t, open("host-a"), a)
	sameStore(t, open("host-b"), b)
	got := pg.SQL(t, `SELECT metadata->>'host' || ' ' || (args->>'id') || ' ' || state FROM river_job ORDER BY args->>'id'`)
	want := "host-a old00001 completed\nhost-a pend0003 available\nhost-b pend0004 available\nhost-a runs0002 running\n"
	if got != want {
		t.Errorf("river_job holds\n%s\nwant\n%s", got, want)
	}
	if v := pg.SQL(t, `SELECT count(*) FROM river_migration`); strings.TrimSpace(v) == "0" {
		t.Error("no River migration recorded")
	}
}

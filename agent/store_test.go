package agent

import (
	"bytes"
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
)

func storeWith(t *testing.T) (*state, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.json")
	s := newState()
	now := time.Now()
	add := func(id string, st jobs.State, claim string) {
		s.add(&record{Job: jobs.Job{ID: id, Name: "vm-" + id, State: st, CreatedAt: now, FinishedAt: now}, Claim: claim})
	}
	add("done0001", jobs.Completed, "a.json") // settled: archived
	add("done0002", jobs.Failed, "b.json")    // its claim is open: stays live
	add("runs0003", jobs.Running, "b.json")
	s.Claims["b.json"] = &claim{Name: "b.json", Jobs: []string{"done0002", "runs0003"}}
	return s, path
}

// sameStore compares what two stores hold, as a reload sees it.
func sameStore(t *testing.T, got, want *state) {
	t.Helper()
	if len(got.Jobs) != len(want.Jobs) || len(got.Claims) != len(want.Claims) {
		t.Fatalf("reloaded %d jobs and %d claims, want %d and %d", len(got.Jobs), len(got.Claims), len(want.Jobs), len(want.Claims))
	}
	for id, r := range want.Jobs {
		if g := got.Jobs[id]; g == nil || !sameRecord(g, r) {
			t.Errorf("job %s reloaded as %+v, want %+v", id, g, r)
		}
	}
	for name, c := range want.Claims {
		if g := got.Claims[name]; g == nil || !sameClaim(g, c) {
			t.Errorf("claim %s reloaded as %+v, want %+v", name, g, c)
		}
	}
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
	if len(got.Jobs) != 3 || len(got.archived) != 3 || len(got.live) != 0 || got.Jobs["runs0003"].State != jobs.Completed || len(got.Claims) != 0 {
		t.Errorf("reloaded %d jobs, %d archived, %d live, claims %v: %+v", len(got.Jobs), len(got.archived), len(got.live), got.Claims, got.Jobs)
	}
}

func TestStoreHistoryCrashCases(t *testing.T) {
	s, path := storeWith(t)
	if err := s.save(path); err != nil {
		t.Fatal(err)
	}
	// A crash while appending leaves a cut line; a crash between the
	// append and recording the move leaves the job in both.
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
	// Before the history, state.json (version 1) held every job.
	path := filepath.Join(t.TempDir(), "state.json")
	os.WriteFile(path, []byte(`{"version":1,"jobs":{"old00001":{"id":"old00001","state":"completed","claim":"x.json"},`+
		`"old00002":{"id":"old00002","state":"pending","claim":"y.json"}},"claims":{"y.json":{"name":"y.json","jobs":["old00002"]}}}`), 0o600)
	s, err := loadState(path)
	if err != nil || s.Jobs["old00001"] == nil {
		t.Fatalf("%v %+v", err, s)
	}
	if err := s.compact(path); err != nil { // what the agent does at start
		t.Fatal(err)
	}
	live, _ := os.ReadFile(path)
	hist, _ := os.ReadFile(historyPath(path))
	if bytes.Contains(live, []byte("old00001")) || !bytes.Contains(hist, []byte("old00001")) || !bytes.Contains(live, []byte("old00002")) {
		t.Errorf("old finished job not moved to the history:\nstate %s\nhistory %s", live, hist)
	}
	if !bytes.Contains(live, []byte(`"version":2`)) {
		t.Errorf("state.json not rewritten as version 2: %s", live)
	}
}

// TestStoreSaveWritesWhatChanged: with many pending jobs live, a save
// appends the changed records only, and a reload gives what was saved.
func TestStoreSaveWritesWhatChanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s := newState()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	vm := json.RawMessage(`{"version":"1.0","name":"vm","pipeline":{"load":{"source_type":"raw","source_path":"/srv/vm.raw"}}}`)
	addPending := func(i int) *record {
		id := fmt.Sprintf("%08x", i)
		r := &record{Job: jobs.Job{ID: id, Name: "vm-" + id, State: jobs.Pending, CreatedAt: t0.Add(time.Duration(i) * time.Millisecond)},
			Claim: id + ".json", VM: vm}
		s.add(r)
		s.Claims[id+".json"] = &claim{Name: id + ".json", Original: id + ".json", Kind: kindManifest, Jobs: []string{id}}
		return r
	}
	for i := range 2000 {
		addPending(i)
	}
	if err := s.save(path); err != nil {
		t.Fatal(err)
	}
	snap, _ := os.Stat(path)
	size := func(p string) int64 {
		fi, err := os.Stat(p)
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	steps := []struct {
		name  string
		do    func()
		lines int // lines appended to changes.jsonl (a header comes with the first)
	}{
		{"nothing changed", func() {}, 0},
		{"one job starts", func() { s.Jobs["00000007"].State = jobs.Running; s.Jobs["00000007"].Attempt = 1 }, 2},
		{"progress, not saved by itself", func() { s.Jobs["00000007"].Progress = 40 }, 1},
		{"one new claim with a job", func() { addPending(5000) }, 2},
		{"a claim settles, its job is archived", func() {
			r := s.Jobs["00000003"]
			r.State, r.FinishedAt = jobs.Cancelled, t0
			delete(s.Claims, r.Claim)
		}, 2},
		{"a job's outputs change", func() { s.Jobs["00000007"].Outputs = []string{"/out/a.qcow2"} }, 1},
		{"a claim gets its target", func() {
			s.Claims["00000008.json"].Target = &queue.Target{Dir: "/q/failed/2026-01-02", Name: "00000008.json", Suffix: queue.ErrorSuffix}
		}, 1},
	}
	for _, st := range steps {
		before := size(changesPath(path))
		st.do()
		if err := s.save(path); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(changesPath(path))
		appended := data[before:]
		if n := bytes.Count(appended, []byte("\n")); n != st.lines {
			t.Errorf("%s: appended %d lines, want %d:\n%s", st.name, n, st.lines, appended)
		}
		if len(appended) > 2048 {
			t.Errorf("%s: appended %d bytes for one change", st.name, len(appended))
		}
		if fi, _ := os.Stat(path); !fi.ModTime().Equal(snap.ModTime()) || fi.Size() != snap.Size() {
			t.Errorf("%s: state.json rewritten", st.name)
		}
		got, err := loadState(path)
		if err != nil {
			t.Fatal(err)
		}
		sameStore(t, got, s)
	}
}

// TestStoreSnapshotsWhenTheLogOutgrowsIt: many changes to few live jobs
// fold into a new snapshot, and the log starts again.
func TestStoreSnapshotsWhenTheLogOutgrowsIt(t *testing.T) {
	s, path := storeWith(t)
	if err := s.save(path); err != nil {
		t.Fatal(err)
	}
	r := s.Jobs["runs0003"]
	snapshots := 0
	gen := s.Generation
	for i := range 3000 {
		r.Progress = i % 100
		r.StatusText = fmt.Sprintf("convert %d%%", i)
		if err := s.save(path); err != nil {
			t.Fatal(err)
		}
		if s.Generation != gen {
			snapshots++
			gen = s.Generation
		}
	}
	if snapshots < 1 || snapshots > 3 {
		t.Errorf("%d snapshots for 3000 changes of 2 live jobs", snapshots)
	}
	if n := s.logLines; n > 2*len(s.live)+2*len(s.Claims)+1024 {
		t.Errorf("log has %d lines after a snapshot", n)
	}
	got, err := loadState(path)
	if err != nil {
		t.Fatal(err)
	}
	sameStore(t, got, s)
}

func TestStoreChangesCrashCases(t *testing.T) {
	setup := func(t *testing.T) (*state, string) {
		s, path := storeWith(t)
		if err := s.save(path); err != nil { // snapshot, generation 1
			t.Fatal(err)
		}
		s.Jobs["runs0003"].Progress = 50
		if err := s.save(path); err != nil { // appended
			t.Fatal(err)
		}
		if _, err := os.Stat(changesPath(path)); err != nil {
			t.Fatal("no changes log after a small change")
		}
		return s, path
	}
	tests := []struct {
		name     string
		damage   func(t *testing.T, path string)
		progress int // runs0003's, after reload
	}{
		{"intact", func(*testing.T, string) {}, 50},
		{"cut last line", func(t *testing.T, path string) {
			f, _ := os.OpenFile(changesPath(path), os.O_APPEND|os.O_WRONLY, 0)
			f.WriteString(`{"job":{"id":"runs0003","progress":9`)
			f.Close()
		}, 50},
		{"stale log of an older snapshot", func(t *testing.T, path string) {
			data, _ := os.ReadFile(changesPath(path))
			data = bytes.Replace(data, []byte(`{"generation":1}`), []byte(`{"generation":0}`), 1)
			os.WriteFile(changesPath(path), data, 0o600)
		}, 0},
		{"log without a header", func(t *testing.T, path string) {
			data, _ := os.ReadFile(changesPath(path))
			_, rest, _ := bytes.Cut(data, []byte("\n"))
			os.WriteFile(changesPath(path), rest, 0o600)
		}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, path := setup(t)
			tc.damage(t, path)
			got, err := loadState(path)
			if err != nil {
				t.Fatalf("damage must not make the store unreadable: %v", err)
			}
			if r := got.Jobs["runs0003"]; r == nil || r.Progress != tc.progress {
				t.Fatalf("runs0003 = %+v, want progress %d", r, tc.progress)
			}
			// The next save folds the log into a snapshot and removes it,
			// so that no append follows a damaged line.
			if err := got.compact(path); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(changesPath(path)); err == nil {
				t.Error("changes log kept after the start's snapshot")
			}
			got.Jobs["runs0003"].Progress = 77
			if err := got.save(path); err != nil {
				t.Fatal(err)
			}
			again, err := loadState(path)
			if err != nil {
				t.Fatal(err)
			}
			sameStore(t, again, got)
		})
	}
}

// TestSameRecordSeesEveryField: a field added to record, jobs.Job or claim
// but not to sameRecord/sameClaim would never be saved by itself.
func TestSameRecordSeesEveryField(t *testing.T) {
	check := func(t *testing.T, v any, same func(a, b any) bool) {
		var fields func(typ reflect.Type, path []int)
		fields = func(typ reflect.Type, path []int) {
			for i := range typ.NumField() {
				f := typ.Field(i)
				p := append(slices.Clone(path), i)
				if f.Anonymous {
					fields(f.Type, p)
					continue
				}
				if !f.IsExported() {
					continue
				}
				a := reflect.New(reflect.TypeOf(v).Elem())
				b := reflect.New(reflect.TypeOf(v).Elem())
				fv := b.Elem().FieldByIndex(p)
				switch fv.Kind() {
				case reflect.String:
					fv.SetString("x")
				case reflect.Int, reflect.Int64:
					fv.SetInt(7)
				case reflect.Bool:
					fv.SetBool(true)
				case reflect.Slice:
					fv.Set(reflect.MakeSlice(fv.Type(), 1, 1))
				case reflect.Pointer:
					fv.Set(reflect.New(fv.Type().Elem()))
				case reflect.Struct:
					if fv.Type() != reflect.TypeOf(time.Time{}) {
						t.Fatalf("%s: no test value for %s", f.Name, fv.Type())
					}
					fv.Set(reflect.ValueOf(time.Unix(1, 0)))
				default:
					t.Fatalf("%s: no test value for kind %s", f.Name, fv.Kind())
				}
				if same(a.Interface(), b.Interface()) {
					t.Errorf("a change of %s is not seen", f.Name)
				}
			}
		}
		fields(reflect.TypeOf(v).Elem(), nil)
	}
	check(t, &record{}, func(a, b any) bool { return sameRecord(a.(*record), b.(*record)) })
	check(t, &claim{}, func(a, b any) bool { return sameClaim(a.(*claim), b.(*claim)) })
}

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
// with appends to the changes log, not a rewrite of state.json per
// claim; every job is announced once, and a restart finds them all.
func TestBurstOfDropsIsSavedInBatches(t *testing.T) {
	const n = 1200
	e := newEnv(t, func(c *config.Config) { c.MaxQueued = 100000 })
	e.start()
	events, cancel := e.a.Subscribe()
	defer cancel()
	snap, err := os.Stat(filepath.Join(e.cfg.StateDir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
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
	fi, err := os.Stat(filepath.Join(e.cfg.StateDir, "state.json"))
	if err != nil || fi.Size() != snap.Size() || !fi.ModTime().Equal(snap.ModTime()) {
		t.Errorf("state.json was rewritten during the burst (%d bytes, was %d)", fi.Size(), snap.Size())
	}
	log, _ := os.ReadFile(filepath.Join(e.cfg.StateDir, changesName))
	if lines := bytes.Count(log, []byte("\n")); lines < 2*n || lines > 2*n+100 {
		t.Errorf("changes log has %d lines for %d claims", lines, n)
	}
	e.stop()
	e.start()
	if _, total := e.a.JobPage(apitype.Filter{}, apitype.Page{Limit: 1}); total != n {
		t.Errorf("after a restart the store has %d jobs, want %d", total, n)
	}
	if fi, err := os.Stat(filepath.Join(e.cfg.StateDir, "state.json")); err != nil || fi.Size() < n*100 {
		t.Errorf("the start did not fold the changes log into state.json (%d bytes)", fi.Size())
	}
}

// TestStorePrune: keep_finished forgets settled jobs that finished longer
// ago, and only those; a reload after compacting does not bring them back.
func TestStorePrune(t *testing.T) {
	now := time.Now()
	build := func() (*state, string) {
		s, path := storeWith(t) // done0001 settled, done0002 with an open claim, runs0003 running
		for _, r := range s.Jobs {
			r.FinishedAt = now.Add(-40 * 24 * time.Hour)
		}
		s.add(&record{Job: jobs.Job{ID: "new00004", State: jobs.Completed, CreatedAt: now, FinishedAt: now.Add(-time.Hour)}, Claim: "c.json"})
		if err := s.save(path); err != nil {
			t.Fatal(err)
		}
		return s, path
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
			s, path := build()
			s.prune(now, tc.keep)
			if err := s.compact(path); err != nil {
				t.Fatal(err)
			}
			for _, st := range []*state{s, mustLoad(t, path)} {
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

func mustLoad(t *testing.T, path string) *state {
	t.Helper()
	s, err := loadState(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
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

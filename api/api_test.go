package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/api"
	"github.com/hyper2kvm/hyper2kvm/api/apitest"
	"github.com/hyper2kvm/hyper2kvm/dbusapi"
)

const token = "s3cret-token"

func TestMain(m *testing.M) {
	// The bridge logs every 5xx; the error cases here would drown the output.
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	os.Exit(m.Run())
}

const goodManifest = `{"version":"1.0","name":"web01","pipeline":{"load":{"source_type":"vmdk","source_path":"/data/web01.vmdk"}}}`

type env struct {
	fake *apitest.Fake
	srv  *httptest.Server
	api  *api.Server
}

func newEnv(t *testing.T, mod func(*api.Config)) *env {
	t.Helper()
	e := &env{fake: apitest.New()}
	cfg := api.Config{
		Client: e.fake, Token: token, Schema: []byte(`{"$schema":"https://json-schema.org/draft/2020-12/schema","title":"hyper2kvm manifest"}`),
		Version: "test", MaxBody: 4096, WorkflowDir: "/wf",
	}
	if mod != nil {
		mod(&cfg)
	}
	e.api = api.New(cfg)
	e.srv = httptest.NewUnstartedServer(e.api)
	e.srv.Config.ConnContext = api.ConnContext
	e.srv.Start()
	t.Cleanup(e.srv.Close)
	return e
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(a.body, &m); err != nil {
		t.Fatalf("answer is not a JSON object: %v\n%s", err, a.body)
	}
	return m
}

// errCode returns error.code of an error answer, checking its shape.
func (a answer) errCode(t *testing.T) string {
	t.Helper()
	m := a.json(t)
	e, ok := m["error"].(map[string]any)
	if !ok {
		t.Fatalf("no error object in %s", a.body)
	}
	for _, k := range []string{"code", "message", "details"} {
		if _, ok := e[k]; !ok {
			t.Fatalf("error has no %q: %s", k, a.body)
		}
	}
	if msg, _ := e["message"].(string); msg == "" {
		t.Fatalf("empty error message: %s", a.body)
	}
	return e["code"].(string)
}

func (e *env) do(t *testing.T, method, path, body, tok string) answer {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b}
}

func TestStatusHasTheOriginalFields(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.Set(jobs.Job{ID: "a", Name: "a", State: jobs.Pending})
	e.fake.Set(jobs.Job{ID: "b", Name: "b", State: jobs.Running, StartedAt: time.Now()})
	e.fake.Set(jobs.Job{ID: "c", Name: "c", State: jobs.Completed, FinishedAt: time.Now()})
	a := e.do(t, "GET", "/api/workflow/status", "", "")
	if a.status != 200 {
		t.Fatalf("status %d: %s", a.status, a.body)
	}
	m := a.json(t)
	for _, k := range []string{"mode", "running", "queue_depth", "active_jobs", "processed_today", "failed_today", "max_workers", "uptime_seconds", "version"} {
		if _, ok := m[k]; !ok {
			t.Errorf("status has no %q: %s", k, a.body)
		}
	}
	if m["mode"] != "manifest" || m["queue_depth"] != 1.0 || m["active_jobs"] != 1.0 || m["processed_today"] != 1.0 {
		t.Errorf("status values do not match the jobs: %s", a.body)
	}
}

// TestListJobsPaging: ?limit= and ?offset= page the list, newest first by
// default, 100 jobs when no limit is given, limit=0 for all; total is
// always the number of matching jobs.
func TestListJobsPaging(t *testing.T) {
	e := newEnv(t, nil)
	for i := range 250 {
		st := jobs.Completed
		if i%5 == 0 {
			st = jobs.Failed
		}
		e.fake.Set(jobs.Job{ID: fmt.Sprintf("j%03d", i), Name: "vm", State: st})
	}
	tests := []struct {
		query        string
		first, last  string
		n, total     int
		limit, offst int
	}{
		{"", "j249", "j150", 100, 250, 100, 0},
		{"?limit=10", "j249", "j240", 10, 250, 10, 0},
		{"?limit=10&offset=10", "j239", "j230", 10, 250, 10, 10},
		{"?limit=10&offset=245", "j004", "j000", 5, 250, 10, 245},
		{"?offset=300", "", "", 0, 250, 100, 300},
		{"?limit=0", "j249", "j000", 250, 250, 0, 0},
		{"?limit=3&order=oldest", "j000", "j002", 3, 250, 3, 0},
		{"?status=failed&limit=2&offset=1", "j240", "j235", 2, 50, 2, 1},
	}
	for _, tt := range tests {
		a := e.do(t, "GET", "/api/workflow/jobs"+tt.query, "", "")
		if a.status != 200 {
			t.Fatalf("%s: status %d: %s", tt.query, a.status, a.body)
		}
		var list struct {
			Jobs          []api.Job
			Total         int
			Limit, Offset int
		}
		if err := json.Unmarshal(a.body, &list); err != nil {
			t.Fatal(err)
		}
		first, last := "", ""
		if len(list.Jobs) > 0 {
			first, last = list.Jobs[0].ID, list.Jobs[len(list.Jobs)-1].ID
		}
		if first != tt.first || last != tt.last || len(list.Jobs) != tt.n || list.Total != tt.total || list.Limit != tt.limit || list.Offset != tt.offst {
			t.Errorf("%s: %s..%s (%d), total %d, limit %d, offset %d; want %s..%s (%d), total %d, limit %d, offset %d", tt.query,
				first, last, len(list.Jobs), list.Total, list.Limit, list.Offset, tt.first, tt.last, tt.n, tt.total, tt.limit, tt.offst)
		}
	}
	for _, q := range []string{"?limit=-1", "?limit=ten", "?offset=1.5", "?order=random"} {
		a := e.do(t, "GET", "/api/workflow/jobs"+q, "", "")
		if a.status != 400 || !strings.Contains(string(a.body), "InvalidArgs") && !strings.Contains(string(a.body), "cannot use") {
			t.Errorf("%s: status %d: %s", q, a.status, a.body)
		}
	}
}

func TestListJobsFilters(t *testing.T) {
	e := newEnv(t, nil)
	start := time.Now().Add(-90 * time.Second)
	e.fake.Set(jobs.Job{ID: "p1", Name: "pend", State: jobs.Pending, Progress: 0})
	e.fake.Set(jobs.Job{ID: "r1", Name: "run", State: jobs.Running, Stage: "convert", Progress: 42, StartedAt: start})
	e.fake.Set(jobs.Job{ID: "r2", Name: "run2", Batch: "b1", State: jobs.Running, Stage: "inspect", Progress: jobs.ProgressUnknown, StartedAt: start})
	e.fake.Set(jobs.Job{ID: "c1", Name: "done", Batch: "b1", State: jobs.Completed, StartedAt: start, FinishedAt: start.Add(30 * time.Second), Outputs: []string{"/out/done.qcow2"}})
	e.fake.Set(jobs.Job{ID: "f1", Name: "bad", State: jobs.Failed, Error: "cannot convert: disk full", ErrorStage: "convert", StartedAt: start, FinishedAt: start.Add(5 * time.Second)})
	e.fake.Set(jobs.Job{ID: "x1", Name: "gone", State: jobs.Cancelled})

	tests := []struct {
		query string
		want  []string
	}{
		// newest first
		{"", []string{"x1", "f1", "c1", "r2", "r1", "p1"}},
		{"?status=pending", []string{"p1"}},
		{"?status=processing", []string{"r2", "r1"}},
		{"?status=active", []string{"r2", "r1"}},
		{"?status=running", []string{"r2", "r1"}},
		{"?status=completed", []string{"c1"}},
		{"?status=failed", []string{"f1"}},
		{"?status=failed,cancelled", []string{"x1", "f1"}},
		{"?status=finished", []string{"x1", "f1", "c1"}},
		{"?batch=b1", []string{"c1", "r2"}},
		{"?status=completed&batch=b1", []string{"c1"}},
		{"?order=oldest", []string{"p1", "r1", "r2", "c1", "f1", "x1"}},
	}
	for _, tt := range tests {
		a := e.do(t, "GET", "/api/workflow/jobs"+tt.query, "", "")
		if a.status != 200 {
			t.Fatalf("%s: status %d: %s", tt.query, a.status, a.body)
		}
		var list struct {
			Jobs  []map[string]any `json:"jobs"`
			Total int              `json:"total"`
		}
		if err := json.Unmarshal(a.body, &list); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, j := range list.Jobs {
			got = append(got, j["id"].(string))
			for _, k := range []string{"id", "name", "stage", "progress", "started_at", "elapsed_seconds", "status", "outputs", "unit"} {
				if _, ok := j[k]; !ok {
					t.Errorf("%s: job %v has no %q", tt.query, j["id"], k)
				}
			}
		}
		if !slices.Equal(got, tt.want) || list.Total != len(tt.want) {
			t.Errorf("%s: got %v (total %d), want %v", tt.query, got, list.Total, tt.want)
		}
	}

	a := e.do(t, "GET", "/api/workflow/jobs/active", "", "")
	var active struct{ Jobs []api.Job }
	json.Unmarshal(a.body, &active)
	if len(active.Jobs) != 2 || active.Jobs[0].ID != "r2" {
		t.Fatalf("active: %s", a.body)
	}
	r1, r2 := active.Jobs[1], active.Jobs[0]
	if r1.Progress == nil || *r1.Progress != 42 || r1.Stage != "convert" || r1.Status != jobs.Running {
		t.Errorf("r1 = %+v", r1)
	}
	if r2.Progress != nil {
		t.Errorf("unknown progress should be null, got %d", *r2.Progress)
	}
	if r1.ElapsedSeconds < 90 {
		t.Errorf("elapsed_seconds of a job started 90s ago = %v", r1.ElapsedSeconds)
	}
	if r1.Unit != "hyper2kvm-job-r1.service" {
		t.Errorf("unit = %q", r1.Unit)
	}

	a = e.do(t, "GET", "/api/workflow/jobs/f1", "", token)
	var f1 api.Job
	json.Unmarshal(a.body, &f1)
	if a.status != 200 || f1.Error != "cannot convert: disk full" || f1.ErrorStage != "convert" || f1.ElapsedSeconds != 5 || f1.FinishedAt == nil {
		t.Errorf("failed job: %d %s", a.status, a.body)
	}

	a = e.do(t, "GET", "/api/workflow/jobs?status=bogus", "", "")
	if a.status != 400 || a.errCode(t) != "invalid-args" {
		t.Errorf("bad status filter: %d %s", a.status, a.body)
	}
}

func TestJobNotFound(t *testing.T) {
	e := newEnv(t, nil)
	for _, p := range []string{"/api/workflow/jobs/nope", "/api/workflow/jobs/nope/log", "/api/workflow/jobs/-rf/log", "/api/workflow/jobs/..%2F..%2Fetc"} {
		a := e.do(t, "GET", p, "", token)
		if a.status != 404 {
			t.Errorf("GET %s: status %d, want 404: %s", p, a.status, a.body)
			continue
		}
		if c := a.errCode(t); c != "no-such-job" && c != "not-found" {
			t.Errorf("GET %s: code %s", p, c)
		}
	}
	for _, p := range []string{"/api/workflow/jobs/nope/cancel", "/api/workflow/jobs/nope/retry"} {
		a := e.do(t, "POST", p, "", token)
		if a.status != 404 || a.errCode(t) != "no-such-job" {
			t.Errorf("POST %s: %d %s", p, a.status, a.body)
		}
	}
}

func TestSubmit(t *testing.T) {
	e := newEnv(t, nil)
	a := e.do(t, "POST", "/api/workflow/manifest/submit", goodManifest, token)
	if a.status != 202 {
		t.Fatalf("submit: %d %s", a.status, a.body)
	}
	m := a.json(t)
	if m["success"] != true || m["job_id"] == "" || m["manifest_path"] != "/wf/to_be_processed/web01.json" {
		t.Errorf("submit answer: %s", a.body)
	}
	if ids, _ := m["job_ids"].([]any); len(ids) != 1 || ids[0] != m["job_id"] {
		t.Errorf("job_ids: %s", a.body)
	}
	if loc := a.header.Get("Location"); loc != "/api/workflow/jobs/"+m["job_id"].(string) {
		t.Errorf("Location = %q", loc)
	}
	if got := e.fake.Submitted(); len(got) != 1 || string(got[0]) != goodManifest {
		t.Errorf("agent got %q", got)
	}
	// the new job is there
	if a := e.do(t, "GET", "/api/workflow/jobs/"+m["job_id"].(string), "", token); a.status != 200 {
		t.Errorf("new job: %d %s", a.status, a.body)
	}

	// YAML is a manifest too
	y := "version: \"1.0\"\nname: db01\npipeline:\n  load:\n    source_type: raw\n    source_path: /data/db01.img\n"
	if a := e.do(t, "POST", "/api/workflow/manifest/submit", y, token); a.status != 202 {
		t.Errorf("YAML submit: %d %s", a.status, a.body)
	}
	// batch: one job per VM
	batch := `{"version":"1.0","batch":true,"vms":[{"name":"a","pipeline":{"load":{"source_type":"raw","source_path":"/a.img"}}},{"name":"b","pipeline":{"load":{"source_type":"raw","source_path":"/b.img"}}}]}`
	a = e.do(t, "POST", "/api/workflow/manifest/submit", batch, token)
	if ids, _ := a.json(t)["job_ids"].([]any); a.status != 202 || len(ids) != 2 || a.json(t)["batch"] == nil {
		t.Errorf("batch submit: %d %s", a.status, a.body)
	}
}

func TestSubmitErrors(t *testing.T) {
	e := newEnv(t, nil)
	big := `{"version":"1.0","name":"x","pad":"` + strings.Repeat("x", 5000) + `"}`
	tests := []struct {
		name, body, tok string
		status          int
		code            string
	}{
		{"no token", goodManifest, "", 401, "unauthorized"},
		{"wrong token", goodManifest, "nope", 401, "unauthorized"},
		{"token prefix", goodManifest, token[:5], 401, "unauthorized"},
		{"broken JSON", `{"version":"1.0",`, token, 400, "bad-request"},
		{"broken YAML", "version: [1.0\nname: x: y", token, 400, "bad-request"},
		{"not an object", `[1,2]`, token, 400, "bad-request"},
		{"empty", ``, token, 400, "bad-request"},
		{"invalid manifest", `{"version":"1.0","name":"x","pipeline":{"load":{"source_type":"vmdk"}}}`, token, 422, "invalid-manifest"},
		{"too large", big, token, 413, "body-too-large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.do(t, "POST", "/api/workflow/manifest/submit", tt.body, tt.tok)
			if a.status != tt.status || a.errCode(t) != tt.code {
				t.Fatalf("got %d %s, want %d %s", a.status, a.body, tt.status, tt.code)
			}
			if tt.status == 401 && a.header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if tt.status == 422 {
				m := a.json(t)
				d := m["error"].(map[string]any)["details"].([]any)
				if len(d) != 1 || d[0] != "pipeline.load.source_path: is required" {
					t.Errorf("details = %v", d)
				}
				p := m["problems"].([]any)[0].(map[string]any)
				if p["path"] != "pipeline.load.source_path" || p["message"] != "is required" {
					t.Errorf("problems = %v", m["problems"])
				}
			}
		})
	}
	if n := len(e.fake.Submitted()); n != 0 {
		t.Errorf("the agent got %d manifests from refused requests", n)
	}
}

func TestBodyLimitWithoutContentLength(t *testing.T) {
	e := newEnv(t, nil)
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte(`{"version":"1.0","name":"`))
		for range 100 {
			pw.Write([]byte(strings.Repeat("y", 100)))
		}
		pw.Write([]byte(`"}`))
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", e.srv.URL+"/api/workflow/manifest/validate", pr)
	req.ContentLength = -1 // chunked: the limit must hold while reading
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 413 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
}

func TestNoTokenFileRefusesWrites(t *testing.T) {
	e := newEnv(t, func(c *api.Config) { c.Token = "" })
	for _, tok := range []string{"", "anything"} {
		a := e.do(t, "POST", "/api/workflow/manifest/submit", goodManifest, tok)
		if a.status != 403 || a.errCode(t) != "forbidden" {
			t.Errorf("token %q: %d %s", tok, a.status, a.body)
		}
	}
	if a := e.do(t, "GET", "/api/workflow/status", "", ""); a.status != 200 {
		t.Errorf("reads must still work: %d %s", a.status, a.body)
	}
}

func TestValidate(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		name, body string
		status     int
		valid      bool
		errors     []string
	}{
		{"valid", goodManifest, 200, true, []string{}},
		{"invalid", `{"version":"2.0","name":"x","pipeline":{"load":{"source_type":"ami","source_path":"rel"}}}`, 200, false, []string{
			`version: must be "1.0", not "2.0"`,
			"pipeline.load.source_type: must be one of vmdk, ova, ovf, vhd, vhdx, raw, qcow2",
			"pipeline.load.source_path: must be an absolute path",
		}},
		{"broken", `{"version":`, 400, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// validation needs no token: it changes nothing
			a := e.do(t, "POST", "/api/workflow/manifest/validate", tt.body, "")
			if a.status != tt.status {
				t.Fatalf("status %d: %s", a.status, a.body)
			}
			if tt.status != 200 {
				if a.errCode(t) != "bad-request" {
					t.Errorf("code: %s", a.body)
				}
				return
			}
			var v struct {
				Valid    bool
				Errors   []string
				Problems []api.Problem
			}
			json.Unmarshal(a.body, &v)
			if v.Valid != tt.valid || !slices.Equal(v.Errors, tt.errors) || len(v.Problems) != len(tt.errors) {
				t.Errorf("got %s", a.body)
			}
			if !tt.valid && v.Problems[0].Path != "version" {
				t.Errorf("problem path: %+v", v.Problems[0])
			}
		})
	}
}

func TestCancelAndRetry(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.Set(jobs.Job{ID: "run", Name: "run", State: jobs.Running})
	e.fake.Set(jobs.Job{ID: "done", Name: "done", State: jobs.Completed})

	if a := e.do(t, "POST", "/api/workflow/jobs/run/cancel", "", ""); a.status != 401 {
		t.Errorf("cancel without token: %d %s", a.status, a.body)
	}
	a := e.do(t, "POST", "/api/workflow/jobs/run/cancel", "", token)
	if a.status != 202 || a.json(t)["success"] != true {
		t.Fatalf("cancel: %d %s", a.status, a.body)
	}
	if j := a.json(t)["job"].(map[string]any); j["status"] != "cancelled" {
		t.Errorf("cancelled job: %v", j)
	}
	if a := e.do(t, "POST", "/api/workflow/jobs/done/cancel", "", token); a.status != 409 || a.errCode(t) != "invalid-state" {
		t.Errorf("cancel of a finished job: %d %s", a.status, a.body)
	}
	if a := e.do(t, "POST", "/api/workflow/jobs/done/retry", "", token); a.status != 409 || a.errCode(t) != "invalid-state" {
		t.Errorf("retry of a completed job: %d %s", a.status, a.body)
	}
	if a := e.do(t, "POST", "/api/workflow/jobs/run/retry", "", ""); a.status != 401 {
		t.Errorf("retry without token: %d %s", a.status, a.body)
	}
	a = e.do(t, "POST", "/api/workflow/jobs/run/retry", "", token)
	if a.status != 202 {
		t.Fatalf("retry: %d %s", a.status, a.body)
	}
	m := a.json(t)
	if m["job_id"] == "run" || m["job_id"] == "" || m["job"].(map[string]any)["status"] != "pending" {
		t.Errorf("retry answer: %s", a.body)
	}
}

func TestJobLog(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.Set(jobs.Job{ID: "j1", Name: "j1", State: jobs.Completed})
	e.fake.SetLog("short", []string{"2026-01-01T10:00:00+0000 box hyper2kvmd[12]: convert 42%"}, nil)
	e.fake.SetLog("json", []string{`{"__REALTIME_TIMESTAMP":"1767261600000000","PRIORITY":"6","SYSLOG_IDENTIFIER":"hyper2kvmd","_PID":"12","MESSAGE":"convert 42%"}`,
		`{"__REALTIME_TIMESTAMP":"1767261601000000","PRIORITY":"3","MESSAGE":[104,105,255]}`}, nil)
	a := e.do(t, "GET", "/api/workflow/jobs/j1/log", "", token)
	if a.status != 200 || !strings.HasPrefix(a.header.Get("Content-Type"), "text/plain") || !strings.Contains(string(a.body), "convert 42%") ||
		a.header.Get("Journal-Cursor") != "end" {
		t.Fatalf("short log: %d %v %s", a.status, a.header, a.body)
	}
	a = e.do(t, "GET", "/api/workflow/jobs/j1/log?format=json&lines=10", "", token)
	var l struct {
		JobID, Unit, Cursor string
		Entries             []api.LogEntry
	}
	if err := json.Unmarshal(a.body, &l); err != nil || a.status != 200 {
		t.Fatalf("json log: %d %s", a.status, a.body)
	}
	if l.Unit != "hyper2kvm-job-j1.service" || len(l.Entries) != 2 || l.Entries[0].Message != "convert 42%" ||
		l.Entries[0].Priority != 6 || l.Entries[1].Message != "hi\ufffd" || l.Entries[1].Priority != 3 ||
		!l.Entries[0].Time.Equal(time.Unix(1767261600, 0)) || l.Cursor != "end" {
		t.Errorf("entries: %+v", l)
	}
	if a := e.do(t, "GET", "/api/workflow/jobs/j1/log?after=end", "", token); a.status != 200 || len(a.body) != 0 {
		t.Errorf("after the cursor: %d %q", a.status, a.body)
	}
	for _, id := range e.fake.LogCalls() {
		if id != "j1" {
			t.Errorf("log read for job %q", id)
		}
	}
	for _, q := range []string{"?format=xml", "?lines=-1", "?lines=x"} {
		if a := e.do(t, "GET", "/api/workflow/jobs/j1/log"+q, "", token); a.status != 400 {
			t.Errorf("%s: %d %s", q, a.status, a.body)
		}
	}
	e.fake.SetLog("short", nil, errors.New("cannot read the journal of x: exit status 1"))
	if a := e.do(t, "GET", "/api/workflow/jobs/j1/log", "", token); a.status != 500 || a.errCode(t) != "internal" {
		t.Errorf("journal error: %d %s", a.status, a.body)
	}
}

// TestDetailNeedsToken: over TCP, loopback included, a job's details and
// log need the token (any local user reaches 127.0.0.1); the summaries in
// job lists do not.
func TestDetailNeedsToken(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.Set(jobs.Job{ID: "j1", Name: "j1", State: jobs.Completed})
	e.fake.SetLog("short", []string{"secret /srv/images/web01.vmdk"}, nil)
	for _, p := range []string{"/api/workflow/jobs/j1", "/api/workflow/jobs/j1/log"} {
		a := e.do(t, "GET", p, "", "")
		if a.status != 401 || strings.Contains(string(a.body), "secret") {
			t.Errorf("%s without token: %d %s", p, a.status, a.body)
		}
		if a := e.do(t, "GET", p, "", token); a.status != 200 {
			t.Errorf("%s with token: %d %s", p, a.status, a.body)
		}
	}
	if got := e.fake.LogCalls(); len(got) != 1 {
		t.Errorf("the agent was asked for the log %d times, want once (with the token)", len(got))
	}
	if a := e.do(t, "GET", "/api/workflow/jobs", "", ""); a.status != 200 {
		t.Errorf("job list without token: %d %s", a.status, a.body)
	}
}

func TestEventsStream(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/api/workflow/events", nil)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %v", resp.StatusCode, resp.Header)
	}
	// The subscription exists before the first byte is sent, so a job
	// submitted now is seen.
	if e.fake.Watchers() != 1 {
		t.Fatalf("watchers = %d", e.fake.Watchers())
	}
	if a := e.do(t, "POST", "/api/workflow/manifest/submit", goodManifest, token); a.status != 202 {
		t.Fatalf("submit: %d %s", a.status, a.body)
	}
	e.fake.Set(jobs.Job{ID: "job-1", Name: "web01", State: jobs.Running, Stage: "convert", Progress: 10})
	sc := bufio.NewScanner(resp.Body)
	var events []api.Event
	var names []string
	for len(events) < 2 && sc.Scan() {
		line := sc.Text()
		if n, ok := strings.CutPrefix(line, "event: "); ok {
			names = append(names, n)
		}
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			var ev api.Event
			if err := json.Unmarshal([]byte(d), &ev); err != nil {
				t.Fatalf("event data %q: %v", d, err)
			}
			events = append(events, ev)
		}
	}
	if len(events) != 2 {
		t.Fatalf("got %d events (%v)", len(events), sc.Err())
	}
	if names[0] != "job-new" || events[0].Type != "job-new" || events[0].Job.ID != "job-1" || events[0].Job.Status != jobs.Pending {
		t.Errorf("first event: %s %+v", names[0], events[0])
	}
	if names[1] != "job-changed" || events[1].Job.Stage != "convert" || *events[1].Job.Progress != 10 {
		t.Errorf("second event: %s %+v", names[1], events[1])
	}
	cancel()
	resp.Body.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	for e.fake.Watchers() != 0 {
		if ctx2.Err() != nil {
			t.Fatal("the watch outlived the event stream")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSchema(t *testing.T) {
	e := newEnv(t, nil)
	a := e.do(t, "GET", "/api/workflow/schema", "", "")
	if a.status != 200 || a.json(t)["title"] != "hyper2kvm manifest" {
		t.Errorf("schema: %d %s", a.status, a.body)
	}
	e = newEnv(t, func(c *api.Config) { c.Schema = nil })
	if a := e.do(t, "GET", "/api/workflow/schema", "", ""); a.status != 503 {
		t.Errorf("no schema: %d %s", a.status, a.body)
	}
}

func TestHealth(t *testing.T) {
	e := newEnv(t, nil)
	a := e.do(t, "GET", "/health", "", "")
	if m := a.json(t); a.status != 200 || m["status"] != "ok" || m["bridge_version"] != "test" || m["agent_version"] != "fake" {
		t.Errorf("health: %d %s", a.status, a.body)
	}
	e.fake.FailWith(dbusapi.ErrNoBus)
	if a := e.do(t, "GET", "/health", "", ""); a.status != 503 || a.errCode(t) != "agent-unreachable" {
		t.Errorf("health without bus: %d %s", a.status, a.body)
	}
}

func TestAgentErrorsMapThroughTheTable(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{dbusapi.ErrNoBus, 503, "agent-unreachable"},
		{dbusapi.ErrNoAgent, 503, "agent-unreachable"},
		{&apierr.Error{Kind: apierr.AccessDenied, Message: "cannot submit: not authorized"}, 403, "access-denied"},
		{&apierr.Error{Kind: apierr.QueueFull, Message: "cannot submit: queue full"}, 503, "queue-full"},
		{&apierr.Error{Kind: apierr.ConfigInvalid, Message: "the agent's configuration is invalid: agent.yaml: line 1"}, 503, "config-invalid"},
		{errors.New("boom"), 500, "internal"},
	}
	endpoints := []struct{ method, path string }{
		{"GET", "/api/workflow/status"},
		{"GET", "/api/workflow/jobs"},
		{"GET", "/api/workflow/jobs/active"},
		{"GET", "/api/workflow/jobs/x"},
		{"GET", "/api/workflow/jobs/x/log"},
		{"POST", "/api/workflow/jobs/x/cancel"},
		{"POST", "/api/workflow/jobs/x/retry"},
		{"POST", "/api/workflow/manifest/submit"},
		{"POST", "/api/workflow/manifest/validate"},
		{"GET", "/api/workflow/events"},
		{"GET", "/metrics"},
	}
	e := newEnv(t, nil)
	for _, tt := range tests {
		e.fake.FailWith(tt.err)
		for _, ep := range endpoints {
			a := e.do(t, ep.method, ep.path, goodManifest, token)
			if a.status != tt.status || a.errCode(t) != tt.code {
				t.Errorf("%v: %s %s = %d %s, want %d %s", tt.err, ep.method, ep.path, a.status, a.body, tt.status, tt.code)
			}
		}
	}
}

func TestMethodNotAllowedAndNotFound(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		method, path string
		status       int
		allow        string
	}{
		{"DELETE", "/api/workflow/status", 405, "GET, HEAD"},
		{"GET", "/api/workflow/manifest/submit", 405, "POST"},
		{"PUT", "/api/workflow/jobs/x/cancel", 405, "POST"},
		{"POST", "/api/workflow/jobs", 405, "GET, HEAD"},
		{"POST", "/", 405, "GET, HEAD"},
		{"GET", "/api/workflow/nothing", 404, ""},
		{"GET", "/api/nothing", 404, ""},
		{"GET", "/nothing.js", 404, ""},
	}
	for _, tt := range tests {
		a := e.do(t, tt.method, tt.path, "", token)
		if a.status != tt.status {
			t.Errorf("%s %s: %d %s", tt.method, tt.path, a.status, a.body)
			continue
		}
		code := a.errCode(t)
		if tt.status == 405 && (code != "method-not-allowed" || a.header.Get("Allow") != tt.allow) {
			t.Errorf("%s %s: code %s Allow %q, want %q", tt.method, tt.path, code, a.header.Get("Allow"), tt.allow)
		}
		if tt.status == 404 && code != "not-found" {
			t.Errorf("%s %s: code %s", tt.method, tt.path, code)
		}
	}
}

func TestDashboardIsServed(t *testing.T) {
	e := newEnv(t, nil)
	a := e.do(t, "GET", "/", "", "")
	if a.status != 200 || !strings.Contains(string(a.body), "<html") {
		t.Fatalf("/: %d %.200s", a.status, a.body)
	}
	csp := a.header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("CSP = %q", csp)
	}
	req, _ := http.NewRequest("GET", e.srv.URL+"/web/dashboard/", nil)
	resp, err := e.srv.Client().Transport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 301 || resp.Header.Get("Location") != "/" {
		t.Errorf("old dashboard address: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, nil)
	start := time.Now().Add(-time.Minute)
	// What the agent recorded from c1's report when it ended; c2 ended
	// before agents recorded that, so only its progress bytes count.
	e.fake.Set(jobs.Job{ID: "c1", State: jobs.Completed, StartedAt: start, FinishedAt: start.Add(20 * time.Second), ConvertedBytes: 1000,
		StageTimes: []jobs.StageTime{{Stage: "load", Seconds: 1.5}, {Stage: "convert", Seconds: 10}}})
	e.fake.Set(jobs.Job{ID: "c2", State: jobs.Completed, StartedAt: start, FinishedAt: start.Add(10 * time.Second), BytesDone: 24})
	e.fake.Set(jobs.Job{ID: "f1", State: jobs.Failed, StartedAt: start, FinishedAt: start.Add(2 * time.Second), BytesDone: 7,
		StageTimes: []jobs.StageTime{{Stage: "load", Seconds: 0.5}, {Stage: "a-plugin-stage", Seconds: 4}}})
	e.fake.Set(jobs.Job{ID: "x1", State: jobs.Cancelled})
	e.fake.Set(jobs.Job{ID: "r1", State: jobs.Running, BytesDone: 500})
	e.fake.Set(jobs.Job{ID: "p1", State: jobs.Pending})
	a := e.do(t, "GET", "/metrics", "", "")
	if a.status != 200 || !strings.HasPrefix(a.header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("metrics: %d %v", a.status, a.header)
	}
	got := parseMetrics(t, a.body)
	// testdata/metrics-before.txt is what the hand-written exposition
	// answered for these jobs: every family keeps its name, help and type,
	// every sample its labels and value (the uptime differs by run).
	before, err := os.ReadFile("testdata/metrics-before.txt")
	if err != nil {
		t.Fatal(err)
	}
	for name, old := range parseMetrics(t, before) {
		fam, ok := got[name]
		if !ok {
			t.Errorf("metric %s is gone", name)
			continue
		}
		if fam.GetHelp() != old.GetHelp() || fam.GetType() != old.GetType() {
			t.Errorf("%s: help %q type %v, was %q %v", name, fam.GetHelp(), fam.GetType(), old.GetHelp(), old.GetType())
		}
		if name == "hyper2kvm_agent_uptime_seconds" {
			continue
		}
		if want, have := samples(old), samples(fam); !maps.Equal(want, have) {
			t.Errorf("%s: samples %v, were %v", name, have, want)
		}
	}
	// And the bridge's own Go runtime and process collectors.
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_resident_memory_bytes", "process_start_time_seconds"} {
		if _, ok := got[name]; !ok {
			t.Errorf("metrics lack %s", name)
		}
	}
}

// parseMetrics parses a text exposition, failing t on a malformed one.
func parseMetrics(t *testing.T, text []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("not a Prometheus text exposition: %v\n%s", err, text)
	}
	return fams
}

// samples maps each sample of f, named by its labels (and _sum or _count
// for a summary), to its value, rounded to the milliunit the old
// exposition printed.
func samples(f *dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, m := range f.GetMetric() {
		var ls []string
		for _, l := range m.GetLabel() {
			ls = append(ls, l.GetName()+"="+l.GetValue())
		}
		key := strings.Join(ls, ",")
		round := func(v float64) float64 { return math.Round(v*1000) / 1000 }
		switch {
		case m.Gauge != nil:
			out[key] = round(m.GetGauge().GetValue())
		case m.Counter != nil:
			out[key] = round(m.GetCounter().GetValue())
		case m.Summary != nil:
			out[key+" sum"] = round(m.GetSummary().GetSampleSum())
			out[key+" count"] = float64(m.GetSummary().GetSampleCount())
		}
	}
	return out
}

// serveOn serves e's handler on l with the bridge's own Serve.
func serveOn(t *testing.T, s *api.Server, ls []net.Listener, idle time.Duration) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- api.Serve(ctx, ls, s, idle) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return done
}

func TestAccessByPeer(t *testing.T) {
	e := newEnv(t, nil)
	dir := t.TempDir()
	sock := filepath.Join(dir, "api.sock")
	ls, err := api.Listen(context.Background(), []string{sock}, "")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	serveOn(t, e.api, ls, 0)
	unix := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	do := func(c *http.Client, method, url, host, tok, body string) int {
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		if host != "" {
			req.Host = host
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	tests := []struct {
		name                   string
		client                 *http.Client
		url, host, tok, method string
		want                   int
	}{
		{"unix read", unix, "http://bridge/api/workflow/status", "", "", "GET", 200},
		{"unix read any host", unix, "http://evil.example/api/workflow/status", "", "", "GET", 200},
		{"unix write without token", unix, "http://bridge/api/workflow/manifest/submit", "", "", "POST", 401},
		{"unix write with token", unix, "http://bridge/api/workflow/manifest/submit", "", token, "POST", 202},
		{"loopback read", e.srv.Client(), e.srv.URL + "/api/workflow/status", "", "", "GET", 200},
		{"loopback read as localhost", e.srv.Client(), e.srv.URL + "/api/workflow/status", "localhost:8080", "", "GET", 200},
		{"DNS rebinding", e.srv.Client(), e.srv.URL + "/api/workflow/status", "evil.example:8080", "", "GET", 403},
		{"DNS rebinding, dashboard", e.srv.Client(), e.srv.URL + "/", "evil.example", "", "GET", 403},
		{"other host with token", e.srv.Client(), e.srv.URL + "/api/workflow/status", "bridge.example", token, "GET", 200},
	}
	for _, tt := range tests {
		if got := do(tt.client, tt.method, tt.url, tt.host, tt.tok, goodManifest); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, got, tt.want)
		}
	}

	// A request from another host (no ConnContext: decided by RemoteAddr).
	for _, tt := range []struct {
		tok  string
		want int
	}{{"", 401}, {token, 200}} {
		req := httptest.NewRequest("GET", "/api/workflow/status", nil)
		req.RemoteAddr = "192.0.2.7:4000"
		req.Host = "bridge.example"
		if tt.tok != "" {
			req.Header.Set("Authorization", "Bearer "+tt.tok)
		}
		rec := httptest.NewRecorder()
		e.api.ServeHTTP(rec, req)
		if rec.Code != tt.want {
			t.Errorf("remote read, token %q: %d %s", tt.tok, rec.Code, rec.Body)
		}
	}
}

func TestServeExitsWhenIdle(t *testing.T) {
	e := newEnv(t, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- api.Serve(context.Background(), []net.Listener{l}, e.api, 50*time.Millisecond) }()
	resp, err := http.Get("http://" + l.Addr().String() + "/api/workflow/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := <-done; err != nil {
		t.Fatalf("Serve after idle: %v", err)
	}
}

func TestIdle(t *testing.T) {
	now := time.Unix(1000, 0)
	i := api.NewIdle(func() time.Time { return now })
	now = now.Add(5 * time.Second)
	if got := i.IdleFor(); got != 5*time.Second {
		t.Errorf("idle since start = %v", got)
	}
	end := i.Begin()
	now = now.Add(time.Minute)
	if got := i.IdleFor(); got != 0 {
		t.Errorf("idle during a request = %v", got)
	}
	end()
	end() // idempotent
	now = now.Add(2 * time.Second)
	if got := i.IdleFor(); got != 2*time.Second {
		t.Errorf("idle after the request = %v", got)
	}
}

func TestLazyReconnects(t *testing.T) {
	fake := apitest.New()
	dials := 0
	up := false
	l := api.NewLazy(func(ctx context.Context) (api.Client, error) {
		dials++
		if !up {
			return nil, errors.New("dial unix /run/dbus/system_bus_socket: no such file")
		}
		return fake, nil
	})
	e := newEnv(t, func(c *api.Config) { c.Client = l })
	if a := e.do(t, "GET", "/api/workflow/status", "", ""); a.status != 503 || a.errCode(t) != "agent-unreachable" {
		t.Fatalf("bus down: %d %s", a.status, a.body)
	}
	up = true
	if a := e.do(t, "GET", "/api/workflow/status", "", ""); a.status != 200 {
		t.Fatalf("bus back: %d %s", a.status, a.body)
	}
	e.do(t, "GET", "/api/workflow/jobs", "", "")
	if dials != 2 {
		t.Errorf("dials = %d, want 2 (one failed, one kept)", dials)
	}
	fake.FailWith(dbusapi.ErrNoBus)
	e.do(t, "GET", "/api/workflow/status", "", "")
	fake.FailWith(nil)
	if a := e.do(t, "GET", "/api/workflow/status", "", ""); a.status != 200 || dials != 3 {
		t.Errorf("after losing the bus: %d, dials %d", a.status, dials)
	}
}

// TestConfigInvalidMessageAsIs: a misconfigured agent's message (file,
// line, key, suggestion) reaches the HTTP client whole, without a
// "cannot ..." of the endpoint in front.
func TestConfigInvalidMessageAsIs(t *testing.T) {
	e := newEnv(t, nil)
	msg := `the agent's configuration is invalid: /etc/hyper2kvm/agent.yaml: line 1: unknown key "max_concurent_jobs" (did you mean "max_concurrent_jobs"?)`
	e.fake.FailWith(apierr.New(apierr.ConfigInvalid, "%s", msg))
	a := e.do(t, "GET", "/api/workflow/status", "", "")
	var body struct {
		Error struct{ Message string } `json:"error"`
	}
	if err := json.Unmarshal([]byte(a.body), &body); err != nil {
		t.Fatalf("%v: %s", err, a.body)
	}
	if a.status != 503 || body.Error.Message != msg {
		t.Errorf("status answered %d %q, want 503 %q", a.status, body.Error.Message, msg)
	}
}

// TestHostAndDropDir: every job view names the host the job runs on, and
// the status says which folder to drop images into (the dashboard's empty
// state and job lists show them).
func TestHostAndDropDir(t *testing.T) {
	e := newEnv(t, func(c *api.Config) { c.Hostname = "kvm07" })
	e.fake.Set(jobs.Job{ID: "a", Name: "a", State: jobs.Pending})
	st := e.do(t, "GET", "/api/workflow/status", "", "").json(t)
	if st["drop_dir"] != "/wf/to_be_processed" || st["host"] != "kvm07" || st["mode"] != "manifest" {
		t.Errorf("status: %v, want drop_dir /wf/to_be_processed and host kvm07 beside the agent's fields", st)
	}
	for _, path := range []string{"/api/workflow/jobs/a"} {
		if j := e.do(t, "GET", path, "", token).json(t); j["host"] != "kvm07" {
			t.Errorf("%s: host %v, want kvm07", path, j["host"])
		}
	}
	l := e.do(t, "GET", "/api/workflow/jobs", "", "").json(t)
	if js, _ := l["jobs"].([]any); len(js) != 1 || js[0].(map[string]any)["host"] != "kvm07" {
		t.Errorf("job list: %v, want host kvm07", l)
	}
	// Without a configured name the bridge uses the machine's.
	name, _ := os.Hostname()
	e2 := newEnv(t, nil)
	if st := e2.do(t, "GET", "/api/workflow/status", "", "").json(t); st["host"] != name {
		t.Errorf("default host %v, want %q", st["host"], name)
	}
}

// TestSubmitRefusalAfterValidPasses: the fake agent can play a submit that
// fails although validation passed (the builder must then drop its
// "Valid manifest" badge).
func TestSubmitRefusalAfterValidPasses(t *testing.T) {
	e := newEnv(t, nil)
	m := `{"version":"1.0","name":"web01","pipeline":{"load":{"source_type":"vmdk","source_path":"/missing/web01.vmdk"}}}`
	if v := e.do(t, "POST", "/api/workflow/manifest/validate", m, "").json(t); v["valid"] != true {
		t.Fatalf("validate: %v", v)
	}
	a := e.do(t, "POST", "/api/workflow/manifest/submit", m, token)
	if a.status != 422 || !strings.Contains(string(a.body), "cannot read /missing/web01.vmdk") {
		t.Errorf("submit: %d %s", a.status, a.body)
	}
}

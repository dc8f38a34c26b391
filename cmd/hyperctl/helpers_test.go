package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/templates"
	"github.com/hyper2kvm/hyper2kvm/dbusapi"
)

// result is one in-process run of hyperctl.
type result struct {
	code           int
	stdout, stderr string
}

// testEnv returns an environment with no terminal, no bus unless fake is
// set, and a fixed clock.
func testEnv(stdin io.Reader, fake *fakeClient) (*env, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	e := &env{
		stdin:  stdin,
		stdout: &out,
		stderr: &errb,
		getenv: func(string) string { return "" },
		dial: func(ctx context.Context) (agentClient, error) {
			if fake == nil {
				return nil, errNoBusForTest
			}
			return fake, nil
		},
		terminal: func(any) bool { return false },
		poll:     time.Millisecond,
		now:      func() time.Time { return time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC) },
		// The shipped templates, as the package installs them.
		templates: templates.Library{Dirs: []string{"../../packaging/templates"}},
	}
	return e, &out, &errb
}

func runWith(t *testing.T, e *env, args ...string) result {
	t.Helper()
	code := run(context.Background(), args, e)
	return result{code: code, stdout: e.stdout.(*bytes.Buffer).String(), stderr: e.stderr.(*bytes.Buffer).String()}
}

// runCLI runs hyperctl in-process with empty stdin and an optional fake agent.
func runCLI(t *testing.T, fake *fakeClient, args ...string) result {
	t.Helper()
	e, _, _ := testEnv(nil, fake)
	return runWith(t, e, args...)
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// fakeClient is an in-memory agent for unit tests; the e2e tests in test/
// use the real one.
type fakeClient struct {
	mu          sync.Mutex
	status      apitype.Status
	jobs        []jobs.Job
	err         error // returned by every call when set
	submitted   [][]byte
	filters     []apitype.Filter
	cancelled   []string
	interactive []bool
	logReads    []string // the cursor of each JobLog
	events      chan apitype.Event
	closed      bool
}

func (f *fakeClient) GetStatus(ctx context.Context) (apitype.Status, error) {
	return f.status, f.err
}

func (f *fakeClient) ListJobs(ctx context.Context, fl apitype.Filter) ([]jobs.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.filters = append(f.filters, fl)
	if f.err != nil {
		return nil, f.err
	}
	var out []jobs.Job
	for _, j := range f.jobs {
		if len(fl.States) == 0 || containsState(fl.States, j.State) {
			out = append(out, j)
		}
	}
	return out, nil
}

func containsState(ss []jobs.State, s jobs.State) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func (f *fakeClient) GetJob(ctx context.Context, id string) (jobs.Job, error) {
	if f.err != nil {
		return jobs.Job{}, f.err
	}
	for _, j := range f.jobs {
		if j.ID == id {
			return j, nil
		}
	}
	return jobs.Job{}, noSuchJob(id)
}

func (f *fakeClient) Submit(ctx context.Context, m []byte, o apitype.SubmitOptions, interactive bool) ([]jobs.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	f.submitted = append(f.submitted, m)
	f.interactive = append(f.interactive, interactive)
	j := jobs.Job{ID: "j1", Name: "web01", State: jobs.Pending, Progress: jobs.ProgressUnknown}
	f.jobs = append(f.jobs, j)
	return []jobs.Job{j}, nil
}

func (f *fakeClient) Cancel(ctx context.Context, id string, interactive bool) error {
	if f.err != nil {
		return f.err
	}
	f.cancelled = append(f.cancelled, id)
	return nil
}

func (f *fakeClient) Retry(ctx context.Context, id string, interactive bool) (jobs.Job, error) {
	if f.err != nil {
		return jobs.Job{}, f.err
	}
	return jobs.Job{ID: id + "-r", Name: "web01", State: jobs.Pending}, nil
}

// JobLog answers two lines of job id, then (after cursor "c2") one more,
// then (after "c3") nothing; logReads counts the calls.
func (f *fakeClient) JobLog(ctx context.Context, id string, lines int, after, format string, interactive bool) ([]string, string, error) {
	if f.err != nil {
		return nil, "", f.err
	}
	if _, err := f.GetJob(ctx, id); err != nil {
		return nil, "", err
	}
	f.mu.Lock()
	f.logReads = append(f.logReads, after)
	f.mu.Unlock()
	switch after {
	case "":
		all := []string{id + " line 1", id + " line 2"}
		return all[max(len(all)-max(lines, 0), 0)*min(lines, 1):], "c2", nil
	case "c2":
		return []string{id + " line 3"}, "c3", nil
	}
	return []string{}, after, nil
}

func (f *fakeClient) Watch(ctx context.Context) (<-chan apitype.Event, error) {
	if f.err != nil {
		return nil, f.err
	}
	if f.events == nil {
		f.events = make(chan apitype.Event)
	}
	return f.events, nil
}

func (f *fakeClient) Close() error { f.closed = true; return nil }

var errNoBusForTest = dbusapi.ErrNoBus

func noSuchJob(id string) error { return apierr.New(apierr.NoSuchJob, "cannot find job %s", id) }

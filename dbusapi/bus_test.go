package dbusapi

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// testBusConfig is a permissive private bus: anyone may own any name and
// call anything, so the tests exercise the server, not the bus policy.
const testBusConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path=%SOCKET%</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
  %EXTRA%
</busconfig>
`

// startBus runs a private dbus-daemon for the test and returns its address.
func startBus(t *testing.T) string {
	t.Helper()
	return startBusWith(t, "")
}

// startBusWith adds extra to the bus configuration.
func startBusWith(t *testing.T, extra string) string {
	t.Helper()
	addr, _ := startBusCmd(t, extra)
	return addr
}

// startBusCmd also returns the dbus-daemon process, for tests that kill it.
func startBusCmd(t *testing.T, extra string) (string, *exec.Cmd) {
	t.Helper()
	daemon, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Skip("dbus-daemon not installed (Debian package dbus): cannot run a private bus")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(cfg, []byte(strings.NewReplacer("%SOCKET%", filepath.Join(dir, "bus"), "%EXTRA%", extra).Replace(testBusConfig)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(daemon, "--config-file="+cfg, "--nofork", "--print-address=1", "--nopidfile", "--nosyslog")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// dbus-daemon complains to stderr about its fd limit when not root;
	// that is noise, and a real failure shows as no address below.
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start dbus-daemon: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("cannot read the bus address from dbus-daemon: %v", err)
	}
	return strings.TrimSpace(addr), cmd
}

func connect(t *testing.T, addr string) *dbus.Conn {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatalf("cannot connect to the test bus: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// fakeBackend is an in-memory Backend whose tests drive job changes.
type fakeBackend struct {
	mu        sync.Mutex
	jobs      []jobs.Job
	subs      []chan apitype.Event
	nextID    int
	submitUID []int64
	cancelled []string
	// parsed counts the manifests Validate and Submit reached the backend
	// with; inParse is called during each (a test blocks it).
	parsed  int
	inParse func()
}

func (f *fakeBackend) Status() apitype.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return apitype.Status{Mode: "manifest", Running: true, QueueDepth: 3, ActiveJobs: 1,
		ProcessedToday: 7, FailedToday: 2, MaxWorkers: 4, UptimeSeconds: 12.5, Version: "1.2.3",
		PathUnitState: "failed", PathUnitResult: "unit-start-limit-hit"}
}

func (f *fakeBackend) Metrics() apitype.Metrics { return apitype.MetricsOf(f.Jobs(apitype.Filter{})) }

func (f *fakeBackend) Jobs(flt apitype.Filter) []jobs.Job {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []jobs.Job
	for _, j := range f.jobs {
		if len(flt.States) > 0 && !slices.Contains(flt.States, j.State) {
			continue
		}
		if flt.Batch != "" && j.Batch != flt.Batch {
			continue
		}
		out = append(out, j)
	}
	return out
}

func (f *fakeBackend) JobPage(flt apitype.Filter, p apitype.Page) ([]jobs.Job, int) {
	return p.Slice(f.Jobs(flt))
}

func (f *fakeBackend) Job(id string) (jobs.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, j := range f.jobs {
		if j.ID == id {
			return j, nil
		}
	}
	return jobs.Job{}, apierr.New(apierr.NoSuchJob, "cannot find job %s", id)
}

func (f *fakeBackend) Submit(ctx context.Context, manifest []byte, o apitype.SubmitOptions, uid int64) ([]jobs.Job, error) {
	if ok, problems := f.Validate(manifest, uid); !ok {
		return nil, &apierr.Error{Kind: apierr.InvalidManifest, Message: "cannot accept manifest", Details: problems}
	}
	f.mu.Lock()
	f.nextID++
	j := jobs.Job{ID: "job-" + string(rune('a'+f.nextID)), Name: o.Name, State: jobs.Pending,
		SubmittedBy: uid, CreatedAt: time.UnixMicro(1700000000000000 + int64(f.nextID)), Progress: jobs.ProgressUnknown}
	f.submitUID = append(f.submitUID, uid)
	f.mu.Unlock()
	f.put(j)
	return []jobs.Job{j}, nil
}

func (f *fakeBackend) Validate(manifest []byte, _ int64) (bool, []string) {
	f.mu.Lock()
	f.parsed++
	hook := f.inParse
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
	if strings.Contains(string(manifest), "bad") {
		return false, []string{"vms[0].source.path: required", "version: must be \"1.0\""}
	}
	return true, nil
}

func (f *fakeBackend) Cancel(ctx context.Context, id string) error {
	j, err := f.Job(id)
	if err != nil {
		return err
	}
	if j.State.Ready() {
		return apierr.New(apierr.InvalidState, "cannot cancel job %s: it is %s", id, j.State)
	}
	f.mu.Lock()
	f.cancelled = append(f.cancelled, id)
	f.mu.Unlock()
	j.State = jobs.Cancelled
	f.put(j)
	return nil
}

func (f *fakeBackend) Retry(ctx context.Context, id string, uid int64) (jobs.Job, error) {
	j, err := f.Job(id)
	if err != nil {
		return jobs.Job{}, err
	}
	j.ID += "-retry"
	j.State = jobs.Pending
	j.SubmittedBy = uid
	f.put(j)
	return j, nil
}

// JobLog answers three lines of job id, or those after cursor "c3" none.
func (f *fakeBackend) JobLog(ctx context.Context, id string, lines int, after, format string) ([]string, string, error) {
	if _, err := f.Job(id); err != nil {
		return nil, "", err
	}
	if after == "c3" {
		return []string{}, "c3", nil
	}
	all := []string{id + " one", id + " two", id + " three"}
	return all[max(len(all)-lines, 0):], "c3", nil
}

func (f *fakeBackend) Subscribe() (<-chan apitype.Event, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan apitype.Event, 1000)
	f.subs = append(f.subs, ch)
	return ch, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.subs = slices.DeleteFunc(f.subs, func(c chan apitype.Event) bool { return c == ch })
	}
}

// put stores j and tells subscribers, as the agent does.
func (f *fakeBackend) put(j jobs.Job) {
	f.mu.Lock()
	defer f.mu.Unlock()
	kind := apitype.JobNew
	for i := range f.jobs {
		if f.jobs[i].ID == j.ID {
			f.jobs[i] = j
			kind = apitype.JobChanged
		}
	}
	if kind == apitype.JobNew {
		f.jobs = append(f.jobs, j)
	}
	for _, ch := range f.subs {
		ch <- apitype.Event{Kind: kind, Job: j, At: time.Now()}
	}
}

// fakeAuthz answers from a table of allowed actions and records the asks.
type fakeAuthz struct {
	mu    sync.Mutex
	allow map[string]bool
	err   error
	asked []authAsk
}

type authAsk struct {
	sender, action string
	interactive    bool
}

func (a *fakeAuthz) Authorize(ctx context.Context, sender, action string, interactive bool) (bool, error) {
	a.mu.Lock()
	a.asked = append(a.asked, authAsk{sender, action, interactive})
	ok, err := a.allow[action], a.err
	a.mu.Unlock()
	return ok, err
}

func (a *fakeAuthz) set(allow map[string]bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.allow, a.err, a.asked = allow, err, nil
}

func (a *fakeAuthz) asks() []authAsk {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.asked)
}

// fixture is a bus with a server on it and a client connection.
type fixture struct {
	addr   string
	b      *fakeBackend
	authz  *fakeAuthz
	srv    *Server
	client *Client
	conn   *dbus.Conn // the client's connection
}

func newFixture(t *testing.T, initial ...jobs.Job) *fixture {
	t.Helper()
	addr := startBus(t)
	f := &fixture{addr: addr, b: &fakeBackend{jobs: initial}, authz: &fakeAuthz{allow: map[string]bool{}}}
	srv, err := NewServer(connect(t, addr), f.b, f.authz)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	f.srv = srv
	c, err := DialAddress(context.Background(), addr)
	if err != nil {
		t.Fatalf("DialAddress: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	f.client, f.conn = c, c.Conn()
	return f
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

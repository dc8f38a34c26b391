// Command testagent serves io.hyper2kvm.Agent1 from an in-memory job list
// behind the real polkit checks. The end-to-end tests run it in the test box
// to prove the D-Bus policy and the polkit policy and rules with the real
// dbus-daemon and polkitd, independently of the agent's job engine: its jobs
// stay pending until cancelled. It is never installed.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/dbusapi"
	"github.com/hyper2kvm/hyper2kvm/polkit"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "testagent:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return fmt.Errorf("cannot connect to the system bus: %w", err)
	}
	defer conn.Close()
	srv, err := dbusapi.NewServer(conn, &backend{started: time.Now()}, polkit.New(conn))
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Println("testagent: serving", dbusapi.BusName)
	<-ctx.Done()
	return nil
}

// backend keeps jobs in memory; they stay pending until cancelled.
type backend struct {
	mu      sync.Mutex
	started time.Time
	jobs    []jobs.Job
	n       int
	subs    []chan apitype.Event
}

func (b *backend) Status() apitype.Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := apitype.Status{Mode: "manifest", Running: true, MaxWorkers: 1, Version: "testagent",
		UptimeSeconds: time.Since(b.started).Seconds()}
	for _, j := range b.jobs {
		if j.State == jobs.Pending {
			s.QueueDepth++
		}
	}
	return s
}

func (b *backend) Metrics() apitype.Metrics { return apitype.MetricsOf(b.Jobs(apitype.Filter{})) }

func (b *backend) Jobs(f apitype.Filter) []jobs.Job {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []jobs.Job
	for _, j := range b.jobs {
		if (len(f.States) == 0 || slices.Contains(f.States, j.State)) && (f.Batch == "" || f.Batch == j.Batch) {
			out = append(out, j)
		}
	}
	return out
}

func (b *backend) JobPage(f apitype.Filter, p apitype.Page) ([]jobs.Job, int) {
	return p.Slice(b.Jobs(f))
}

func (b *backend) Job(id string) (jobs.Job, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i := b.find(id); i >= 0 {
		return b.jobs[i], nil
	}
	return jobs.Job{}, apierr.New(apierr.NoSuchJob, "no job %q", id)
}

func (b *backend) find(id string) int {
	return slices.IndexFunc(b.jobs, func(j jobs.Job) bool { return j.ID == id })
}

func (b *backend) Validate(manifest []byte, _ int64) (bool, []string) {
	var m struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(manifest, &m); err != nil {
		return false, []string{"manifest: " + err.Error()}
	}
	if m.Name == "" {
		return false, []string{"name: required"}
	}
	return true, nil
}

func (b *backend) Submit(ctx context.Context, manifest []byte, o apitype.SubmitOptions, uid int64) ([]jobs.Job, error) {
	if ok, problems := b.Validate(manifest, uid); !ok {
		return nil, &apierr.Error{Kind: apierr.InvalidManifest, Message: "cannot submit: invalid manifest", Details: problems}
	}
	var m struct {
		Name string `json:"name"`
	}
	json.Unmarshal(manifest, &m)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n++
	j := jobs.Job{ID: fmt.Sprintf("t%d", b.n), Name: m.Name, Manifest: m.Name + ".json", State: jobs.Pending,
		Progress: jobs.ProgressUnknown, SubmittedBy: uid, CreatedAt: time.Now()}
	b.jobs = append(b.jobs, j)
	b.emit(apitype.JobNew, j, nil)
	return []jobs.Job{j}, nil
}

func (b *backend) Cancel(ctx context.Context, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	i := b.find(id)
	if i < 0 {
		return apierr.New(apierr.NoSuchJob, "no job %q", id)
	}
	if b.jobs[i].State.Ready() {
		return apierr.New(apierr.InvalidState, "cannot cancel job %s: it is already %s", id, b.jobs[i].State)
	}
	b.jobs[i].State, b.jobs[i].FinishedAt = jobs.Cancelled, time.Now()
	b.emit(apitype.JobChanged, b.jobs[i], []string{"State", "FinishedAt"})
	return nil
}

func (b *backend) Retry(ctx context.Context, id string, uid int64) (jobs.Job, error) {
	old, err := b.Job(id)
	if err != nil {
		return jobs.Job{}, err
	}
	if old.State != jobs.Failed && old.State != jobs.Cancelled {
		return jobs.Job{}, apierr.New(apierr.InvalidState, "cannot retry job %s: it is %s", id, old.State)
	}
	js, err := b.Submit(ctx, []byte(fmt.Sprintf(`{"name":%q}`, old.Name)), apitype.SubmitOptions{}, uid)
	if err != nil {
		return jobs.Job{}, err
	}
	return js[0], nil
}

// JobLog answers one line naming the job: the test agent has no journal.
func (b *backend) JobLog(ctx context.Context, id string, lines int, after, format string) ([]string, string, error) {
	if _, err := b.Job(id); err != nil {
		return nil, "", err
	}
	if after != "" {
		return []string{}, after, nil
	}
	return []string{"log of " + id}, "end", nil
}

func (b *backend) Subscribe() (<-chan apitype.Event, func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := make(chan apitype.Event, 1024)
	b.subs = append(b.subs, ch)
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if i := slices.Index(b.subs, ch); i >= 0 {
			b.subs = slices.Delete(b.subs, i, i+1)
			close(ch)
		}
	}
}

// emit is called with b.mu held.
func (b *backend) emit(k apitype.EventKind, j jobs.Job, changed []string) {
	for _, ch := range b.subs {
		select {
		case ch <- apitype.Event{Kind: k, Job: j, Changed: changed, At: time.Now()}:
		default:
		}
	}
}

package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/dbusapi"
)

// Lazy is a Client that connects on first use and again after the bus went
// away, so the bridge starts (and answers 503) while the system bus is down
// and recovers when it is back.
type Lazy struct {
	dial func(ctx context.Context) (Client, error)
	mu   sync.Mutex
	c    Client
}

// NewLazy returns a Client that calls dial when it needs a connection.
func NewLazy(dial func(ctx context.Context) (Client, error)) *Lazy { return &Lazy{dial: dial} }

// DialBus is the dial function for the real agent: dbusapi over the system
// bus (or DBUS_SYSTEM_BUS_ADDRESS).
func DialBus(ctx context.Context) (Client, error) {
	c, err := dbusapi.Dial(ctx)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (l *Lazy) get(ctx context.Context) (Client, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.c != nil {
		return l.c, nil
	}
	// The connection outlives the request that happened to open it.
	c, err := l.dial(context.WithoutCancel(ctx))
	if err != nil {
		if !errors.Is(err, dbusapi.ErrNoBus) {
			err = errors.Join(dbusapi.ErrNoBus, err)
		}
		return nil, err
	}
	l.c = c
	return c, nil
}

// check drops the connection after an error that says it is gone.
func (l *Lazy) check(c Client, err error) error {
	if err == nil {
		return nil
	}
	if status, _, _ := classify(err); status != http.StatusServiceUnavailable {
		return err
	}
	l.mu.Lock()
	if l.c == c {
		l.c = nil
		if cl, ok := c.(io.Closer); ok {
			cl.Close()
		}
	}
	l.mu.Unlock()
	return err
}

// Close closes the current connection, if any.
func (l *Lazy) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cl, ok := l.c.(io.Closer); ok {
		l.c = nil
		return cl.Close()
	}
	l.c = nil
	return nil
}

func (l *Lazy) GetStatus(ctx context.Context) (apitype.Status, error) {
	c, err := l.get(ctx)
	if err != nil {
		return apitype.Status{}, err
	}
	st, err := c.GetStatus(ctx)
	return st, l.check(c, err)
}

func (l *Lazy) ListJobs(ctx context.Context, f apitype.Filter) ([]jobs.Job, error) {
	c, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	list, err := c.ListJobs(ctx, f)
	return list, l.check(c, err)
}

func (l *Lazy) ListJobsPage(ctx context.Context, f apitype.Filter, p apitype.Page) ([]jobs.Job, int, error) {
	c, err := l.get(ctx)
	if err != nil {
		return nil, 0, err
	}
	list, total, err := c.ListJobsPage(ctx, f, p)
	return list, total, l.check(c, err)
}

func (l *Lazy) GetJob(ctx context.Context, id string) (jobs.Job, error) {
	c, err := l.get(ctx)
	if err != nil {
		return jobs.Job{}, err
	}
	j, err := c.GetJob(ctx, id)
	return j, l.check(c, err)
}

func (l *Lazy) Validate(ctx context.Context, manifest []byte) (bool, []string, error) {
	c, err := l.get(ctx)
	if err != nil {
		return false, nil, err
	}
	ok, problems, err := c.Validate(ctx, manifest)
	return ok, problems, l.check(c, err)
}

func (l *Lazy) Submit(ctx context.Context, manifest []byte, o apitype.SubmitOptions, interactive bool) ([]jobs.Job, error) {
	c, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	list, err := c.Submit(ctx, manifest, o, interactive)
	return list, l.check(c, err)
}

func (l *Lazy) Cancel(ctx context.Context, id string, interactive bool) error {
	c, err := l.get(ctx)
	if err != nil {
		return err
	}
	return l.check(c, c.Cancel(ctx, id, interactive))
}

func (l *Lazy) Retry(ctx context.Context, id string, interactive bool) (jobs.Job, error) {
	c, err := l.get(ctx)
	if err != nil {
		return jobs.Job{}, err
	}
	j, err := c.Retry(ctx, id, interactive)
	return j, l.check(c, err)
}

func (l *Lazy) JobLog(ctx context.Context, id string, lines int, after, format string, interactive bool) ([]string, string, error) {
	c, err := l.get(ctx)
	if err != nil {
		return nil, "", err
	}
	got, cursor, err := c.JobLog(ctx, id, lines, after, format, interactive)
	return got, cursor, l.check(c, err)
}

func (l *Lazy) Watch(ctx context.Context) (<-chan apitype.Event, error) {
	c, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := c.Watch(ctx)
	return ch, l.check(c, err)
}

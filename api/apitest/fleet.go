package apitest

import (
	"context"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// Reprioritize gives a pending job a new priority, with the agent's
// checks: -100..100, pending only.
func (f *Fake) Reprioritize(ctx context.Context, id string, priority int, interactive bool) error {
	if err := f.failing(); err != nil {
		return err
	}
	if priority < -100 || priority > 100 {
		return apierr.New(apierr.InvalidArgs, "priority must be between -100 and 100, not %d", priority)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.jobs[id]
	if !ok {
		return apierr.New(apierr.NoSuchJob, "no job %q", id)
	}
	if j.State != jobs.Pending {
		return apierr.New(apierr.InvalidState, "cannot reprioritize job %s: it is already %s", id, j.State)
	}
	j.Priority = priority
	f.setLocked(j)
	return nil
}

// SetQueue pauses, resumes or drains the fake host's queue ("fake-a" in
// Hosts, and GetStatus' queue).
func (f *Fake) SetQueue(ctx context.Context, action string, interactive bool) error {
	if err := f.failing(); err != nil {
		return err
	}
	to, ok := map[string]string{"pause": "paused", "resume": "running", "drain": "draining"}[action]
	if !ok {
		return apierr.New(apierr.InvalidArgs, "queue action %q: want pause, resume or drain", action)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.queueErr != nil {
		return f.queueErr
	}
	f.queue = to
	return nil
}

// DenyQueue makes SetQueue answer err (nil: it works), as an agent whose
// polkit refuses the caller io.hyper2kvm.agent.manage.
func (f *Fake) DenyQueue(err error) {
	f.mu.Lock()
	f.queueErr = err
	f.mu.Unlock()
}

// SetSchedules makes Schedules answer ss.
func (f *Fake) SetSchedules(ss []apitype.Schedule) {
	f.mu.Lock()
	f.schedules = ss
	f.mu.Unlock()
}

// Schedules answers what SetSchedules gave.
func (f *Fake) Schedules(ctx context.Context) ([]apitype.Schedule, error) {
	if err := f.failing(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]apitype.Schedule{}, f.schedules...), nil
}

// queueState is the fake host's queue state, "running" unless set.
func (f *Fake) queueState() string {
	if f.queue == "" {
		return "running"
	}
	return f.queue
}

package apitest

import (
	"context"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// Hosts answers a two-host fleet: the fake itself ("fake-a", its running
// jobs busy) and "fake-b", lost.
func (f *Fake) Hosts(ctx context.Context) ([]apitype.Host, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	busy := 0
	for _, j := range f.jobs {
		if j.State == jobs.Running {
			busy++
		}
	}
	return []apitype.Host{
		{Name: "fake-a", Labels: map[string]string{"datastore": "ds01"}, Busy: busy, MaxWorkers: 3, Queue: f.queueState(), HeartbeatAt: f.started, Alive: true},
		{Name: "fake-b", MaxWorkers: 3, Queue: "draining", HeartbeatAt: f.started},
	}, nil
}

package agent

import (
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
)

// The event bus: every change of a job the API faces announce (D-Bus
// PropertiesChanged, the REST bridge's event stream) is sent here, under
// a.mu, by the logic that made it, and relayed to subscribers without
// waiting for them.

// maxBacklog is how many events a subscriber may fall behind before it
// loses some (and is told in the log). A burst of drops announces a job
// per file; the D-Bus server, the one subscriber, exports an object per
// job and catches up a little later.
const maxBacklog = 1 << 16

// Subscribe delivers job changes until cancel is called. A subscriber that
// falls more than maxBacklog events behind loses events.
func (a *Agent) Subscribe() (<-chan apitype.Event, func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	in := make(chan apitype.Event, 256)
	out := make(chan apitype.Event, 64)
	id := a.nextSub
	a.nextSub++
	a.subs[id] = in
	go relay(in, out, maxBacklog, func(n int) {
		a.log.Warnf(nil, "event subscriber %d is %d events behind; dropping events", id, n)
	})
	return out, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if c, ok := a.subs[id]; ok {
			delete(a.subs, id)
			close(c)
		}
	}
}

// relay moves events from in to out through a queue of up to limit, so
// that emitLocked (under a.mu) never waits for a subscriber. It closes out when
// in is closed; behind is called once each time the queue overflows.
func relay(in <-chan apitype.Event, out chan<- apitype.Event, limit int, behind func(int)) {
	defer close(out)
	var q []apitype.Event
	full := false
	for {
		if len(q) == 0 {
			ev, ok := <-in
			if !ok {
				return
			}
			q = append(q[:0], ev)
			continue
		}
		select {
		case ev, ok := <-in:
			if !ok {
				return
			}
			if len(q) >= limit {
				if !full {
					behind(len(q))
				}
				full = true
				continue
			}
			q = append(q, ev)
		case out <- q[0]:
			q[0] = apitype.Event{}
			q = q[1:]
			full = false
		}
	}
}

// emitLocked sends an event to every subscriber. Called with a.mu held. The
// relay behind each channel always takes what it is sent, so a full
// channel only means it has not run yet: wait for it a little.
func (a *Agent) emitLocked(kind apitype.EventKind, r *record, changed []string) {
	ev := apitype.Event{Kind: kind, Job: r.Job, Changed: changed, At: a.now()}
	for id, ch := range a.subs {
		select {
		case ch <- ev:
			continue
		default:
		}
		t := time.NewTimer(time.Second)
		select {
		case ch <- ev:
		case <-t.C:
			a.log.Warnf(nil, "event subscriber %d does not take events; dropping one", id)
		}
		t.Stop()
	}
}

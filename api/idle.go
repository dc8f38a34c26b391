package api

import (
	"sync"
	"time"
)

// Idle counts requests in flight (an open event stream is one long request)
// and remembers when the last one ended, so a socket-activated bridge can
// exit once nobody has used it for a while and let systemd start it again
// on the next connection.
type Idle struct {
	now    func() time.Time
	mu     sync.Mutex
	active int
	last   time.Time
}

// NewIdle starts idle as of now.
func NewIdle(now func() time.Time) *Idle {
	if now == nil {
		now = time.Now
	}
	return &Idle{now: now, last: now()}
}

// Begin marks a request as started; call the returned func when it ends.
func (i *Idle) Begin() (end func()) {
	i.mu.Lock()
	i.active++
	i.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			i.mu.Lock()
			i.active--
			i.last = i.now()
			i.mu.Unlock()
		})
	}
}

// IdleFor reports how long no request has been in flight (0 while one is).
func (i *Idle) IdleFor() time.Duration {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.active > 0 {
		return 0
	}
	return i.now().Sub(i.last)
}

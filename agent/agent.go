package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/fsnotify/fsnotify"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/config"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
	"github.com/hyper2kvm/hyper2kvm/agent/schedules"
)

// Agent is the daemon. Create it with New, export it (it implements
// dbusapi.Backend) and call Run. All exported methods are safe for
// concurrent use; the queue, the scheduler and unit signals are handled on
// Run's goroutine.
type Agent struct {
	cfg     config.Config
	tok     *tokens // per-user API tokens (tokens.go), made on first use
	tokOnce sync.Once
	units   Units
	log     *Logger
	notify  func(string)
	worker  string
	self    string // the agent's own binary: runs the job units' output cleanup
	version string
	host    string // config host.name: marks the jobs this agent claims
	queue   string // queue control: "" (running), paused or draining (queuectl.go)
	rescan  bool   // scan at the next kick (a drain ended)
	now     func() time.Time
	bootID  func() string
	cursor  func(ctx context.Context, unit string) string
	ready   func() error
	srcs    sourceDirs                                    // the source registry (remote.go)
	wakeAt  func(ctx context.Context, at time.Time) error // arms the timer an idle exit leaves
	// remote are final jobs other hosts of the fleet ran for this host's
	// claims, while settleRemoteLocked settles those (fleetfence.go).
	remote map[string]*record
	// fleet is the other hosts' jobs, read at each heartbeat (fleetview.go).
	fleet *fleetView
	// deliver sends one webhook delivery (webhooks.go).
	deliver func(ctx context.Context, unit, url string, headers []string, body []byte) (string, error)
	// schedDir is schedules.d; scheds what it held at start (periodic.go).
	schedDir string
	scheds   []*schedules.Schedule

	mu       sync.Mutex
	st       *state
	q        *queue.Queue
	waiting  int // dropped files seen but not yet stable
	dropped  int // files lying in to_be_processed/ (any kind)
	started  time.Time
	running  bool
	activity func() time.Time
	lastAct  time.Time
	subs     map[int]chan apitype.Event
	nextSub  int
	kick     chan struct{}
	status   string
	scanCost time.Duration // how long the last scan took to read the folder
	pend     *pendingQueue
	// settleLater: a claimed file could not be settled (the state
	// filesystem full); saveFailed: the last save failed. Both are tried
	// again every settleEvery.
	settleLater bool
	saveFailed  bool
}

// Option changes how New builds the agent (mostly seams for tests).
type Option func(*Agent)

// WithUnits uses u instead of connecting to systemd.
func WithUnits(u Units) Option { return func(a *Agent) { a.units = u } }

// WithLogger sets the logger.
func WithLogger(l *Logger) Option { return func(a *Agent) { a.log = l } }

// WithNotify replaces sd_notify (tests record the messages).
func WithNotify(f func(state string)) Option { return func(a *Agent) { a.notify = f } }

// WithVersion sets the version reported by Status.
func WithVersion(v string) Option { return func(a *Agent) { a.version = v } }

// WithClock replaces time.Now.
func WithClock(now func() time.Time) Option { return func(a *Agent) { a.now = now } }

// WithJournalCursor replaces how the agent finds a unit's last journal cursor.
func WithJournalCursor(f func(ctx context.Context, unit string) string) Option {
	return func(a *Agent) { a.cursor = f }
}

// WithWake replaces arming the transient timer that starts the agent
// again when a job's window opens (tests record the time).
func WithWake(f func(ctx context.Context, at time.Time) error) Option {
	return func(a *Agent) { a.wakeAt = f }
}

// WithBootID replaces reading the boot marker (see readBootID).
func WithBootID(f func() string) Option { return func(a *Agent) { a.bootID = f } }

// WithReady runs f once recovery and the first scan are done, before
// READY=1. The agent's main uses it to take the bus name only then, so that
// a call queued by D-Bus activation sees the recovered state, not an agent
// that is still starting. An error from f ends Run.
func WithReady(f func() error) Option { return func(a *Agent) { a.ready = f } }

// New opens the queue and the job store. Unless WithUnits is given it
// connects to systemd over the system bus.
func New(cfg config.Config, opts ...Option) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cannot start agent: %w", err)
	}
	a := &Agent{
		cfg:     cfg,
		version: "dev",
		now:     time.Now,
		bootID:  readBootID,
		cursor:  journalCursor,
		wakeAt:  armWake,
		subs:    map[int]chan apitype.Event{},
		kick:    make(chan struct{}, 1),
		pend:    newPendingQueue(),
		notify: func(s string) {
			daemon.SdNotify(false, s)
		},
	}
	for _, o := range opts {
		o(a)
	}
	if a.log == nil {
		a.log = NewLogger(os.Stderr, cfg.Verbose)
	}
	a.host = cfg.HostName()
	a.worker = cfg.WorkerPath
	a.self, _ = os.Executable()
	if a.worker == "" {
		if a.self == "" {
			return nil, errors.New("cannot find the worker binary")
		}
		a.worker = a.self
	}
	if a.self == "" {
		a.self = a.worker
	}
	q, err := queue.Open(cfg.ManifestWorkflowDir, queue.Options{
		StableTime: cfg.StableTime.D(), StableTimeRaw: cfg.StableTimeRaw.D(), StableTimeout: cfg.StableTimeout.D(),
		MaxManifestSize: cfg.MaxManifestSize, Retention: cfg.KeepFinished.D(), Now: a.now})
	if err != nil {
		return nil, err
	}
	a.q = q
	for _, d := range []string{cfg.OutputDir, a.jobsDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("cannot create %s: %w", d, err)
		}
	}
	st, err := openStore(a.cfg.StoreURL(), a.host, a.cfg.StateDir, a.log)
	if err != nil {
		return nil, err
	}
	st.prune(a.now(), a.cfg.KeepFinished.D())
	if err := st.save(); err != nil {
		st.db.close()
		return nil, err
	}
	a.st = st
	if a.webhooks() {
		a.st.outbox = a.outbox
	}
	if a.deliver == nil {
		a.deliver = a.sendDelivery
	}
	if err := a.loadQueueState(context.Background()); err != nil {
		st.db.close()
		return nil, err
	}
	a.started = a.now()
	a.lastAct = a.started
	if a.units == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		u, err := DialSystemd(ctx)
		if err != nil {
			return nil, err
		}
		a.units = u
	}
	return a, nil
}

// SetActivity gives the agent the time of the last API call (the D-Bus
// server's LastActivity) for its idle exit. Call it before Run.
func (a *Agent) SetActivity(f func() time.Time) {
	a.mu.Lock()
	a.activity = f
	a.mu.Unlock()
}

// Close releases the connection to systemd and the job store.
func (a *Agent) Close() {
	a.units.Close()
	if a.st.db != nil {
		a.st.db.close()
	}
}
func (a *Agent) jobsDir() string { return filepath.Join(a.cfg.StateDir, "jobs") }

// Run recovers jobs left by a previous run, scans the queue, tells systemd
// it is ready and then serves until ctx is done, the connection to systemd
// is lost (an error: systemd restarts the agent, which recovers) or it has
// been idle for idle_timeout (nil). Running job units are never stopped
// when the agent exits; the next run re-attaches to them.
func (a *Agent) Run(ctx context.Context) error {
	w, err := fsnotify.NewBufferedWatcher(256)
	if err != nil {
		return fmt.Errorf("cannot watch the queue: %w", err)
	}
	defer w.Close()
	if err := w.Add(a.q.Dir(queue.ToBeProcessed)); err != nil {
		return fmt.Errorf("cannot watch the queue: %w", err)
	}

	a.mu.Lock()
	a.running = true
	err = a.recoverLocked(ctx)
	if err == nil {
		err = a.fleetTickLocked(ctx, true)
	}
	if err == nil {
		a.scanLocked(ctx)
		a.scheduleLocked(ctx)
	}
	a.mu.Unlock()
	if err != nil {
		return err
	}
	if a.ready != nil {
		if err := a.ready(); err != nil {
			return err
		}
	}
	hooks, err := a.startWebhooks(ctx)
	if err != nil {
		return err
	}
	if hooks != nil {
		defer func() {
			stop, cancel := context.WithTimeout(context.Background(), webhookTimeout+5*time.Second)
			defer cancel()
			hooks.Stop(stop)
		}()
	}
	a.notify("READY=1")
	a.updateStatus()
	a.log.Infof(nil, "agent ready: queue %s, at most %d jobs at once", a.cfg.ManifestWorkflowDir, a.cfg.MaxConcurrentJobs)
	defer func() {
		a.mu.Lock()
		a.running = false
		a.mu.Unlock()
		a.notify("STOPPING=1")
	}()

	var watchdog <-chan time.Time
	if iv, err := daemon.SdWatchdogEnabled(false); err == nil && iv > 0 {
		t := time.NewTicker(iv / 2)
		defer t.Stop()
		watchdog = t.C
	}
	idleEvery := max(a.cfg.IdleTimeout.D()/4, time.Second)
	idle := time.NewTicker(idleEvery)
	defer idle.Stop()
	if a.cfg.IdleTimeout == 0 {
		idle.Stop()
	}
	// When to scan. A name appearing in the folder (a create, or a rename
	// into it) may be a file to take at once: it is scanned for now,
	// unless the last scan was so recent that scanning again would spend
	// more than a fifth of the time reading the folder (a scan reads all
	// of it: the pause is scanPace times what the last read of the folder
	// took, at most scanGap). Other events (writes, files leaving, dot-
	// files) cannot make a file ready before stable_time: they arm a
	// rescan at most scanGap after the last scan, which keeps the counts
	// of dropped files current. rescan also fires while dropped files are
	// settling (the stable-file rule needs a second look). Arming never
	// moves a due scan later.
	//
	// A fixed gap after every scan instead made a drop wait for the rescan
	// that the agent's own claim (the file leaving the folder) had armed:
	// about scanGap for each of a series of single drops.
	const scanGap = 100 * time.Millisecond
	const scanPace = 4
	rescan := time.NewTimer(time.Hour)
	rescan.Stop()
	var due time.Time // when the armed rescan fires; zero: not armed
	var lastScan time.Time
	var pause time.Duration // least time from lastScan to a scan for a new name
	armRescan := func(d time.Duration) {
		at := time.Now().Add(d)
		if !due.IsZero() && !at.Before(due) {
			return
		}
		due = at
		rescan.Reset(d)
	}
	doScan := func() {
		due = time.Time{}
		rescan.Stop()
		a.mu.Lock()
		a.scanLocked(ctx)
		pause = min(scanPace*a.scanCost, scanGap)
		a.scheduleLocked(ctx)
		a.mu.Unlock()
		lastScan = time.Now()
		if d, ok := a.nextLook(); ok {
			armRescan(d)
		}
	}
	if d, ok := a.nextLook(); ok {
		armRescan(d)
	}
	changes := a.units.Changes()
	retry := time.NewTicker(settleEvery)
	defer retry.Stop()
	var beat <-chan time.Time
	if a.st.db.shared() {
		t := time.NewTicker(a.heartbeatEvery())
		defer t.Stop()
		beat = t.C
	}
	for {
		select {
		case <-beat:
			a.mu.Lock()
			a.fleetTickLocked(ctx, false)
			a.scheduleLocked(ctx)
			a.mu.Unlock()
		case <-retry.C:
			a.mu.Lock()
			if a.settleLater || a.saveFailed {
				a.retrySettlesLocked()
			}
			// Windows opening and closing (schedule) need no event.
			a.expireLocked()
			a.scheduleLocked(ctx)
			a.mu.Unlock()
		case <-ctx.Done():
			a.log.Infof(nil, "agent stopping; running jobs continue in their units")
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("queue watcher stopped")
			}
			appeared := a.noteEvent(ev)
			// Take in what else the watcher has queued (a write right
			// after a create must be seen before the scan decides).
			for more := true; more; {
				select {
				case ev, ok := <-w.Events:
					if ok {
						appeared = a.noteEvent(ev) || appeared
					}
					more = ok
				default:
					more = false
				}
			}
			since := time.Since(lastScan)
			switch {
			case appeared && since >= pause:
				doScan()
			case appeared:
				armRescan(pause - since)
			default:
				armRescan(max(scanGap-since, 0))
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("queue watcher stopped")
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				a.log.Warnf(nil, "queue watch overflowed; scanning the whole folder")
			} else {
				a.log.Warnf(nil, "queue watch: %v", err)
			}
			armRescan(0)
		case <-rescan.C:
			doScan()
		case ch, ok := <-changes:
			if !ok {
				return errors.New("cannot follow job units: connection to systemd lost")
			}
			a.mu.Lock()
			a.onUnitChangeLocked(ctx, ch)
			a.scheduleLocked(ctx)
			a.mu.Unlock()
		case <-a.kick:
			a.mu.Lock()
			if a.rescan {
				a.rescan = false // a drain ended: what waits in the folder is claimed now
				a.scanLocked(ctx)
			}
			a.scheduleLocked(ctx)
			a.mu.Unlock()
		case <-watchdog:
			a.notify("WATCHDOG=1")
		case <-idle.C:
			if a.idleFor() >= a.cfg.IdleTimeout.D() {
				a.mu.Lock()
				at := a.nextDue()
				a.mu.Unlock()
				// Webhook deliveries due soon keep the agent up; a
				// later one is what the wake timer is armed for.
				// So do a schedule's firing and this host's sweep
				// (periodic.go).
				d := a.nextDelivery(ctx)
				if f := a.nextFiring(); !f.IsZero() && (d.IsZero() || f.Before(d)) {
					d = f
				}
				if !d.IsZero() {
					if d.Before(a.now().Add(a.cfg.IdleTimeout.D())) {
						break
					}
					if at.IsZero() || d.Before(at) {
						at = d
					}
				}
				if !at.IsZero() {
					if err := a.wakeAt(ctx, at); err != nil {
						a.log.Errorf(nil, "%v; staying up instead", err)
						break
					}
					a.log.Infof(nil, "idle for %s; jobs wait for their window: %s.timer starts the agent at %s", a.cfg.IdleTimeout.D(), wakeUnit, at.Format(time.RFC3339))
					return nil
				}
				a.log.Infof(nil, "idle for %s with nothing queued or running; exiting", a.cfg.IdleTimeout.D())
				return nil
			}
		}
		a.updateStatus()
	}
}

// noteEvent tells the queue what the watcher saw: a name that appeared
// and was not written since may be taken without waiting (see queue). It
// reports whether a name that may be taken appeared.
func (a *Agent) noteEvent(ev fsnotify.Event) bool {
	name := filepath.Base(ev.Name)
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case ev.Has(fsnotify.Write) || ev.Has(fsnotify.Chmod):
		a.q.Written(name)
	case ev.Has(fsnotify.Create):
		a.q.Created(name)
		return !queue.Ignored(name)
	}
	return false
}

// nextLook is how long until the first dropped file still settling may
// be found stable (a second look by the stable-file rule); ok is false
// when no file is settling. Scans for other files in between must not
// put that look off, or a steady stream of drops would starve it.
func (a *Agent) nextLook() (d time.Duration, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.waiting == 0 {
		return 0, false
	}
	at := a.q.NextLook()
	if at.IsZero() {
		return a.cfg.StableTime.D(), true
	}
	return max(at.Sub(a.now()), 0), true
}

// idleFor is how long the agent has had nothing to do: no job pending or
// running, nothing in to_be_processed/ (the path unit would start it again
// at once) and no API call.
func (a *Agent) idleFor() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.dropped > 0 {
		return 0
	}
	// Jobs waiting for their window (schedule.not_before) do not keep the
	// agent up: it arms a timer for them when it exits.
	now := a.now()
	a.st.sync()
	for _, r := range a.st.live {
		if !r.State.Ready() && !dueLater(r, now) {
			return 0
		}
	}
	for _, c := range a.st.Claims {
		waiting := false
		for _, id := range c.Jobs {
			if r := a.st.Jobs[id]; r != nil && dueLater(r, now) {
				waiting = true
			}
		}
		if !waiting {
			return 0 // settling, or a claim being made
		}
	}
	last := a.lastAct
	if a.activity != nil {
		if t := a.activity(); t.After(last) {
			last = t
		}
	}
	return a.now().Sub(last)
}

// touch records activity that keeps the agent from idling out.
func (a *Agent) touch() { a.lastAct = a.now() }

// wake asks Run's goroutine to schedule.
func (a *Agent) wake() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *Agent) updateStatus() {
	a.mu.Lock()
	pending, running := a.counts()
	s := fmt.Sprintf("STATUS=%d queued, %d running", pending+a.waiting, running)
	changed := s != a.status
	a.status = s
	a.mu.Unlock()
	if changed {
		a.notify(s)
	}
}

// counts looks at the live jobs only: a pending or running job is never
// in the history, which may hold many thousands.
func (a *Agent) counts() (pending, running int) {
	a.st.sync()
	for _, r := range a.st.live {
		switch r.State {
		case jobs.Pending:
			pending++
		case jobs.Running:
			running++
		}
	}
	return pending, running
}

// save persists the store; a failure is logged, and the agent goes on
// with what it has in memory (the next save retries).
func (a *Agent) save() {
	err := a.st.save()
	if err != nil && !a.saveFailed {
		a.log.Errorf(nil, "%v; trying again every %s", a.stateFSError(err), settleEvery)
	}
	if err == nil && a.saveFailed {
		a.log.Infof(nil, "job store saved again")
	}
	a.saveFailed = err != nil
	a.saveFenced()
}

// newID returns a job id: 8 hex digits, unique in the store, safe in unit
// names, file names and D-Bus object paths.
func (a *Agent) newID() string {
	for {
		var b [4]byte
		rand.Read(b[:])
		id := hex.EncodeToString(b[:])
		if _, taken := a.st.Jobs[id]; !taken {
			if _, err := os.Lstat(filepath.Join(a.jobsDir(), id)); err != nil {
				return id
			}
		}
	}
}

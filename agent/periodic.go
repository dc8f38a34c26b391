package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/schedules"
	"github.com/hyper2kvm/hyper2kvm/agent/templates"
)

// Periodic work (docs/WORKFLOW.md "Schedules", "Housekeeping"), worked by
// the same River client as the webhook deliveries:
//
//   - each file of schedules.d is a River periodic job (kind
//     scheduleKind). River's periodic enqueuer runs on the elected leader
//     only, so on a fleet a schedule fires once, not once per host. Its
//     worker submits the manifest through Submit, as root, so a firing is
//     an ordinary job. River's periodic jobs are not durable (a firing due
//     while no agent runs is not inserted), so every schedule also runs
//     on start, and the worker fires only what is owed since the last
//     firing, kept in hyper2kvm_meta (shared by a fleet): missed firings
//     collapse into one, and a start between firings fires nothing.
//   - the retention sweep (agent/gc) is a River job of kind gcKind in a
//     queue of this host's own (processed/ and failed/ are this host's
//     folders, so a leader-only sweep would be wrong on a fleet), that
//     snoozes itself for a day after each sweep.
//
// The idle agent arms its wake timer for the next firing of either, so
// both run with nobody logged in.

const (
	scheduleKind   = "hyper2kvm.schedule"
	gcKind         = "hyper2kvm.gc"
	periodicQueue  = "periodic"
	gcEvery        = 24 * time.Hour
	scheduleMetaPf = "schedule/"
)

// pendingStates are the states a unique periodic row is looked for in.
var pendingStates = []rivertype.JobState{rivertype.JobStateAvailable, rivertype.JobStatePending,
	rivertype.JobStateRunning, rivertype.JobStateRetryable, rivertype.JobStateScheduled}

// scheduleArgs is one firing of schedule Name.
type scheduleArgs struct {
	Name string `json:"name"`
}

func (scheduleArgs) Kind() string { return scheduleKind }

func (scheduleArgs) InsertOpts() river.InsertOpts {
	// A firing is owed or not (see Work): one row waiting is enough.
	return river.InsertOpts{Queue: periodicQueue, MaxAttempts: 3,
		UniqueOpts: river.UniqueOpts{ByArgs: true, ByState: pendingStates}}
}

// gcArgs is the retention sweep of Host.
type gcArgs struct {
	Host string `json:"host"`
}

func (gcArgs) Kind() string { return gcKind }

// gcQueue is host's own queue: River's names are lower-case letters and
// digits separated by '-' or '_'.
func gcQueue(host string) string {
	var b strings.Builder
	b.WriteString("gc")
	dash := true
	for _, c := range strings.ToLower(host) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			if dash {
				b.WriteByte('-')
			}
			b.WriteRune(c)
			dash = false
		} else {
			dash = true
		}
	}
	s := b.String()
	if len(s) > 64 {
		s = s[:64]
	}
	return strings.TrimRight(s, "-")
}

// scheduleState is what hyper2kvm_meta keeps of a schedule.
type scheduleState struct {
	Last  time.Time `json:"last"` // the firing last run (or the baseline)
	Ran   time.Time `json:"ran,omitzero"`
	Jobs  []string  `json:"jobs,omitempty"`
	Error string    `json:"error,omitempty"`
}

func (a *Agent) scheduleState(ctx context.Context, name string) (scheduleState, error) {
	var s scheduleState
	v, err := a.st.db.meta(ctx, scheduleMetaPf+name)
	if err != nil || v == "" {
		return s, err
	}
	return s, json.Unmarshal([]byte(v), &s)
}

func (a *Agent) setScheduleState(ctx context.Context, name string, s scheduleState) error {
	b, _ := json.Marshal(s)
	return a.st.db.setMeta(ctx, scheduleMetaPf+name, string(b))
}

// schedulesDir is where the agent reads schedules.
func (a *Agent) schedulesDir() string {
	if a.schedDir != "" {
		return a.schedDir
	}
	return schedules.Dir
}

// WithSchedulesDir replaces /etc/hyper2kvm/schedules.d (tests).
func WithSchedulesDir(dir string) Option { return func(a *Agent) { a.schedDir = dir } }

// loadSchedules reads schedules.d, saying in the journal which files are
// refused and why (file and field).
func (a *Agent) loadSchedules() []*schedules.Schedule {
	ss, errs := schedules.Load(a.schedulesDir())
	for _, err := range errs {
		a.log.Warnf(nil, "schedule refused: %v", err)
	}
	return ss
}

// retainSet reports whether agent.yaml has a retain section: then the
// sweep is the daily gcKind job; without one the agent sweeps with the
// defaults when it exits idle, as before, and starts no River client for
// it.
func (a *Agent) retainSet() bool {
	r := a.cfg.Retain
	return r.Processed != "" || r.DroppedImages != "" || r.Outputs != ""
}

// SweepsOnExit reports whether the agent's main should sweep when the
// agent exits idle (no retain section: no periodic sweep).
func (a *Agent) SweepsOnExit() bool { return !a.retainSet() }

// periodicJobs are River's periodic jobs for ss, and sets the baseline
// of every schedule seen for the first time (it first fires at its next
// time, not at once).
func (a *Agent) periodicJobs(ctx context.Context, ss []*schedules.Schedule) []*river.PeriodicJob {
	var out []*river.PeriodicJob
	for _, s := range ss {
		st, err := a.scheduleState(ctx, s.Name)
		if err == nil && st.Last.IsZero() {
			st.Last = a.now()
			if err := a.setScheduleState(ctx, s.Name, st); err != nil {
				a.log.Warnf(nil, "schedule %s: cannot record it: %v", s.Name, err)
			}
		}
		name := s.Name
		out = append(out, river.NewPeriodicJob(s, func() (river.JobArgs, *river.InsertOpts) {
			return scheduleArgs{Name: name}, nil
		}, &river.PeriodicJobOpts{ID: scheduleMetaPf + name, RunOnStart: true}))
	}
	return out
}

// queueGC makes sure this host's sweep is queued: a day from now when
// none is.
func (a *Agent) queueGC(ctx context.Context) error {
	tx, err := a.st.db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.rollback(ctx)
	if _, err := tx.insertMany(ctx, []river.InsertManyParams{{Args: gcArgs{Host: a.host}, InsertOpts: &river.InsertOpts{
		Queue: gcQueue(a.host), ScheduledAt: a.now().Add(gcEvery), MaxAttempts: 1000,
		UniqueOpts: river.UniqueOpts{ByArgs: true, ByState: pendingStates}}}}); err != nil {
		return err
	}
	return tx.commit(ctx)
}

// gcWorker sweeps, then snoozes a day: one row per host, for ever.
type gcWorker struct {
	river.WorkerDefaults[gcArgs]
	a *Agent
}

func (w *gcWorker) Work(ctx context.Context, job *river.Job[gcArgs]) error {
	items, err := w.a.Housekeep(ctx, false)
	if err != nil {
		w.a.log.Warnf(nil, "periodic sweep: %v", err)
	} else {
		w.a.log.Infof(nil, "periodic sweep: %d item(s) removed; next in %s", len(items), gcEvery)
	}
	return river.JobSnooze(gcEvery)
}

// scheduleWorker fires a schedule.
type scheduleWorker struct {
	river.WorkerDefaults[scheduleArgs]
	a *Agent
}

func (w *scheduleWorker) Work(ctx context.Context, job *river.Job[scheduleArgs]) error {
	a := w.a
	var s *schedules.Schedule
	for _, c := range a.scheds {
		if c.Name == job.Args.Name {
			s = c
		}
	}
	if s == nil {
		return nil // its file went away since the row was queued
	}
	st, err := a.scheduleState(ctx, s.Name)
	if err != nil {
		return fmt.Errorf("schedule %s: cannot read its last run: %w", s.Name, err)
	}
	now := a.now()
	owed := s.Owed(st.Last, now)
	if owed.IsZero() {
		return nil
	}
	st = scheduleState{Last: owed, Ran: now}
	ids, err := a.fireSchedule(ctx, s)
	if err != nil {
		st.Error = err.Error()
		a.log.Errorf(nil, "schedule %s (%s) of %s: %v", s.Name, s.File, owed.Format(time.RFC3339), err)
	} else {
		st.Jobs = ids
		a.log.Infof(nil, "schedule %s (%s) of %s: submitted job(s) %s", s.Name, s.File, owed.Format(time.RFC3339), strings.Join(ids, ", "))
	}
	// Recorded even when the firing failed: a manifest that does not
	// validate would not at the next try either; the error is shown by
	// hyperctl schedules and the next firing tries again.
	if err := a.setScheduleState(ctx, s.Name, st); err != nil {
		a.log.Errorf(nil, "schedule %s: cannot record its run: %v", s.Name, err)
	}
	return nil
}

// fireSchedule submits s's manifest as root, through Submit: the same
// validation and intake as hyperctl submit.
func (a *Agent) fireSchedule(ctx context.Context, s *schedules.Schedule) ([]string, error) {
	var data []byte
	var err error
	if s.Manifest != "" {
		data, err = os.ReadFile(s.Manifest)
		if err != nil {
			return nil, fmt.Errorf("cannot read manifest: %w", err)
		}
	} else {
		t, err := templates.Default().Get(s.Template)
		if err != nil {
			return nil, fmt.Errorf("template: %w", err)
		}
		if data, err = t.Apply(s.Set); err != nil {
			return nil, fmt.Errorf("template %s: %w", s.Template, err)
		}
	}
	js, err := a.submit(ctx, data, apitype.SubmitOptions{}, 0)
	if err != nil {
		var ae *apierr.Error
		if errors.As(err, &ae) && len(ae.Details) > 0 {
			return nil, fmt.Errorf("%w: %s", err, strings.Join(ae.Details, "; "))
		}
		return nil, err
	}
	ids := make([]string, len(js))
	for i, j := range js {
		ids[i] = j.ID
	}
	return ids, nil
}

// Schedules lists schedules.d with each one's next and last firing
// (ListSchedules): files that do not parse too, with why.
func (a *Agent) Schedules(ctx context.Context) ([]apitype.Schedule, error) {
	ss, errs := schedules.Load(a.schedulesDir())
	now := a.now()
	var out []apitype.Schedule
	for _, s := range ss {
		v := apitype.Schedule{Name: s.Name, File: s.File, Cron: s.Cron, Manifest: s.Manifest, Template: s.Template, Next: s.Next(now)}
		if a.st.db != nil {
			if st, err := a.scheduleState(ctx, s.Name); err == nil && !st.Ran.IsZero() {
				v.LastRun, v.LastJobs, v.Error = st.Last, st.Jobs, st.Error
			}
		}
		out = append(out, v)
	}
	for _, err := range errs {
		out = append(out, apitype.Schedule{Error: err.Error()})
	}
	if out == nil {
		out = []apitype.Schedule{}
	}
	return out, nil
}

// nextFiring is the earliest next firing of a schedule (zero for none).
func (a *Agent) nextFiring() time.Time {
	var at time.Time
	now := a.now()
	for _, s := range a.scheds {
		if n := s.Next(now); !n.IsZero() && (at.IsZero() || n.Before(at)) {
			at = n
		}
	}
	return at
}

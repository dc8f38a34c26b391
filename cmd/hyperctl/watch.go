package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// watchCmd is "hyperctl watch [ID...]".
func (a *app) watchCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "watch [ID...]",
		Short: "Follow jobs live",
		Long: `Follow jobs as the agent announces changes on the bus (D-Bus signals, no
polling). On a terminal every active job gets a progress bar with its stage,
percent, rate and ETA; otherwise one line is printed per change. With IDs,
watch exits when those jobs are finished: 0 when all completed, 1 when any
failed or was cancelled. Without IDs it runs until interrupted.
--output json prints one JSON event per line.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runWatch(cmd.Context(), args)
		},
	}
}

func (a *app) runWatch(ctx context.Context, ids []string) error {
	c, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	// Subscribe first, then read the current state: nothing falls between.
	events, err := c.Watch(ctx)
	if err != nil {
		return a.apiError(err, "")
	}
	var initial []jobs.Job
	if len(ids) > 0 {
		for i, arg := range ids {
			id, err := a.resolve(ctx, c, arg, newestOfName)
			if err != nil {
				return a.apiError(err, "")
			}
			ids[i] = id
			j, err := c.GetJob(ctx, id)
			if err != nil {
				return a.apiError(err, "")
			}
			initial = append(initial, j)
		}
	} else {
		initial, err = c.ListJobs(ctx, apitype.Filter{States: []jobs.State{jobs.Pending, jobs.Running}})
		if err != nil {
			return a.apiError(err, "")
		}
	}
	return a.newWatcher(ids).run(ctx, initial, events)
}

// eventJSON is one line of watch --output json.
type eventJSON struct {
	Event   string    `json:"event"` // new | changed | removed
	At      time.Time `json:"at"`
	Changed []string  `json:"changed,omitempty"`
	Job     jobJSON   `json:"job"`
}

func eventName(k apitype.EventKind) string {
	switch k {
	case apitype.JobNew:
		return "new"
	case apitype.JobRemoved:
		return "removed"
	}
	return "changed"
}

// tracked is what the watcher knows of one job, including the samples that
// give its rate and ETA.
type tracked struct {
	job       jobs.Job
	lastPrint string // the last one-line summary printed (non-terminal mode)
	// Rate samples, reset when the stage changes.
	stage     string
	t0        time.Time
	bytes0    int64
	pct0      int
	rate      float64 // bytes/s when BytesTotal is known, else percent/s
	rateBytes bool
	eta       time.Duration
	hasETA    bool
}

// watcher renders job changes. It follows either the given ids (and then
// ends when they are all finished) or every job.
type watcher struct {
	a     *app
	out   io.Writer
	ids   []string
	tty   bool
	json  bool
	jobs  map[string]*tracked
	order []string
	drawn int // lines of the live area drawn last, to repaint over them
	width int
}

func (a *app) newWatcher(ids []string) *watcher {
	w := &watcher{a: a, out: a.env.stdout, ids: ids, json: a.jsonOutput(), jobs: map[string]*tracked{}, width: 100}
	w.tty = !w.json && a.env.terminal(a.env.stdout)
	if f, ok := a.env.stdout.(*os.File); ok && w.tty {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 20 {
			w.width = int(ws.Col)
		}
	}
	return w
}

func (w *watcher) follows(id string) bool {
	if len(w.ids) == 0 {
		return true
	}
	for _, x := range w.ids {
		if x == id {
			return true
		}
	}
	return false
}

// done reports whether every followed id has finished.
func (w *watcher) done() bool {
	if len(w.ids) == 0 {
		return false
	}
	for _, id := range w.ids {
		t, ok := w.jobs[id]
		if !ok || !t.job.State.Ready() {
			return false
		}
	}
	return true
}

// exitCode is 0 when every followed job completed, 1 otherwise.
func (w *watcher) exitCode() int {
	for _, id := range w.ids {
		if t, ok := w.jobs[id]; !ok || t.job.State != jobs.Completed {
			return exitFailed
		}
	}
	return exitOK
}

func (w *watcher) run(ctx context.Context, initial []jobs.Job, events <-chan apitype.Event) error {
	now := w.a.env.now()
	for _, j := range initial {
		w.update(apitype.Event{Kind: apitype.JobNew, Job: j, At: now})
	}
	w.render()
	if w.done() {
		return w.finish()
	}
	for {
		select {
		case <-ctx.Done():
			w.clearLive()
			if len(w.ids) == 0 {
				return nil
			}
			fmt.Fprintf(w.a.env.stderr, "Detached; the job keeps running (stop it with: hyperctl cancel %s).\n", strings.Join(w.ids, " "))
			return silentExit(exitInterrupted)
		case ev, ok := <-events:
			if !ok {
				w.clearLive()
				if ctx.Err() != nil {
					return silentExit(exitInterrupted)
				}
				return fail(exitUnreachable, "lost the connection to the agent")
			}
			if !w.follows(ev.Job.ID) {
				continue
			}
			if ev.At.IsZero() {
				ev.At = w.a.env.now()
			}
			if w.json {
				if err := writeJSON(w.out, eventJSON{Event: eventName(ev.Kind), At: ev.At, Changed: ev.Changed, Job: viewOf(ev.Job)}); err != nil {
					return fail(exitFailed, "cannot write output: %w", err)
				}
			}
			w.update(ev)
			w.render()
			if w.done() {
				return w.finish()
			}
		}
	}
}

func (w *watcher) finish() error {
	w.clearLive()
	if code := w.exitCode(); code != exitOK {
		return silentExit(code)
	}
	return nil
}

// update folds an event into the tracked state and, outside a terminal,
// prints the lines it deserves.
func (w *watcher) update(ev apitype.Event) {
	j := ev.Job
	t, seen := w.jobs[j.ID]
	if ev.Kind == apitype.JobRemoved {
		if seen && !w.json && !w.tty {
			fmt.Fprintf(w.out, "%s %s removed\n", ev.At.Local().Format("15:04:05"), j.ID)
		}
		if len(w.ids) == 0 {
			delete(w.jobs, j.ID)
			w.dropOrder(j.ID)
		}
		return
	}
	if !seen {
		t = &tracked{}
		w.jobs[j.ID] = t
		w.order = append(w.order, j.ID)
	}
	wasReady := seen && t.job.State.Ready()
	t.job = j
	t.sample(ev.At)
	if w.json {
		return
	}
	line := w.changeLine(t)
	if w.tty {
		// Finished jobs leave the live area as a permanent line.
		if j.State.Ready() && !wasReady {
			w.clearLive()
			fmt.Fprintln(w.out, line)
		}
		return
	}
	if line != t.lastPrint {
		t.lastPrint = line
		fmt.Fprintf(w.out, "%s %s\n", ev.At.Local().Format("15:04:05"), line)
	}
}

func (w *watcher) dropOrder(id string) {
	for i, x := range w.order {
		if x == id {
			w.order = append(w.order[:i], w.order[i+1:]...)
			return
		}
	}
}

// sample records a progress point and recomputes rate and ETA from the
// first point of the current stage.
func (t *tracked) sample(at time.Time) {
	j := t.job
	if j.Stage != t.stage || t.t0.IsZero() || j.State != jobs.Running {
		t.stage, t.t0, t.bytes0, t.pct0 = j.Stage, at, j.BytesDone, j.Progress
		t.rate, t.hasETA = 0, false
		return
	}
	dt := at.Sub(t.t0).Seconds()
	if dt <= 0 {
		return
	}
	switch {
	case j.BytesTotal > 0 && j.BytesDone > t.bytes0:
		t.rateBytes = true
		t.rate = float64(j.BytesDone-t.bytes0) / dt
		t.eta = time.Duration(float64(j.BytesTotal-j.BytesDone) / t.rate * float64(time.Second))
		t.hasETA = true
	case j.Progress > t.pct0 && t.pct0 >= 0:
		t.rateBytes = false
		t.rate = float64(j.Progress-t.pct0) / dt
		t.eta = time.Duration(float64(100-j.Progress) / t.rate * float64(time.Second))
		t.hasETA = true
	}
}

// changeLine is the one-line summary used outside a terminal and for
// finished jobs: it changes only when something worth a line changed.
func (w *watcher) changeLine(t *tracked) string {
	j := t.job
	name := j.ID
	if j.Name != "" && j.Name != j.ID {
		name = j.Name + " (" + j.ID + ")"
	}
	switch j.State {
	case jobs.Completed:
		s := w.a.paint(ansiGreen, "✔ "+name+" completed")
		if !j.StartedAt.IsZero() && !j.FinishedAt.IsZero() {
			s += " in " + formatDuration(j.FinishedAt.Sub(j.StartedAt))
		}
		s += warningsNote(j)
		if len(j.Outputs) > 0 {
			s += ": " + strings.Join(j.Outputs, ", ")
		}
		return s
	case jobs.Failed:
		stage := j.ErrorStage
		if stage == "" {
			stage = j.Stage
		}
		where := ""
		if stage != "" {
			where = " in " + stage
		}
		return w.a.paint(ansiRed, fmt.Sprintf("✘ %s failed%s%s: %s", name, where, warningsNote(j), orDash(j.Error)))
	case jobs.Cancelled:
		return w.a.paint(ansiYellow, "✘ "+name+" cancelled")
	case jobs.Pending:
		return name + " pending"
	}
	if j.Stage == "" {
		return name + " running: starting"
	}
	s := name + " running: " + j.Stage
	if j.Progress >= 0 {
		// Steps of 10% keep a log readable; the terminal bar shows every percent.
		s += fmt.Sprintf(" %d%%", j.Progress/10*10)
	}
	if j.BytesTotal > 0 {
		s += fmt.Sprintf(" (%s of %s)", formatBytes(j.BytesDone), formatBytes(j.BytesTotal))
	}
	return s
}

// bar is the live line of a running or pending job on a terminal.
func (w *watcher) bar(t *tracked) string {
	j := t.job
	const width = 24
	var b string
	switch {
	case j.State == jobs.Pending:
		b = "[" + strings.Repeat(" ", width) + "]"
	case j.Progress < 0:
		b = "[" + strings.Repeat("·", width) + "]"
	default:
		n := min(j.Progress, 100) * width / 100
		b = "[" + w.a.paint(ansiBlue, strings.Repeat("█", n)) + strings.Repeat("░", width-n) + "]"
	}
	pct := "  ?%"
	if j.Progress >= 0 && j.State == jobs.Running {
		pct = fmt.Sprintf("%3d%%", j.Progress)
	}
	stage := j.Stage
	if j.State == jobs.Pending {
		stage = "pending"
	}
	parts := []string{truncate(j.Name, 20), b, pct, fmt.Sprintf("%-8s", orDash(stage))}
	if j.BytesTotal > 0 {
		parts = append(parts, formatBytes(j.BytesDone)+" of "+formatBytes(j.BytesTotal))
	}
	if t.hasETA && t.rate > 0 {
		// A rate in bytes means something to a reader; one in percent
		// per second does not (it read 1018.9%/s on a fast stage), so
		// without bytes only the ETA is shown.
		if t.rateBytes {
			parts = append(parts, formatMiBs(t.rate))
		}
		parts = append(parts, "ETA "+formatDuration(t.eta))
	}
	if j.StatusText != "" {
		parts = append(parts, j.StatusText)
	}
	line := strings.Join(parts, "  ")
	if visibleLen(line) >= w.width {
		// Cut only plain text so no colour sequence is split.
		plain := strings.Join(append([]string{truncate(j.Name, 20), "[" + strings.Repeat("#", min(max(j.Progress, 0), 100)*width/100) + "]"}, parts[2:]...), "  ")
		line = truncate(plain, w.width-1)
	}
	return line
}

// render repaints the live area: one bar per unfinished job.
func (w *watcher) render() {
	if !w.tty {
		return
	}
	w.clearLive()
	n := 0
	for _, id := range w.order {
		t := w.jobs[id]
		if t.job.State.Ready() {
			continue
		}
		fmt.Fprintln(w.out, w.bar(t))
		n++
	}
	if n == 0 && len(w.ids) == 0 {
		fmt.Fprintln(w.out, w.a.paint(ansiGrey, "waiting for jobs…"))
		n++
	}
	w.drawn = n
}

// clearLive erases the live area so permanent lines can be printed.
func (w *watcher) clearLive() {
	if !w.tty || w.drawn == 0 {
		return
	}
	fmt.Fprintf(w.out, "\x1b[%dA\x1b[J", w.drawn)
	w.drawn = 0
}

package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivertype"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/notify"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// Webhook deliveries (docs/WORKFLOW.md "Webhooks"). Each is a River job
// of kind webhookKind in queue notifyQueue, inserted in the same
// transaction as the job change it announces (state.outbox, called by
// saveWith), so that a change saved is a delivery queued and a change
// lost in a crash is no delivery either. Unlike conversions, deliveries
// are worked by River itself: a River client with a worker for that one
// queue, whose retry policy is notify.Backoff. A delivery is sent from a
// short transient unit with network (the agent's own unit has
// PrivateNetwork=yes), as http hooks are, so that a receiver that hangs
// or is down costs a worker slot of the notify queue, never a conversion.

const (
	webhookKind = "hyper2kvm.webhook"
	notifyQueue = "notify"
	// webhookTimeout bounds one attempt (the unit's RuntimeMaxSec too).
	webhookTimeout = 30 * time.Second
	// keepDeliveries is how long finished deliveries stay in the store.
	keepDeliveries = 7 * 24 * time.Hour
)

// deliveryArgs is one delivery as River's args. The body is made when
// the delivery is queued, so that every attempt sends (and signs) the
// same bytes; the secret is not stored: it is looked up by URL in the
// agent's configuration when sending.
type deliveryArgs struct {
	ID    string `json:"delivery_id"`
	URL   string `json:"url"`
	Event string `json:"event"`
	JobID string `json:"job_id,omitempty"`
	Admin bool   `json:"admin"` // from agent.yaml (may be signed), not a manifest
	// QueuedAt is when it was queued, on the agent's clock: it is given
	// up notify.GiveUpAfter later.
	QueuedAt time.Time       `json:"queued_at"`
	Body     json.RawMessage `json:"body"`
}

func (deliveryArgs) Kind() string { return webhookKind }

func (deliveryArgs) InsertOpts() river.InsertOpts {
	// River's own attempt limit is far beyond what 24 h of backoff
	// takes: the worker gives up by time (notify.GiveUpAfter).
	return river.InsertOpts{Queue: notifyQueue, MaxAttempts: 1000}
}

// newDeliveryID is a delivery's id: what a receiver deduplicates by.
func newDeliveryID() string {
	var b [12]byte
	rand.Read(b[:])
	return "d" + hex.EncodeToString(b[:])
}

// outbox is state.outbox: the deliveries the changes of one save make.
// prev is each changed job's state as last written ("" for a new job).
func (a *Agent) outbox(changed []*record, prev map[string]jobs.State, live map[string]*record) []river.InsertManyParams {
	var out []river.InsertManyParams
	ended := false
	for _, r := range changed {
		if r.State == prev[r.ID] {
			continue
		}
		var ev string
		switch r.State {
		case jobs.Running:
			ev = notify.JobStarted
		case jobs.Completed:
			ev = notify.JobCompleted
		case jobs.Failed:
			ev = notify.JobFailed
		case jobs.Cancelled:
			ev = notify.JobCancelled
		default:
			continue
		}
		if r.State.Ready() {
			ended = true
		}
		out = append(out, a.deliveries(ev, r)...)
	}
	if ended {
		for _, r := range live {
			if !r.State.Ready() {
				return out
			}
		}
		out = append(out, a.deliveries(notify.QueueDrained, nil)...)
	}
	return out
}

// deliveries are the deliveries of event ev (of job r, nil for none):
// one per webhook of agent.yaml that wants it, and one to the job's own
// manifest's notify.url.
func (a *Agent) deliveries(ev string, r *record) []river.InsertManyParams {
	var out []river.InsertManyParams
	add := func(url string, admin bool) {
		id := newDeliveryID()
		p := notify.Payload{Event: ev, DeliveryID: id, At: a.now().UTC(), Host: a.host}
		if r != nil {
			p.Job = payloadJob(r)
		}
		body, err := json.Marshal(p)
		if err != nil {
			a.log.Errorf(nil, "webhook %s: cannot encode the body: %v", ev, err)
			return
		}
		d := deliveryArgs{ID: id, URL: url, Event: ev, Admin: admin, Body: body, QueuedAt: p.At}
		if r != nil {
			d.JobID = r.ID
		}
		out = append(out, river.InsertManyParams{Args: d})
	}
	for _, w := range a.cfg.Notify.Webhooks {
		if notify.Wants(w.Events, ev) {
			add(w.URL, true)
		}
	}
	if r != nil {
		if n := manifestNotify(r); n != nil && notify.Wants(n.Events, ev) &&
			notify.CheckURL(n.URL, a.cfg.Notify.AllowedHosts, true) == nil {
			add(n.URL, false)
		}
	}
	return out
}

// manifestNotify is the notify of a job's manifest, nil for none.
func manifestNotify(r *record) *manifest.Notify {
	if len(r.VM) == 0 {
		return nil
	}
	var m struct {
		Notify *manifest.Notify `json:"notify"`
	}
	if json.Unmarshal(r.VM, &m) != nil {
		return nil
	}
	return m.Notify
}

// payloadJob is what a delivery says of r, with the report's summary
// when the job has ended and its report can be read.
func payloadJob(r *record) *notify.Job {
	j := &notify.Job{ID: r.ID, Name: r.Name, Status: string(r.State), Stage: r.Stage, Error: r.Error,
		ErrorStage: r.ErrorStage, Attempt: r.Attempt, Outputs: r.Outputs, ReportPath: r.ReportPath}
	if !r.StartedAt.IsZero() && !r.FinishedAt.IsZero() {
		j.DurationSeconds = r.FinishedAt.Sub(r.StartedAt).Seconds()
	}
	for _, st := range r.StageTimes {
		if j.StageSeconds == nil {
			j.StageSeconds = map[string]float64{}
		}
		j.StageSeconds[st.Stage] += st.Seconds
	}
	if !r.State.Ready() {
		return j
	}
	sum := &notify.Summary{Warnings: r.Warnings}
	// The worker's report in the job's directory (the job has just
	// ended: it is not settled yet), else the settled one. What a guest
	// put there is bounded like the record's warnings.
	rep, _ := readReport(r.JobDir)
	if rep == nil && r.ReportPath != "" {
		rep, _ = report.Read(r.ReportPath)
	}
	if rep != nil {
		if rep.Guest != nil && rep.Guest.OS != nil {
			sum.GuestOS = rep.Guest.OS.Pretty
			if sum.GuestOS == "" {
				sum.GuestOS = strings.TrimSpace(rep.Guest.OS.ID + " " + rep.Guest.OS.VersionID)
			}
		}
		for _, c := range rep.Changes {
			sum.Fixes = append(sum.Fixes, c.Fix+": "+c.File)
		}
		if g := jobs.KeepWarnings([]string{sum.GuestOS}); len(g) > 0 {
			sum.GuestOS = g[0]
		}
		sum.Fixes = jobs.KeepWarnings(sum.Fixes)
	}
	j.Report = sum
	return j
}

// secretFor is the secret of the agent.yaml webhook at url ("" for none).
func (a *Agent) secretFor(url string) string {
	for _, w := range a.cfg.Notify.Webhooks {
		if w.URL == url {
			return w.Secret
		}
	}
	return ""
}

// webhookWorker works the notify queue.
type webhookWorker struct {
	river.WorkerDefaults[deliveryArgs]
	a *Agent
}

func (w *webhookWorker) Timeout(*river.Job[deliveryArgs]) time.Duration {
	return webhookTimeout + 30*time.Second
}

// Work makes one attempt; an error has River retry it after the backoff.
func (w *webhookWorker) Work(ctx context.Context, job *river.Job[deliveryArgs]) error {
	a, d := w.a, job.Args
	what := fmt.Sprintf("webhook %s %s", d.ID, d.Event)
	if d.JobID != "" {
		what += " of job " + d.JobID
	}
	if a.now().Sub(d.QueuedAt) > notify.GiveUpAfter {
		a.log.Errorf(nil, "%s to %s: given up after %d attempts in %s", what, d.URL, job.Attempt-1, notify.GiveUpAfter)
		return river.JobCancel(errors.New("given up"))
	}
	headers := []string{notify.DeliveryHeader + ": " + d.ID, notify.EventHeader + ": " + d.Event}
	if secret := a.secretFor(d.URL); secret != "" && d.Admin {
		headers = append(headers, notify.SignatureHeader+": "+notify.Sign(secret, d.Body))
	}
	unit := fmt.Sprintf("hyper2kvm-webhook-%s-%d.service", d.ID, job.Attempt)
	status, err := a.deliver(ctx, unit, d.URL, headers, d.Body)
	if status == "" {
		status = "no answer"
	}
	if err != nil {
		next := a.now().Add(notify.Backoff(job.Attempt, a.webhookInitial(), a.webhookMax()))
		a.log.Warnf(nil, "%s to %s: attempt %d: %s (%v); retrying at %s", what, d.URL, job.Attempt, status, err, next.Format(time.RFC3339))
		return err
	}
	a.log.Infof(nil, "%s to %s: attempt %d: %s: delivered", what, d.URL, job.Attempt, status)
	return nil
}

func (a *Agent) webhookInitial() time.Duration {
	if d := a.cfg.Notify.RetryInitial.D(); d > 0 {
		return d
	}
	return 30 * time.Second
}

func (a *Agent) webhookMax() time.Duration {
	if d := a.cfg.Notify.RetryMax.D(); d > 0 {
		return d
	}
	return time.Hour
}

// webhookRetry is River's retry policy for deliveries: notify.Backoff.
type webhookRetry struct{ a *Agent }

func (p webhookRetry) NextRetry(job *rivertype.JobRow) time.Time {
	return p.a.now().Add(notify.Backoff(max(job.Attempt, 1), p.a.webhookInitial(), p.a.webhookMax()))
}

// sendDelivery is how the agent sends a delivery (a.deliver): hyper2kvmd
// hook-http in a transient unit of its own with network and a dynamic
// user, the body on its stdin. It returns the "HTTP ..." line the
// request printed.
func (a *Agent) sendDelivery(ctx context.Context, unit, url string, headers []string, body []byte) (string, error) {
	self := a.self
	if self == "" {
		self = "/usr/bin/hyper2kvmd"
	}
	secs := strconv.Itoa(int(webhookTimeout.Seconds()))
	argv := []string{"--quiet", "--wait", "--pipe", "--collect", "--unit=" + unit, "--slice=hyper2kvm.slice",
		"--description=hyper2kvm webhook delivery", "-p", "RuntimeMaxSec=" + secs,
		"-p", "DynamicUser=yes", "-p", "ProtectSystem=strict", "-p", "ProtectHome=yes", "-p", "PrivateTmp=yes",
		"-p", "PrivateDevices=yes", "-p", "NoNewPrivileges=yes", "-p", "ProtectKernelTunables=yes",
		"-p", "ProtectKernelModules=yes", "-p", "ProtectKernelLogs=yes", "-p", "ProtectControlGroups=yes",
		"-p", "RestrictSUIDSGID=yes", "-p", "LockPersonality=yes", "-p", "RestrictRealtime=yes",
		"-p", "WorkingDirectory=/", "--", self, "hook-http", "--method", "POST", "--timeout", secs, "--url", url}
	for _, h := range headers {
		argv = append(argv, "--header", h)
	}
	cmd := exec.CommandContext(ctx, "systemd-run", argv...)
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	status := ""
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "HTTP ") {
			status = strings.TrimSpace(line)
			break
		}
	}
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if i := strings.LastIndex(msg, "\n"); i >= 0 {
			msg = msg[i+1:]
		}
		return status, fmt.Errorf("%v: %s", err, msg)
	}
	return status, nil
}

// webhooks reports whether agent.yaml has webhooks: without any, no
// delivery is queued, River's worker client is not started, and the
// agent's store works as it did before webhooks.
func (a *Agent) webhooks() bool {
	return len(a.cfg.Notify.Webhooks) > 0 || len(a.cfg.Notify.AllowedHosts) > 0
}

// notifyClient is River's client working the notify queue.
type notifyClient interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// startWebhooks starts River's client for the notify queue. Deliveries a
// killed agent left running are made available again first (on one host
// the agent is their only worker; River's own rescuer is off, see
// below). Finished deliveries older than keepDeliveries are deleted.
func (a *Agent) startWebhooks(ctx context.Context) (notifyClient, error) {
	d := a.st.db
	if d == nil {
		return nil, nil
	}
	a.scheds = a.loadSchedules()
	if !a.webhooks() && len(a.scheds) == 0 && !a.retainSet() {
		return nil, nil
	}
	if d.pool == nil {
		d.exec(ctx, `UPDATE river_job SET state = 'available', scheduled_at = ? WHERE kind IN (?, ?, ?) AND state = 'running'`, sqliteTime(a.now()), webhookKind, scheduleKind, gcKind)
	}
	d.exec(ctx, d.q(`DELETE FROM river_job WHERE kind = ? AND state IN ('completed', 'cancelled', 'discarded') AND finalized_at < ?`,
		`DELETE FROM river_job WHERE kind = $1 AND state IN ('completed', 'cancelled', 'discarded') AND finalized_at < $2`),
		webhookKind, d.ts(a.now().Add(-keepDeliveries)))
	workers := river.NewWorkers()
	river.AddWorker(workers, &webhookWorker{a: a})
	river.AddWorker(workers, &scheduleWorker{a: a})
	river.AddWorker(workers, &gcWorker{a: a})
	queues := map[string]river.QueueConfig{notifyQueue: {MaxWorkers: 4}, periodicQueue: {MaxWorkers: 1}}
	if a.retainSet() {
		queues[gcQueue(a.host)] = river.QueueConfig{MaxWorkers: 1}
		if err := a.queueGC(ctx); err != nil {
			return nil, fmt.Errorf("cannot queue the periodic sweep: %w", err)
		}
	}
	cfg := &river.Config{
		Logger:       discardLogger(),
		ID:           "hyper2kvmd-" + a.host,
		Queues:       queues,
		Workers:      workers,
		PeriodicJobs: a.periodicJobs(ctx, a.scheds),
		RetryPolicy:  webhookRetry{a},
		// River's maintenance runs over every row, and the conversion
		// jobs are rows too: the agent keeps and prunes its own
		// (keep_finished), and a conversion runs for hours in state
		// running, which River's rescuer would take for stuck.
		CompletedJobRetentionPeriod: -1,
		CancelledJobRetentionPeriod: -1,
		DiscardedJobRetentionPeriod: -1,
		JobTimeout:                  webhookTimeout + 30*time.Second,
		RescueStuckJobsAfter:        100 * 365 * 24 * time.Hour,
		FetchPollInterval:           time.Second,
	}
	var c notifyClient
	var err error
	if d.pool != nil {
		c, err = river.NewClient(riverpgxv5.New(d.pool), cfg)
	} else {
		c, err = river.NewClient(riversqlite.New(d.db), cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot start the webhook deliveries: %w", err)
	}
	if err := c.Start(ctx); err != nil {
		return nil, fmt.Errorf("cannot start the webhook deliveries: %w", err)
	}
	return c, nil
}

// nextDelivery is when the earliest unfinished delivery is due (zero for
// none): the idle agent stays up for one due soon, and arms its wake
// timer for a later one.
func (a *Agent) nextDelivery(ctx context.Context) time.Time {
	d := a.st.db
	if d == nil || !a.webhooks() && !a.retainSet() {
		return time.Time{}
	}
	var at time.Time
	var raw any
	d.rows(ctx, d.q(`SELECT min(scheduled_at) FROM river_job WHERE (kind = ? OR kind = ? AND queue = ?) AND state IN ('available', 'scheduled', 'retryable', 'running', 'pending')`,
		`SELECT min(scheduled_at) FROM river_job WHERE (kind = $1 OR kind = $2 AND queue = $3) AND state IN ('available', 'scheduled', 'retryable', 'running', 'pending')`),
		[]any{webhookKind, gcKind, gcQueue(a.host)}, func(scan func(...any) error) error { return scan(&raw) })
	switch v := raw.(type) {
	case time.Time:
		at = v
	case string:
		for _, layout := range []string{"2006-01-02 15:04:05.999999999-07:00", "2006-01-02 15:04:05.999999999", time.RFC3339Nano, "2006-01-02T15:04:05.999999999"} {
			if t, err := time.Parse(layout, v); err == nil {
				return t
			}
		}
		return a.now() // unreadable: take it as due
	}
	return at
}

// queueNotifyTest queues a sample delivery to every webhook of agent.yaml
// (hyperctl notify test) and returns their ids.
func (a *Agent) queueNotifyTest(ctx context.Context) ([]string, error) {
	if len(a.cfg.Notify.Webhooks) == 0 {
		return nil, errors.New("no webhooks in agent.yaml (notify.webhooks)")
	}
	sample := &record{Job: jobs.Job{ID: "test", Name: "sample-vm", State: jobs.Completed, Stage: "validate", Host: a.host,
		Outputs: []string{"/var/lib/hyper2kvm/output/sample-vm.qcow2"}}}
	params := a.deliveries(notify.Test, sample)
	d := a.st.db
	if d == nil {
		return nil, errors.New("no job store")
	}
	tx, err := d.begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot queue the test delivery: %w", err)
	}
	defer tx.rollback(ctx)
	if _, err := tx.insertMany(ctx, params); err != nil {
		return nil, fmt.Errorf("cannot queue the test delivery: %w", err)
	}
	if err := tx.commit(ctx); err != nil {
		return nil, fmt.Errorf("cannot queue the test delivery: %w", err)
	}
	var ids []string
	for _, p := range params {
		ids = append(ids, p.Args.(deliveryArgs).ID)
	}
	return ids, nil
}

// WithDeliver replaces how a webhook delivery is sent (tests record
// them); f returns the HTTP status line and an error for a failed attempt.
func WithDeliver(f func(ctx context.Context, unit, url string, headers []string, body []byte) (string, error)) Option {
	return func(a *Agent) { a.deliver = f }
}

// NotifyTest queues a sample delivery to every webhook of agent.yaml
// (D-Bus NotifyTest, hyperctl notify test).
func (a *Agent) NotifyTest(ctx context.Context) ([]string, error) {
	return a.queueNotifyTest(ctx)
}

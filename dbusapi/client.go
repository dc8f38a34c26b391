package dbusapi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// Client talks to the agent over the system bus (or the bus at
// DBUS_SYSTEM_BUS_ADDRESS). Errors the agent returns come back as
// *apierr.Error with the kind from the D-Bus error name; a bus that cannot be
// reached is ErrNoBus, an agent that is not running and cannot be started
// ErrNoAgent (both wrapped: test with errors.Is). Its zero value is not
// usable; use Dial, DialAddress or NewClient. A Client is safe for
// concurrent use.
type Client struct {
	conn *dbus.Conn
	own  bool // Close closes conn
	// Dest is the bus name called, BusName unless changed for a test.
	Dest string
}

// ErrNoBus means the system bus could not be reached.
var ErrNoBus = errors.New("cannot connect to the system D-Bus")

// interactiveTimeout bounds a call that may wait while polkit asks the
// user for a password.
const interactiveTimeout = 5 * time.Minute

// Dial connects to the system bus.
func Dial(ctx context.Context) (*Client, error) {
	conn, err := dbus.ConnectSystemBus(dbus.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoBus, err)
	}
	return &Client{conn: conn, own: true, Dest: BusName}, nil
}

// DialAddress connects to the bus at address (a D-Bus address such as
// "unix:path=/run/dbus/system_bus_socket").
func DialAddress(ctx context.Context, address string) (*Client, error) {
	conn, err := dbus.Connect(address, dbus.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %v", ErrNoBus, address, err)
	}
	return &Client{conn: conn, own: true, Dest: BusName}, nil
}

// NewClient uses an existing connection, which Close leaves open.
func NewClient(conn *dbus.Conn) *Client { return &Client{conn: conn, Dest: BusName} }

// Conn is the client's bus connection.
func (c *Client) Conn() *dbus.Conn { return c.conn }

// Close closes the connection if the client opened it.
func (c *Client) Close() error {
	if c == nil || c.conn == nil || !c.own {
		return nil
	}
	return c.conn.Close()
}

func (c *Client) dest() string {
	if c.Dest == "" {
		return BusName
	}
	return c.Dest
}

// call invokes a Manager method; what names the operation in errors.
func (c *Client) call(ctx context.Context, what string, path dbus.ObjectPath, method string, interactive bool, args ...any) (*dbus.Call, error) {
	if c == nil || c.conn == nil {
		return nil, fmt.Errorf("%s: %w: client not connected", what, ErrNoBus)
	}
	var flags dbus.Flags
	if interactive {
		flags = dbus.FlagAllowInteractiveAuthorization
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, interactiveTimeout)
			defer cancel()
		}
	}
	call := c.send(ctx, path, method, flags, args...)
	if call.Err != nil {
		return nil, fromDBusError(what, call.Err)
	}
	return call, nil
}

// send is BusObject.CallWithContext without its flag filter: godbus drops
// ALLOW_INTERACTIVE_AUTHORIZATION from calls it builds, and that flag is how
// a caller tells the agent that polkit may ask for a password.
func (c *Client) send(ctx context.Context, path dbus.ObjectPath, method string, flags dbus.Flags, args ...any) *dbus.Call {
	iface, member := "", method
	if i := strings.LastIndex(method, "."); i >= 0 {
		iface, member = method[:i], method[i+1:]
	}
	msg := &dbus.Message{
		Type:  dbus.TypeMethodCall,
		Flags: flags,
		Headers: map[dbus.HeaderField]dbus.Variant{
			dbus.FieldPath:        dbus.MakeVariant(path),
			dbus.FieldDestination: dbus.MakeVariant(c.dest()),
			dbus.FieldMember:      dbus.MakeVariant(member),
		},
		Body: args,
	}
	if iface != "" {
		msg.Headers[dbus.FieldInterface] = dbus.MakeVariant(iface)
	}
	if len(args) > 0 {
		msg.Headers[dbus.FieldSignature] = dbus.MakeVariant(dbus.SignatureOf(args...))
	}
	return <-c.conn.SendWithContext(ctx, msg, make(chan *dbus.Call, 1)).Done
}

// GetStatus is Manager.GetStatus.
func (c *Client) GetStatus(ctx context.Context) (apitype.Status, error) {
	call, err := c.call(ctx, "get status", ManagerPath, ManagerIface+".GetStatus", false)
	if err != nil {
		return apitype.Status{}, err
	}
	var d map[string]dbus.Variant
	if err := call.Store(&d); err != nil {
		return apitype.Status{}, fmt.Errorf("get status: %w", err)
	}
	return statusFromDict(d)
}

// GetMetrics is Manager.GetMetrics: totals over every job the agent keeps,
// computed by the agent without reading any report file. Keys this client
// does not know are ignored; ones the agent does not send stay empty.
func (c *Client) GetMetrics(ctx context.Context) (apitype.Metrics, error) {
	call, err := c.call(ctx, "get metrics", ManagerPath, ManagerIface+".GetMetrics", false)
	if err != nil {
		return apitype.Metrics{}, err
	}
	var d map[string]dbus.Variant
	if err := call.Store(&d); err != nil {
		return apitype.Metrics{}, fmt.Errorf("get metrics: %w", err)
	}
	return metricsFromDict(d)
}

func metricsFromDict(d map[string]dbus.Variant) (apitype.Metrics, error) {
	m := apitype.NewMetrics()
	summaries := func(v dbus.Variant, put func(k string, s apitype.Summary)) error {
		var in map[string]summaryEntry
		if err := v.Store(&in); err != nil {
			return err
		}
		for k, e := range in {
			put(k, apitype.Summary{Count: int(e.Count), Seconds: e.Seconds})
		}
		return nil
	}
	fields := map[string]func(dbus.Variant) error{
		"jobs": func(v dbus.Variant) error {
			var in map[string]uint32
			if err := v.Store(&in); err != nil {
				return err
			}
			for k, n := range in {
				m.Jobs[jobs.State(k)] = int(n)
			}
			return nil
		},
		"job_seconds": func(v dbus.Variant) error {
			return summaries(v, func(k string, s apitype.Summary) { m.JobSeconds[jobs.State(k)] = s })
		},
		"stage_seconds": func(v dbus.Variant) error {
			return summaries(v, func(k string, s apitype.Summary) { m.StageSeconds[k] = s })
		},
		"jobs_with_stage_times": func(v dbus.Variant) error {
			var n uint32
			err := v.Store(&n)
			m.JobsWithStageTimes = int(n)
			return err
		},
		"converted_bytes": func(v dbus.Variant) error {
			var n uint64
			err := v.Store(&n)
			m.ConvertedBytes = int64(min(n, 1<<63-1))
			return err
		},
	}
	for k, v := range d {
		if f, ok := fields[k]; ok {
			if err := f(v); err != nil {
				return m, fmt.Errorf("get metrics: cannot read %s (%s): %w", k, v.Signature(), err)
			}
		}
	}
	return m, nil
}

// ListJobs returns every job matching f with all its properties, oldest
// first. With many jobs in the history prefer ListJobsPage.
func (c *Client) ListJobs(ctx context.Context, f apitype.Filter) ([]jobs.Job, error) {
	list, _, err := c.ListJobsPage(ctx, f, apitype.Page{OldestFirst: true})
	return list, err
}

// ListJobsPage is Manager.ListJobsPagedEx (ListJobsPaged from an agent
// without it, whose jobs then have no Host): page p of the jobs matching f
// with all their properties, and how many match. p.Limit 0 means all.
func (c *Client) ListJobsPage(ctx context.Context, f apitype.Filter, p apitype.Page) ([]jobs.Job, int, error) {
	if list, total, ok, err := c.listJobsPageEx(ctx, f, p); ok {
		return list, total, err
	}
	call, err := c.call(ctx, "list jobs", ManagerPath, ManagerIface+".ListJobsPaged", false, filterDict(f, p))
	if err != nil {
		return nil, 0, err
	}
	rows, total, err := readRows(call)
	if err != nil {
		return nil, 0, fmt.Errorf("list jobs: %w", err)
	}
	out := make([]jobs.Job, len(rows))
	for i, r := range rows {
		out[i] = r.job()
	}
	return out, int(total), nil
}

// ListJobPaths is Manager.ListJobs: the object paths of page p of the
// jobs matching f.
func (c *Client) ListJobPaths(ctx context.Context, f apitype.Filter, p apitype.Page) ([]dbus.ObjectPath, error) {
	call, err := c.call(ctx, "list jobs", ManagerPath, ManagerIface+".ListJobs", false, filterDict(f, p))
	if err != nil {
		return nil, err
	}
	var paths []dbus.ObjectPath
	if err := call.Store(&paths); err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return paths, nil
}

// GetJob returns job id with all its properties.
func (c *Client) GetJob(ctx context.Context, id string) (jobs.Job, error) {
	what := "get job " + id
	call, err := c.call(ctx, what, ManagerPath, ManagerIface+".GetJob", false, id)
	if err != nil {
		return jobs.Job{}, err
	}
	var p dbus.ObjectPath
	if err := call.Store(&p); err != nil {
		return jobs.Job{}, fmt.Errorf("%s: %w", what, err)
	}
	return c.jobAt(ctx, what, p)
}

// jobAt reads every Job property of the object at p.
func (c *Client) jobAt(ctx context.Context, what string, p dbus.ObjectPath) (jobs.Job, error) {
	call, err := c.call(ctx, what, p, ifaceProperties+".GetAll", false, JobIface)
	if err != nil {
		return jobs.Job{}, err
	}
	var props map[string]dbus.Variant
	if err := call.Store(&props); err != nil {
		return jobs.Job{}, fmt.Errorf("%s: %w", what, err)
	}
	j, err := jobFromProps(props)
	if err != nil {
		return jobs.Job{}, fmt.Errorf("%s: %w", what, err)
	}
	return j, nil
}

// Validate checks a manifest without queueing it; problems are
// "field.path: problem" lines.
func (c *Client) Validate(ctx context.Context, manifest []byte) (bool, []string, error) {
	call, err := c.call(ctx, "validate manifest", ManagerPath, ManagerIface+".Validate", false, string(manifest))
	if err != nil {
		return false, nil, err
	}
	var valid bool
	var problems []string
	if err := call.Store(&valid, &problems); err != nil {
		return false, nil, fmt.Errorf("validate manifest: %w", err)
	}
	return valid, problems, nil
}

// Submit sends a manifest; interactive allows polkit to ask for a password.
// It returns the new jobs (one per VM of a batch) as they were created.
func (c *Client) Submit(ctx context.Context, manifest []byte, o apitype.SubmitOptions, interactive bool) ([]jobs.Job, error) {
	call, err := c.call(ctx, "submit manifest", ManagerPath, ManagerIface+".Submit", interactive, string(manifest), submitDict(o))
	if err != nil {
		return nil, err
	}
	var ids []string
	var paths []dbus.ObjectPath
	if err := call.Store(&ids, &paths); err != nil {
		return nil, fmt.Errorf("submit manifest: %w", err)
	}
	out := make([]jobs.Job, 0, len(paths))
	for _, p := range paths {
		j, err := c.jobAt(ctx, "read submitted job "+string(p), p)
		if err != nil {
			return out, err
		}
		out = append(out, j)
	}
	return out, nil
}

// Cancel cancels job id; interactive allows polkit to ask for a password.
func (c *Client) Cancel(ctx context.Context, id string, interactive bool) error {
	_, err := c.call(ctx, "cancel job "+id, ManagerPath, ManagerIface+".Cancel", interactive, id)
	return err
}

// JobLog reads up to lines journal lines of job id (0: the agent's bound),
// after the journal cursor after when it is not empty, in format "short"
// or "json", and returns them with the cursor to go on from. interactive
// allows polkit to ask for a password (reading another user's job).
func (c *Client) JobLog(ctx context.Context, id string, lines int, after, format string, interactive bool) ([]string, string, error) {
	what := "read the log of job " + id
	call, err := c.call(ctx, what, ManagerPath, ManagerIface+".GetJobLog", interactive, id, uint32(min(max(lines, 0), 1<<31)), after, format)
	if err != nil {
		return nil, "", err
	}
	var got []string
	var cursor string
	if err := call.Store(&got, &cursor); err != nil {
		return nil, "", fmt.Errorf("%s: %w", what, err)
	}
	return got, cursor, nil
}

// ListImages is the disk images under the agent's import directories
// that the caller can read, and those directories.
func (c *Client) ListImages(ctx context.Context) ([]apitype.Image, []string, error) {
	what := "list the images"
	call, err := c.call(ctx, what, ManagerPath, ManagerIface+".ListImages", false)
	if err != nil {
		return nil, nil, err
	}
	var rows []imageRow
	var dirs []string
	if err := call.Store(&rows, &dirs); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	out := make([]apitype.Image, len(rows))
	for i, r := range rows {
		out[i] = apitype.Image{Path: r.Path, Format: r.Format, Size: int64(r.Size), Manifest: r.Manifest}
	}
	return out, dirs, nil
}

// JobReport is GetJobReport: the engine's report of job id as JSON, empty
// while the job has none.
func (c *Client) JobReport(ctx context.Context, id string, interactive bool) ([]byte, error) {
	what := "read the report of job " + id
	call, err := c.call(ctx, what, ManagerPath, ManagerIface+".GetJobReport", interactive, id)
	if err != nil {
		return nil, err
	}
	var rep string
	if err := call.Store(&rep); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return []byte(rep), nil
}

// SetQueue pauses, resumes or drains the agent's queue.
func (c *Client) SetQueue(ctx context.Context, action string, interactive bool) error {
	_, err := c.call(ctx, action+" the queue", ManagerPath, ManagerIface+".SetQueue", interactive, action)
	return err
}

// Reprioritize gives pending job id a new priority.
func (c *Client) Reprioritize(ctx context.Context, id string, priority int, interactive bool) error {
	_, err := c.call(ctx, "reprioritize job "+id, ManagerPath, ManagerIface+".Reprioritize", interactive, id, int32(priority))
	return err
}

// Retry queues failed or cancelled job id again and returns the new job.
func (c *Client) Retry(ctx context.Context, id string, interactive bool) (jobs.Job, error) {
	what := "retry job " + id
	call, err := c.call(ctx, what, ManagerPath, ManagerIface+".Retry", interactive, id)
	if err != nil {
		return jobs.Job{}, err
	}
	var newID string
	var p dbus.ObjectPath
	if err := call.Store(&newID, &p); err != nil {
		return jobs.Job{}, fmt.Errorf("%s: %w", what, err)
	}
	return c.jobAt(ctx, what, p)
}

// Watch subscribes to job signals (before returning, so nothing is missed)
// and delivers events until ctx ends, then closes the channel. Each event
// carries the whole job as last announced: JobNew from InterfacesAdded,
// JobChanged from PropertiesChanged (Changed names the properties). When
// the agent (re)starts, for instance by D-Bus activation after an idle
// exit, Watch compares its objects with what it knew and reports the
// differences the same way, and JobRemoved for a live job the new agent no
// longer has.
// Events keep the bus order; a slow reader delays them but loses none.
func (c *Client) Watch(ctx context.Context) (<-chan apitype.Event, error) {
	if c == nil || c.conn == nil {
		return nil, fmt.Errorf("watch jobs: %w: client not connected", ErrNoBus)
	}
	matches := [][]dbus.MatchOption{
		{dbus.WithMatchSender(c.dest()), dbus.WithMatchObjectPath(ManagerPath),
			dbus.WithMatchInterface(ifaceObjectManager)},
		{dbus.WithMatchSender(c.dest()), dbus.WithMatchPathNamespace(JobPathBase),
			dbus.WithMatchInterface(ifaceProperties), dbus.WithMatchMember("PropertiesChanged")},
		{dbus.WithMatchSender("org.freedesktop.DBus"), dbus.WithMatchInterface("org.freedesktop.DBus"),
			dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, c.dest())},
	}
	for i, m := range matches {
		if err := c.conn.AddMatchSignalContext(ctx, m...); err != nil {
			for _, prev := range matches[:i] {
				c.conn.RemoveMatchSignal(prev...)
			}
			return nil, fromDBusError("watch jobs", err)
		}
	}
	sigs := make(chan *dbus.Signal, 1024)
	c.conn.Signal(sigs)
	cleanup := func() {
		c.conn.RemoveSignal(sigs)
		for _, m := range matches {
			c.conn.RemoveMatchSignal(m...)
		}
	}

	// Seed the cache only after subscribing, so a job created in between
	// shows up in one or the other.
	w := &watcher{c: c, known: map[dbus.ObjectPath]jobs.Job{}}
	if _, err := w.resync(ctx); err != nil {
		cleanup()
		return nil, err
	}

	out := make(chan apitype.Event)
	go func() {
		defer close(out)
		defer cleanup()
		// pending decouples reading the bus from a slow reader: godbus
		// hands signals that do not fit the channel to goroutines, which
		// would reorder them.
		var pending []apitype.Event
		for {
			var send chan<- apitype.Event
			var next apitype.Event
			if len(pending) > 0 {
				send, next = out, pending[0]
			}
			select {
			case <-ctx.Done():
				return
			case sig, ok := <-sigs:
				if !ok {
					return
				}
				pending = append(pending, w.translate(ctx, sig)...)
			case send <- next:
				pending = pending[1:]
			}
		}
	}()
	return out, nil
}

// watcher is the job cache behind one Watch.
type watcher struct {
	c     *Client
	known map[dbus.ObjectPath]jobs.Job
}

// resync reads the jobs that can still change (pending and running) and
// returns the events that turn the cache into them. Finished jobs never
// change again, so the cache does not need them: with months of history
// GetManagedObjects would answer every job ever run (about 1 s for 10,000)
// where this answers the few live ones. A cached job that is no longer
// live has finished (or was removed) while we were not looking: it is read
// once more by its path. (The cache keeps the jobs that finished while
// watched: a job's last properties may follow its final state.)
func (w *watcher) resync(ctx context.Context) ([]apitype.Event, error) {
	call, err := w.c.call(ctx, "watch jobs", ManagerPath, ManagerIface+".ListJobsPaged", false,
		filterDict(apitype.Filter{States: []jobs.State{jobs.Pending, jobs.Running}}, apitype.Page{OldestFirst: true}))
	if err != nil {
		return nil, err
	}
	rows, _, err := readRows(call)
	if err != nil {
		return nil, fmt.Errorf("watch jobs: %w", err)
	}
	now := time.Now()
	var evs []apitype.Event
	seen := map[dbus.ObjectPath]bool{}
	for _, r := range rows {
		seen[r.Path] = true
		evs = append(evs, w.update(r.Path, r.job(), now)...)
	}
	for p, j := range w.known {
		if seen[p] || j.State.Ready() {
			continue
		}
		cur, err := w.c.jobAt(ctx, "watch jobs", p)
		if err != nil {
			delete(w.known, p)
			evs = append(evs, apitype.Event{Kind: apitype.JobRemoved, Job: j, At: time.Now()})
			continue
		}
		evs = append(evs, w.update(p, cur, time.Now())...)
	}
	return evs, nil
}

// update puts j into the cache and returns the event that says so: new,
// changed (with the names of the properties that differ) or none.
func (w *watcher) update(p dbus.ObjectPath, j jobs.Job, at time.Time) []apitype.Event {
	old, had := w.known[p]
	w.known[p] = j
	if !had {
		return []apitype.Event{{Kind: apitype.JobNew, Job: j, At: at}}
	}
	if changed := changedProps(jobProps(old), jobProps(j)); len(changed) > 0 {
		return []apitype.Event{{Kind: apitype.JobChanged, Job: j, Changed: changed, At: at}}
	}
	return nil
}

// translate turns one bus signal into events, keeping the cache current.
func (w *watcher) translate(ctx context.Context, sig *dbus.Signal) []apitype.Event {
	now := time.Now()
	switch sig.Name {
	case "org.freedesktop.DBus.NameOwnerChanged":
		var name, oldOwner, newOwner string
		if dbus.Store(sig.Body, &name, &oldOwner, &newOwner) != nil || name != w.c.dest() || newOwner == "" {
			return nil
		}
		evs, _ := w.resync(ctx) // on failure the next owner change tries again
		return evs
	case ifaceObjectManager + ".InterfacesAdded":
		var p dbus.ObjectPath
		var ifaces map[string]map[string]dbus.Variant
		if sig.Path != ManagerPath || dbus.Store(sig.Body, &p, &ifaces) != nil {
			return nil
		}
		props, ok := ifaces[JobIface]
		if !ok {
			return nil
		}
		j, err := jobFromProps(props)
		if err != nil {
			return nil
		}
		j = w.withDetails(ctx, p, j)
		w.known[p] = j
		return []apitype.Event{{Kind: apitype.JobNew, Job: j, At: now}}
	case ifaceProperties + ".PropertiesChanged":
		var iface string
		var changed map[string]dbus.Variant
		var invalidated []string
		if dbus.Store(sig.Body, &iface, &changed, &invalidated) != nil || iface != JobIface {
			return nil
		}
		j, ok := w.known[sig.Path]
		if !ok {
			return nil
		}
		if applyProps(&j, changed) != nil {
			return nil
		}
		names := make([]string, 0, len(changed)+len(invalidated))
		for k := range changed {
			names = append(names, k)
		}
		for _, k := range invalidated {
			if detailProps[k] {
				j = w.withDetails(ctx, sig.Path, j)
				names = append(names, k)
			}
		}
		w.known[sig.Path] = j
		sortStrings(names)
		return []apitype.Event{{Kind: apitype.JobChanged, Job: j, Changed: names, At: now}}
	}
	return nil
}

// withDetails is j with the details (detailProps) the agent shows this
// caller, which signals never carry; j as it was if they cannot be read.
func (w *watcher) withDetails(ctx context.Context, p dbus.ObjectPath, j jobs.Job) jobs.Job {
	cur, err := w.c.jobAt(ctx, "watch jobs", p)
	if err != nil {
		return j
	}
	j.Manifest, j.Outputs, j.ReportPath, j.Error, j.Warnings = cur.Manifest, cur.Outputs, cur.ReportPath, cur.Error, cur.Warnings
	return j
}

// readRows reads a ListJobsPaged reply.
func readRows(call *dbus.Call) ([]jobRow, uint32, error) {
	if rows, total, ok := rowsOf(call.Body); ok {
		return rows, total, nil
	}
	var rows []jobRow
	var total uint32
	if err := call.Store(&rows, &total); err != nil {
		return nil, 0, err
	}
	return rows, total, nil
}

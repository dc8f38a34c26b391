package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/hyper2kvm/hyper2kvm/agent"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/dbusapi"
)

// The helpers run inside a box (as root), print one JSON document on
// stdout and return the exit status.

func runHelper(name string, args []string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Minute)
	defer cancel()
	var out any
	var err error
	n := 0
	if len(args) > 0 {
		n, _ = strconv.Atoi(args[0])
	}
	switch name {
	case "dispatch":
		out, err = helpDispatch(ctx, n, args[1])
	case "seed":
		out, err = helpSeed(ctx, n)
	case "api":
		out, err = helpAPI(ctx, n)
	case "queue":
		out, err = helpQueue(ctx, n)
	default:
		err = fmt.Errorf("unknown helper %q", name)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(out)
	return 0
}

func tinyManifest(name string) []byte {
	return []byte(fmt.Sprintf(`{"version":"1.0","name":%q,"pipeline":{"load":{"source_type":"raw","source_path":"/srv/src/tiny.raw"},`+
		`"inspect":{"enabled":false},"fix":{"enabled":false},"convert":{"output_format":"qcow2"},"validate":{"enabled":false}}}`, name))
}

// unitEvent is one PropertiesChanged of a unit, with systemd's own
// timestamps of the transitions.
type unitEvent struct {
	unit         string
	active       string
	activeEnter  time.Time // ActiveEnterTimestamp: became active (READY=1 for Type=notify)
	inactiveExit time.Time // InactiveExitTimestamp: left inactive (start began)
	at           time.Time // when the helper received it
}

// watcher follows unit changes and the agent's JobNew signals.
type watcher struct {
	conn   *dbus.Conn
	units  chan unitEvent
	mu     sync.Mutex
	jobNew map[string]time.Time
	newCh  chan string
}

func newWatcher(ctx context.Context) (*watcher, error) {
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return nil, err
	}
	w := &watcher{conn: conn, units: make(chan unitEvent, 100000), jobNew: map[string]time.Time{}, newCh: make(chan string, 100000)}
	if err := conn.AddMatchSignalContext(ctx, dbus.WithMatchInterface("org.freedesktop.DBus.Properties"),
		dbus.WithMatchMember("PropertiesChanged"), dbus.WithMatchPathNamespace("/org/freedesktop/systemd1/unit")); err != nil {
		return nil, err
	}
	if err := conn.AddMatchSignalContext(ctx, dbus.WithMatchInterface(dbusapi.ManagerIface), dbus.WithMatchMember("JobNew")); err != nil {
		return nil, err
	}
	if err := conn.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1").CallWithContext(ctx, "org.freedesktop.systemd1.Manager.Subscribe", 0).Err; err != nil {
		return nil, err
	}
	sig := make(chan *dbus.Signal, 100000)
	conn.Signal(sig)
	go func() {
		for s := range sig {
			at := time.Now()
			switch s.Name {
			case dbusapi.ManagerIface + ".JobNew":
				if len(s.Body) > 0 {
					id, _ := s.Body[0].(string)
					w.mu.Lock()
					w.jobNew[id] = at
					w.mu.Unlock()
					w.newCh <- id
				}
			case "org.freedesktop.DBus.Properties.PropertiesChanged":
				if len(s.Body) < 2 || s.Body[0] != "org.freedesktop.systemd1.Unit" {
					continue
				}
				ch, _ := s.Body[1].(map[string]dbus.Variant)
				ev := unitEvent{unit: agent.UnitFromPath(string(s.Path)), at: at}
				if v, ok := ch["ActiveState"]; ok {
					ev.active, _ = v.Value().(string)
				}
				if v, ok := ch["ActiveEnterTimestamp"].Value().(uint64); ok && v > 0 {
					ev.activeEnter = time.UnixMicro(int64(v))
				}
				if v, ok := ch["InactiveExitTimestamp"].Value().(uint64); ok && v > 0 {
					ev.inactiveExit = time.UnixMicro(int64(v))
				}
				w.units <- ev
			}
		}
	}()
	return w, nil
}

// waitUnit waits for unit (or, with unit "", the first job unit not in
// seen) to be active and then to be down again. It returns the unit and
// its start and active times.
func (w *watcher) waitUnit(ctx context.Context, unit string, seen map[string]bool) (name string, started, active time.Time, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return "", started, active, fmt.Errorf("waiting for %q to be active and done: %w", unit, ctx.Err())
		case ev := <-w.units:
			if unit == "" {
				if !strings.HasPrefix(ev.unit, "hyper2kvm-job-") || seen[ev.unit] || ev.active == "" || ev.active == "inactive" {
					continue
				}
				unit = ev.unit
				seen[unit] = true
			}
			if ev.unit != unit {
				continue
			}
			if !ev.inactiveExit.IsZero() && started.IsZero() {
				started = ev.inactiveExit
			}
			switch ev.active {
			case "active":
				if active.IsZero() {
					active = ev.activeEnter
					if active.IsZero() {
						active = ev.at
					}
				}
			case "inactive", "failed":
				if !active.IsZero() {
					return unit, started, active, nil
				}
				if ev.active == "failed" {
					return unit, started, active, fmt.Errorf("%s failed before it was active", unit)
				}
			}
		}
	}
}

type dispatchResult struct {
	DropActive, DropStarted    Stats
	SubmitJobNew, SubmitActive Stats
	Baseline, BaselineStarted  Stats
}

func helpDispatch(ctx context.Context, n int, which string) (*dispatchResult, error) {
	w, err := newWatcher(ctx)
	if err != nil {
		return nil, err
	}
	client, err := dbusapi.Dial(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := client.GetStatus(ctx); err != nil {
		return nil, err
	}
	res := &dispatchResult{}
	seen := map[string]bool{}
	pause := func() { time.Sleep(150 * time.Millisecond) }

	// Dropped manifests, one at a time.
	var act, st []time.Duration
	tbp := filepath.Join(queueDir, "to_be_processed")
	for i := range n {
		name := fmt.Sprintf("drop-%04d.json", i)
		if err := os.WriteFile(filepath.Join(tbp, "."+name), tinyManifest(fmt.Sprintf("drop-%04d", i)), 0o644); err != nil {
			return nil, err
		}
		t0 := time.Now()
		if err := os.Rename(filepath.Join(tbp, "."+name), filepath.Join(tbp, name)); err != nil {
			return nil, err
		}
		_, started, active, err := w.waitUnit(ctx, "", seen)
		if err != nil {
			return nil, err
		}
		act, st = append(act, active.Sub(t0)), append(st, started.Sub(t0))
		pause()
	}
	res.DropActive, res.DropStarted = Summarise(act), Summarise(st)
	if which == "drop" {
		return res, nil
	}

	// Submitted over D-Bus.
	var jn []time.Duration
	act = nil
	for i := range n {
		t0 := time.Now()
		list, err := client.Submit(ctx, tinyManifest(fmt.Sprintf("sub-%04d", i)), apitype.SubmitOptions{Name: fmt.Sprintf("sub-%04d.json", i)}, false)
		if err != nil {
			return nil, err
		}
		_, _, active, err := w.waitUnit(ctx, jobs.UnitName(list[0].ID), seen)
		if err != nil {
			return nil, err
		}
		w.mu.Lock()
		at, ok := w.jobNew[list[0].ID]
		w.mu.Unlock()
		if !ok {
			return nil, fmt.Errorf("no JobNew for %s", list[0].ID)
		}
		jn, act = append(jn, at.Sub(t0)), append(act, active.Sub(t0))
		pause()
	}
	res.SubmitJobNew, res.SubmitActive = Summarise(jn), Summarise(act)

	// Baseline: systemd starts the same worker on a job directory made
	// here, without the agent.
	sys, err := sd.NewSystemConnectionContext(ctx)
	if err != nil {
		return nil, err
	}
	defer sys.Close()
	act, st = nil, nil
	for i := range n {
		id := fmt.Sprintf("base%04d", i)
		dir := filepath.Join("/srv/bench/jobs", id)
		os.MkdirAll(dir, 0o700)
		spec, _ := json.Marshal(agent.JobSpec{ID: id, Name: id, Claim: id + ".json", OutputDir: filepath.Join("/srv/bench/out", id),
			WorkDir: filepath.Join(dir, "work"), Backend: "native"})
		os.WriteFile(filepath.Join(dir, agent.JobFile), spec, 0o600)
		os.WriteFile(filepath.Join(dir, agent.ManifestFile), tinyManifest(id), 0o600)
		unit := "hyper2kvm-bench-" + id + ".service"
		t0 := time.Now()
		if _, err := sys.StartTransientUnitContext(ctx, unit, "fail", workerProps(dir), nil); err != nil {
			return nil, err
		}
		_, started, active, err := w.waitUnit(ctx, unit, seen)
		if err != nil {
			return nil, err
		}
		act, st = append(act, active.Sub(t0)), append(st, started.Sub(t0))
		pause()
	}
	res.Baseline, res.BaselineStarted = Summarise(act), Summarise(st)
	return res, nil
}

// workerProps are the job unit's settings as the agent gives them.
func workerProps(dir string) []sd.Property {
	type execCommand struct {
		Path          string
		Args          []string
		IgnoreFailure bool
	}
	p := func(name string, v any) sd.Property { return sd.Property{Name: name, Value: dbus.MakeVariant(v)} }
	return []sd.Property{
		p("ExecStart", []execCommand{{"/usr/bin/hyper2kvmd", []string{"/usr/bin/hyper2kvmd", "worker", "--job-dir", dir}, false}}),
		sd.PropType("notify"), sd.PropSlice("hyper2kvm.slice"), p("CollectMode", "inactive-or-failed"),
		p("NotifyAccess", "main"), p("WorkingDirectory", dir), p("PrivateTmp", true), p("PrivateNetwork", true),
		p("PrivateMounts", true), p("ProtectHome", "read-only"), p("ProtectSystem", "full"), p("NoNewPrivileges", true),
		p("ProtectControlGroups", true), p("MemoryAccounting", true), p("MemoryMax", uint64(256<<20)),
		p("TasksAccounting", true), p("TasksMax", uint64(512)),
	}
}

type seedResult struct {
	StateBytes int64
}

// helpSeed writes a job store with n finished jobs, as the agent would
// have after running them (the agent must not be running).
func helpSeed(ctx context.Context, n int) (*seedResult, error) {
	type rec struct {
		jobs.Job
		Claim      string          `json:"claim"`
		VM         json.RawMessage `json:"vm"`
		JobDir     string          `json:"job_dir,omitempty"`
		OutputDir  string          `json:"output_dir,omitempty"`
		FileTime   time.Time       `json:"file_time"`
		DropperUID int64           `json:"dropper_uid"`
		Attempt    int             `json:"attempt,omitempty"`
		UnitResult string          `json:"unit_result,omitempty"`
		Cursor     string          `json:"journal_cursor,omitempty"`
		Invocation string          `json:"invocation_id,omitempty"`
	}
	now := time.Now()
	st := map[string]any{"version": 1, "claims": map[string]any{}}
	recs := map[string]*rec{}
	for i := range n {
		id := fmt.Sprintf("%08x", 0x10000000+i)
		name := fmt.Sprintf("vm-%05d", i)
		created := now.Add(-time.Duration(n-i) * 20 * time.Second)
		day := created.Format("2006-01-02")
		r := &rec{Job: jobs.Job{ID: id, Name: name, Manifest: name + ".json", State: jobs.Completed, Stage: "",
			Progress: 100, StatusText: "validate 100%: done", Unit: jobs.UnitName(id), SubmittedBy: -1,
			CreatedAt: created, StartedAt: created.Add(time.Second), FinishedAt: created.Add(15 * time.Second),
			Outputs:    []string{"/var/lib/hyper2kvm/output/" + day + "/" + id + "/" + name + ".qcow2", "/var/lib/hyper2kvm/output/" + day + "/" + id + "/" + name + ".xml"},
			ReportPath: queueDir + "/processed/" + day + "/" + name + ".json.report.json", BytesDone: 1 << 30, BytesTotal: 1 << 30,
			ConvertedBytes: 1 << 30, StageTimes: []jobs.StageTime{{Stage: "load", Seconds: 0.2}, {Stage: "inspect", Seconds: 1.5},
				{Stage: "fix", Seconds: 3}, {Stage: "convert", Seconds: 9}, {Stage: "validate", Seconds: 0.5}}},
			Claim: name + ".json", VM: tinyManifest(name), JobDir: "/var/lib/hyper2kvm/jobs/" + id,
			OutputDir: "/var/lib/hyper2kvm/output/" + day + "/" + id, FileTime: created, DropperUID: 0, Attempt: 1,
			UnitResult: "success", Cursor: "s=0123456789abcdef0123456789abcdef;i=1a2b;b=0123456789abcdef0123456789abcdef;m=12345678;t=5f0e1d2c3b4a5;x=1234567890abcdef",
			Invocation: "0123456789abcdef0123456789abcdef"}
		if i%10 == 9 {
			r.State, r.Error, r.ErrorStage, r.Outputs, r.UnitResult = jobs.Failed, "qemu-img convert: Could not open source: Permission denied", "convert", nil, "exit-code"
			r.ConvertedBytes, r.StageTimes = 0, r.StageTimes[:4]
			r.ReportPath = queueDir + "/failed/" + day + "/" + name + ".json.error.json"
		}
		recs[id] = r
	}
	st["jobs"] = recs
	data, err := json.MarshalIndent(st, "", " ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile("/var/lib/hyper2kvm/state.json", data, 0o600); err != nil {
		return nil, err
	}
	return &seedResult{StateBytes: int64(len(data))}, nil
}

type call struct {
	Name   string
	Stats  Stats
	Answer string
}

type apiResult struct {
	Calls   []call
	StartMs float64
	RSSKiB  int64
}

func helpAPI(ctx context.Context, n int) (*apiResult, error) {
	res := &apiResult{}
	t0 := time.Now()
	if out, err := runCmd(ctx, "systemctl", "start", "hyper2kvmd.service"); err != nil {
		return nil, fmt.Errorf("start agent: %v: %s", err, out)
	}
	res.StartMs = float64(time.Since(t0).Microseconds()) / 1000
	client, err := dbusapi.Dial(ctx)
	if err != nil {
		return nil, err
	}
	st, err := client.GetStatus(ctx)
	if err != nil {
		return nil, err
	}
	if _, total, err := client.ListJobsPage(ctx, apitype.Filter{}, apitype.Page{Limit: 1}); err != nil || total != n {
		return nil, fmt.Errorf("agent counts %d jobs (%v), want %d (status %+v)", total, err, n, st)
	}
	obj := client.Conn().Object(dbusapi.BusName, dbusapi.ManagerPath)
	measure := func(name string, times int, f func() (string, error)) error {
		var ds []time.Duration
		answer := ""
		for range 5 { // warm up
			if _, err := f(); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		for range times {
			t := time.Now()
			a, err := f()
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			ds = append(ds, time.Since(t))
			answer = a
		}
		res.Calls = append(res.Calls, call{Name: name, Stats: Summarise(ds), Answer: answer})
		return nil
	}
	steps := []struct {
		name  string
		times int
		f     func() (string, error)
	}{
		{"D-Bus Peer.Ping (baseline)", 1000, func() (string, error) {
			return "", obj.CallWithContext(ctx, "org.freedesktop.DBus.Peer.Ping", 0).Err
		}},
		{"D-Bus GetStatus", 1000, func() (string, error) {
			s, err := client.GetStatus(ctx)
			return fmt.Sprintf("%d today", s.ProcessedToday+s.FailedToday), err
		}},
		{"D-Bus ListJobs (paths, default page)", 1000, func() (string, error) {
			p, err := client.ListJobPaths(ctx, apitype.Filter{}, apitype.Page{Limit: apitype.DefaultPageLimit})
			return fmt.Sprintf("%d paths", len(p)), err
		}},
		{"D-Bus ListJobsPaged (default page + total)", 1000, func() (string, error) {
			l, total, err := client.ListJobsPage(ctx, apitype.Filter{}, apitype.Page{Limit: apitype.DefaultPageLimit})
			return fmt.Sprintf("%d of %d jobs", len(l), total), err
		}},
		{"D-Bus ListJobsPaged limit=10", 1000, func() (string, error) {
			l, total, err := client.ListJobsPage(ctx, apitype.Filter{}, apitype.Page{Limit: 10})
			return fmt.Sprintf("%d of %d jobs", len(l), total), err
		}},
		{"D-Bus ListJobsPaged offset 5000", 1000, func() (string, error) {
			l, total, err := client.ListJobsPage(ctx, apitype.Filter{}, apitype.Page{Offset: 5000, Limit: apitype.DefaultPageLimit})
			return fmt.Sprintf("%d of %d jobs", len(l), total), err
		}},
		{"D-Bus ListJobsPaged state=failed", 1000, func() (string, error) {
			l, total, err := client.ListJobsPage(ctx, apitype.Filter{States: []jobs.State{jobs.Failed}}, apitype.Page{Limit: apitype.DefaultPageLimit})
			return fmt.Sprintf("%d of %d jobs", len(l), total), err
		}},
		{"D-Bus ListJobs state=running", 1000, func() (string, error) {
			p, err := client.ListJobPaths(ctx, apitype.Filter{States: []jobs.State{jobs.Running}}, apitype.Page{Limit: apitype.DefaultPageLimit})
			return fmt.Sprintf("%d paths", len(p)), err
		}},
		{"D-Bus GetMetrics", 1000, func() (string, error) {
			m, err := client.GetMetrics(ctx)
			return fmt.Sprintf("%d jobs with stage times", m.JobsWithStageTimes), err
		}},
		// What every list cost before paging: all of them, explicitly.
		{"D-Bus ListJobs limit=0 (all paths)", 100, func() (string, error) {
			p, err := client.ListJobPaths(ctx, apitype.Filter{}, apitype.Page{})
			return fmt.Sprintf("%d paths", len(p)), err
		}},
		{"D-Bus ListJobsPaged limit=0 (all)", 50, func() (string, error) {
			l, err := client.ListJobs(ctx, apitype.Filter{})
			return fmt.Sprintf("%d jobs", len(l)), err
		}},
		// The same page as dictionaries of variants, a(oa{sv}): what
		// ListJobsPaged answered before it answered structs.
		{"D-Bus ListJobsWithProperties (default page, a(oa{sv}))", 1000, func() (string, error) {
			var entries []struct {
				Path  dbus.ObjectPath
				Props map[string]dbus.Variant
			}
			err := obj.CallWithContext(ctx, dbusapi.ManagerIface+".ListJobsWithProperties", 0, map[string]dbus.Variant{}).Store(&entries)
			return fmt.Sprintf("%d jobs", len(entries)), err
		}},
	}
	for _, s := range steps {
		if err := measure(s.name, s.times, s.f); err != nil {
			return nil, err
		}
	}
	// HTTP through the bridge's Unix socket (socket-activated).
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", "/run/hyper2kvm/api.sock")
	}}}
	get := func(path string) func() (string, error) {
		return func() (string, error) {
			resp, err := hc.Get("http://localhost" + path)
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			nb, _ := io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != 200 {
				return "", fmt.Errorf("GET %s: %s", path, resp.Status)
			}
			return fmt.Sprintf("%d KiB", nb>>10), nil
		}
	}
	for _, s := range []struct {
		path  string
		times int
	}{{"/health", 1000}, {"/api/workflow/status", 1000}, {"/api/workflow/jobs", 1000}, {"/api/workflow/jobs?offset=5000&limit=100", 1000}, {"/api/workflow/jobs?limit=10", 1000},
		{"/api/workflow/jobs?status=running", 1000}, {"/api/workflow/jobs?limit=0", 50}, {"/metrics", 1000}} {
		name := "HTTP GET " + s.path
		if s.path == "/health" {
			name += " (baseline)"
		}
		if err := measure(name, s.times, get(s.path)); err != nil {
			return nil, err
		}
	}
	res.RSSKiB, _ = agentRSS(ctx)
	return res, nil
}

func runCmd(ctx context.Context, name string, args ...string) (string, error) {
	cmd := execCommand(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func agentPID(ctx context.Context) (int, error) {
	out, err := runCmd(ctx, "systemctl", "show", "-p", "MainPID", "--value", "hyper2kvmd.service")
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil || pid == 0 {
		return 0, fmt.Errorf("agent not running (%q)", out)
	}
	return pid, nil
}

// agentRSS returns the agent's VmRSS and VmHWM in KiB.
func agentRSS(ctx context.Context) (rss, hwm int64) {
	pid, err := agentPID(ctx)
	if err != nil {
		return 0, 0
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = kb
		case "VmHWM":
			hwm = kb
		}
	}
	return rss, hwm
}

// cpuTime is the CPU time of all of pid's threads (schedstat: ns on CPU).
func cpuTime(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var total int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			v, _ := strconv.ParseInt(f[0], 10, 64)
			total += v
		}
	}
	return time.Duration(total)
}

type queueResult struct {
	Files         int
	MoveSeconds   float64 // the mv of all files (baseline)
	ClaimSeconds  float64 // until to_be_processed/ is empty
	QueuedSeconds float64 // until the agent counts every job
	RSSKiB        int64
	PeakRSSKiB    int64
	IdleCPUms     float64 // over IdleSeconds
	IdleSeconds   float64
	IdleWakeups   int64 // context switches of the agent while idle
	StateBytes    int64
	ChangesBytes  int64 // changes.jsonl: the live store's log since state.json
	Queued        int
	Running       int
}

func helpQueue(ctx context.Context, n int) (*queueResult, error) {
	client, err := dbusapi.Dial(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := client.GetStatus(ctx); err != nil {
		return nil, err
	}
	tbp := filepath.Join(queueDir, "to_be_processed")
	for i := range n {
		name := fmt.Sprintf(".q-%05d.json", i)
		if err := os.WriteFile(filepath.Join(tbp, name), tinyManifest(fmt.Sprintf("q-%05d", i)), 0o644); err != nil {
			return nil, err
		}
	}
	res := &queueResult{Files: n}
	t0 := time.Now()
	for i := range n {
		name := fmt.Sprintf("q-%05d.json", i)
		if err := os.Rename(filepath.Join(tbp, "."+name), filepath.Join(tbp, name)); err != nil {
			return nil, err
		}
	}
	res.MoveSeconds = time.Since(t0).Seconds()
	deadline := time.Now().Add(40 * time.Minute)
	for res.ClaimSeconds == 0 || res.QueuedSeconds == 0 {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("not all %d claimed and queued after 40 minutes", n)
		}
		time.Sleep(50 * time.Millisecond)
		if res.ClaimSeconds == 0 {
			des, _ := os.ReadDir(tbp)
			if len(des) == 0 {
				res.ClaimSeconds = time.Since(t0).Seconds()
			}
		}
		if res.QueuedSeconds == 0 {
			st, err := client.GetStatus(ctx)
			if err == nil && st.QueueDepth+st.ActiveJobs >= n {
				res.QueuedSeconds = time.Since(t0).Seconds()
				res.Queued, res.Running = st.QueueDepth, st.ActiveJobs
			}
		}
	}
	client.Close()
	pid, err := agentPID(ctx)
	if err != nil {
		return nil, err
	}
	// Let the last saves and signals pass, then watch it idle.
	time.Sleep(2 * time.Second)
	res.RSSKiB, res.PeakRSSKiB = agentRSS(ctx)
	c0, w0 := cpuTime(pid), switches(pid)
	res.IdleSeconds = 10
	time.Sleep(10 * time.Second)
	res.IdleCPUms = float64((cpuTime(pid) - c0).Microseconds()) / 1000
	res.IdleWakeups = switches(pid) - w0
	if fi, err := os.Stat("/var/lib/hyper2kvm/state.json"); err == nil {
		res.StateBytes = fi.Size()
	}
	if fi, err := os.Stat("/var/lib/hyper2kvm/changes.jsonl"); err == nil {
		res.ChangesBytes = fi.Size()
	}
	return res, nil
}

// switches counts the context switches of all of pid's threads.
func switches(pid int) int64 {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	var total int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.HasSuffix(k, "voluntary_ctxt_switches") {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				total += n
			}
		}
	}
	return total
}

func execCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, name, args...)
}

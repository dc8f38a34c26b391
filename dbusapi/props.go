package dbusapi

import (
	"fmt"
	"reflect"
	"slices"
	"sort"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// jobProps is the io.hyper2kvm.Agent1.Job property set of j. The types are
// the contract in io.hyper2kvm.Agent1.xml; a unit test holds them to it.
func jobProps(j jobs.Job) map[string]dbus.Variant {
	outputs := j.Outputs
	if outputs == nil {
		outputs = []string{}
	}
	warnings := j.Warnings
	if warnings == nil {
		warnings = []string{}
	}
	// MakeVariant finds each value's signature by reflection; a page of
	// 100 jobs is 2,000 variants, so give the signatures.
	str := func(v string) dbus.Variant { return dbus.MakeVariantWithSignature(v, sigS) }
	return map[string]dbus.Variant{
		"Id":          str(j.ID),
		"Name":        str(j.Name),
		"Batch":       str(j.Batch),
		"Manifest":    str(j.Manifest),
		"State":       str(string(j.State)),
		"Stage":       str(j.Stage),
		"Progress":    dbus.MakeVariantWithSignature(int32(j.Progress), sigI),
		"StatusText":  str(j.StatusText),
		"Unit":        str(j.Unit),
		"SubmittedBy": dbus.MakeVariantWithSignature(j.SubmittedBy, sigX),
		"Priority":    dbus.MakeVariantWithSignature(int32(j.Priority), sigI),
		"CreatedAt":   dbus.MakeVariantWithSignature(usec(j.CreatedAt), sigT),
		"StartedAt":   dbus.MakeVariantWithSignature(usec(j.StartedAt), sigT),
		"FinishedAt":  dbus.MakeVariantWithSignature(usec(j.FinishedAt), sigT),
		"Error":       str(j.Error),
		"ErrorStage":  str(j.ErrorStage),
		"Outputs":     dbus.MakeVariantWithSignature(slices.Clone(outputs), sigAS),
		"ReportPath":  str(j.ReportPath),
		"BytesDone":   dbus.MakeVariantWithSignature(uint64(max(j.BytesDone, 0)), sigT),
		"BytesTotal":  dbus.MakeVariantWithSignature(uint64(max(j.BytesTotal, 0)), sigT),
		"Warnings":    dbus.MakeVariantWithSignature(slices.Clone(warnings), sigAS),
		"Host":        str(j.Host),
		"Attempts":    dbus.MakeVariantWithSignature(attemptsOf(j.Attempts), sigAttempts),
	}
}

// attempt is one Job.Attempts entry on the bus, (issstt): the attempt's
// number, the host it ran on, its error, the stage that failed, when it
// ended and when it was retried (microseconds since the epoch).
type attempt struct {
	Attempt int32
	Host    string
	Error   string
	Stage   string
	EndedAt uint64
	RetryAt uint64
}

func attemptsOf(as []jobs.Attempt) []attempt {
	out := make([]attempt, 0, len(as))
	for _, a := range as {
		out = append(out, attempt{int32(a.Attempt), a.Host, a.Error, a.Stage, usec(a.EndedAt), usec(a.RetryAt)})
	}
	return out
}

// attemptsFrom reads an Attempts value as godbus decodes it: a slice of
// structs arrives as [][]any.
func attemptsFrom(v any) ([]jobs.Attempt, bool) {
	switch l := v.(type) {
	case []attempt:
		var out []jobs.Attempt
		for _, a := range l {
			out = append(out, jobs.Attempt{Attempt: int(a.Attempt), Host: a.Host, Error: a.Error, Stage: a.Stage,
				EndedAt: fromUsec(a.EndedAt), RetryAt: fromUsec(a.RetryAt)})
		}
		return out, true
	case [][]any:
		var out []jobs.Attempt
		for _, f := range l {
			var a attempt
			if len(f) != 6 || !all(as(f[0], &a.Attempt), as(f[1], &a.Host), as(f[2], &a.Error), as(f[3], &a.Stage),
				as(f[4], &a.EndedAt), as(f[5], &a.RetryAt)) {
				return nil, false
			}
			out = append(out, jobs.Attempt{Attempt: int(a.Attempt), Host: a.Host, Error: a.Error, Stage: a.Stage,
				EndedAt: fromUsec(a.EndedAt), RetryAt: fromUsec(a.RetryAt)})
		}
		return out, true
	}
	return nil, false
}

// fromUsec is the inverse of usec.
func fromUsec(n uint64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.UnixMicro(int64(n))
}

// notInRows are the Job properties that came after ListJobsPaged's row
// struct was fixed: its signature never changes, so they are read from the
// job object (Get, GetAll, GetJob) and not from the rows.
var notInRows = map[string]bool{"Warnings": true, "Host": true, "Attempts": true}

// The signatures of the job properties' types.
var (
	sigS  = dbus.SignatureOf("")
	sigI  = dbus.SignatureOf(int32(0))
	sigX  = dbus.SignatureOf(int64(0))
	sigT  = dbus.SignatureOf(uint64(0))
	sigAS = dbus.SignatureOf([]string{})
	// sigAttempts is a(issstt).
	sigAttempts = dbus.SignatureOf([]attempt{})
)

// changedProps lists the properties that differ between old and new, sorted.
func sortStrings(s []string) { sort.Strings(s) }

func changedProps(old, new map[string]dbus.Variant) []string {
	var names []string
	for k, v := range new {
		if o, ok := old[k]; !ok || o.Signature() != v.Signature() || !reflect.DeepEqual(o.Value(), v.Value()) {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	return names
}

// applyProps sets the fields of j named in props; unknown names are ignored
// so that an older client can talk to a newer agent. It reads the values
// with type assertions, not Variant.Store: a page of 100 jobs is 2,000
// properties, and reflection made decoding cost as much as the call.
func applyProps(j *jobs.Job, props map[string]dbus.Variant) error {
	for k, v := range props {
		ok := true
		switch k {
		case "Id":
			j.ID, ok = v.Value().(string)
		case "Name":
			j.Name, ok = v.Value().(string)
		case "Batch":
			j.Batch, ok = v.Value().(string)
		case "Manifest":
			j.Manifest, ok = v.Value().(string)
		case "State":
			var s string
			s, ok = v.Value().(string)
			j.State = jobs.State(s)
		case "Stage":
			j.Stage, ok = v.Value().(string)
		case "Progress":
			var p int32
			p, ok = v.Value().(int32)
			j.Progress = int(p)
		case "StatusText":
			j.StatusText, ok = v.Value().(string)
		case "Unit":
			j.Unit, ok = v.Value().(string)
		case "SubmittedBy":
			j.SubmittedBy, ok = v.Value().(int64)
		case "Priority":
			var p int32
			p, ok = v.Value().(int32)
			j.Priority = int(p)
		case "CreatedAt":
			j.CreatedAt, ok = timeOf(v)
		case "StartedAt":
			j.StartedAt, ok = timeOf(v)
		case "FinishedAt":
			j.FinishedAt, ok = timeOf(v)
		case "Error":
			j.Error, ok = v.Value().(string)
		case "ErrorStage":
			j.ErrorStage, ok = v.Value().(string)
		case "Outputs":
			var o []string
			o, ok = v.Value().([]string)
			j.Outputs = nil
			if len(o) > 0 {
				j.Outputs = o
			}
		case "Warnings":
			var w []string
			w, ok = v.Value().([]string)
			j.Warnings = nil
			if len(w) > 0 {
				j.Warnings = w
			}
		case "Host":
			j.Host, ok = v.Value().(string)
		case "Attempts":
			j.Attempts, ok = attemptsFrom(v.Value())
		case "ReportPath":
			j.ReportPath, ok = v.Value().(string)
		case "BytesDone":
			var n uint64
			n, ok = v.Value().(uint64)
			j.BytesDone = int64(n)
		case "BytesTotal":
			var n uint64
			n, ok = v.Value().(uint64)
			j.BytesTotal = int64(n)
		}
		if !ok {
			return fmt.Errorf("cannot read job property %s: unexpected type %s", k, v.Signature())
		}
	}
	return nil
}

// timeOf reads a t of microseconds since the epoch; 0 is the zero time.
func timeOf(v dbus.Variant) (time.Time, bool) {
	n, ok := v.Value().(uint64)
	if !ok || n == 0 {
		return time.Time{}, ok
	}
	return time.UnixMicro(int64(n)), true
}

func jobFromProps(props map[string]dbus.Variant) (jobs.Job, error) {
	var j jobs.Job
	err := applyProps(&j, props)
	return j, err
}

// usec is t in microseconds since the epoch, 0 for the zero time (the
// systemd convention for "never").
func usec(t time.Time) uint64 {
	if t.IsZero() || t.UnixMicro() <= 0 {
		return 0
	}
	return uint64(t.UnixMicro())
}

func statusDict(s apitype.Status) map[string]dbus.Variant {
	return map[string]dbus.Variant{
		"mode":             dbus.MakeVariant(s.Mode),
		"running":          dbus.MakeVariant(s.Running),
		"queue_depth":      dbus.MakeVariant(uint32(max(s.QueueDepth, 0))),
		"active_jobs":      dbus.MakeVariant(uint32(max(s.ActiveJobs, 0))),
		"processed_today":  dbus.MakeVariant(uint32(max(s.ProcessedToday, 0))),
		"failed_today":     dbus.MakeVariant(uint32(max(s.FailedToday, 0))),
		"cancelled_today":  dbus.MakeVariant(uint32(max(s.CancelledToday, 0))),
		"max_workers":      dbus.MakeVariant(uint32(max(s.MaxWorkers, 0))),
		"uptime_seconds":   dbus.MakeVariant(s.UptimeSeconds),
		"version":          dbus.MakeVariant(s.Version),
		"path_unit_state":  dbus.MakeVariant(s.PathUnitState),
		"path_unit_result": dbus.MakeVariant(s.PathUnitResult),
		"host":             dbus.MakeVariant(s.Host),
		"queue":            dbus.MakeVariant(s.Queue),
	}
}

func statusFromDict(d map[string]dbus.Variant) (apitype.Status, error) {
	var s apitype.Status
	count := func(dst *int) func(dbus.Variant) error {
		return func(v dbus.Variant) error {
			var n uint32
			err := v.Store(&n)
			*dst = int(n)
			return err
		}
	}
	fields := map[string]func(dbus.Variant) error{
		"mode":             func(v dbus.Variant) error { return v.Store(&s.Mode) },
		"running":          func(v dbus.Variant) error { return v.Store(&s.Running) },
		"queue_depth":      count(&s.QueueDepth),
		"active_jobs":      count(&s.ActiveJobs),
		"processed_today":  count(&s.ProcessedToday),
		"failed_today":     count(&s.FailedToday),
		"cancelled_today":  count(&s.CancelledToday),
		"max_workers":      count(&s.MaxWorkers),
		"uptime_seconds":   func(v dbus.Variant) error { return v.Store(&s.UptimeSeconds) },
		"version":          func(v dbus.Variant) error { return v.Store(&s.Version) },
		"path_unit_state":  func(v dbus.Variant) error { return v.Store(&s.PathUnitState) },
		"path_unit_result": func(v dbus.Variant) error { return v.Store(&s.PathUnitResult) },
		"host":             func(v dbus.Variant) error { return v.Store(&s.Host) },
		"queue":            func(v dbus.Variant) error { return v.Store(&s.Queue) },
	}
	for k, v := range d {
		if f, ok := fields[k]; ok {
			if err := f(v); err != nil {
				return s, fmt.Errorf("cannot read status field %s (%s): %w", k, v.Signature(), err)
			}
		}
	}
	return s, nil
}

// filterDict and parseFilter are the ListJobs filter a{sv}: states as,
// batch s, and the page: limit u (absent: apitype.DefaultPageLimit, 0: all),
// offset u, order s ("newest", the default, or "oldest"). Unknown keys are
// refused so that a typo does not list everything.
func filterDict(f apitype.Filter, p apitype.Page) map[string]dbus.Variant {
	d := map[string]dbus.Variant{}
	if len(f.States) > 0 {
		states := make([]string, len(f.States))
		for i, s := range f.States {
			states[i] = string(s)
		}
		d["states"] = dbus.MakeVariant(states)
	}
	if f.Batch != "" {
		d["batch"] = dbus.MakeVariant(f.Batch)
	}
	d["limit"] = dbus.MakeVariant(uint32(max(p.Limit, 0)))
	if p.Offset > 0 {
		d["offset"] = dbus.MakeVariant(uint32(p.Offset))
	}
	if p.OldestFirst {
		d["order"] = dbus.MakeVariant("oldest")
	}
	return d
}

// maxListOffset keeps offsets and limits inside int on every platform.
const maxListOffset = 1 << 30

func parseFilter(d map[string]dbus.Variant) (apitype.Filter, apitype.Page, error) {
	var f apitype.Filter
	p := apitype.Page{Limit: apitype.DefaultPageLimit}
	for k, v := range d {
		switch k {
		case "states":
			var states []string
			if err := v.Store(&states); err != nil || v.Signature().String() != "as" {
				return f, p, apierr.New(apierr.InvalidArgs, "cannot use filter key states: want as, got %s", v.Signature())
			}
			for _, s := range states {
				st := jobs.State(s)
				if !st.Valid() {
					return f, p, apierr.New(apierr.InvalidArgs, "cannot use filter key states: unknown state %q", s)
				}
				f.States = append(f.States, st)
			}
		case "batch":
			if err := v.Store(&f.Batch); err != nil || v.Signature().String() != "s" {
				return f, p, apierr.New(apierr.InvalidArgs, "cannot use filter key batch: want s, got %s", v.Signature())
			}
		case "limit", "offset":
			n, ok := count(v)
			if !ok {
				return f, p, apierr.New(apierr.InvalidArgs, "cannot use filter key %s: want a count (u), got %s %v", k, v.Signature(), v.Value())
			}
			if k == "limit" {
				p.Limit = n
			} else {
				p.Offset = n
			}
		case "order":
			var o string
			if err := v.Store(&o); err != nil || v.Signature().String() != "s" || (o != "newest" && o != "oldest") {
				return f, p, apierr.New(apierr.InvalidArgs, "cannot use filter key order: want \"newest\" or \"oldest\" (s), got %s %v", v.Signature(), v.Value())
			}
			p.OldestFirst = o == "oldest"
		default:
			return f, p, apierr.New(apierr.InvalidArgs, "cannot use filter key %q: known keys are states, batch, limit, offset, order", k)
		}
	}
	return f, p, nil
}

// count reads a non-negative integer of any D-Bus integer type (busctl
// users write "u 10", others "i 10" or "t 10").
func count(v dbus.Variant) (int, bool) {
	var n int64
	switch x := v.Value().(type) {
	case uint32:
		n = int64(x)
	case int32:
		n = int64(x)
	case uint64:
		if x > maxListOffset {
			return 0, false
		}
		n = int64(x)
	case int64:
		n = x
	case uint16:
		n = int64(x)
	case int16:
		n = int64(x)
	case byte:
		n = int64(x)
	default:
		return 0, false
	}
	if n < 0 || n > maxListOffset {
		return 0, false
	}
	return int(n), true
}

// submitDict and parseSubmitOptions are the Submit options a{sv}: name s,
// image s.
func submitDict(o apitype.SubmitOptions) map[string]dbus.Variant {
	d := map[string]dbus.Variant{}
	if o.Name != "" {
		d["name"] = dbus.MakeVariant(o.Name)
	}
	if o.Image != "" {
		d["image"] = dbus.MakeVariant(o.Image)
	}
	return d
}

func parseSubmitOptions(d map[string]dbus.Variant) (apitype.SubmitOptions, error) {
	var o apitype.SubmitOptions
	for k, v := range d {
		switch k {
		case "name":
			if err := v.Store(&o.Name); err != nil || v.Signature().String() != "s" {
				return o, apierr.New(apierr.InvalidArgs, "cannot use submit option name: want s, got %s", v.Signature())
			}
		case "image":
			if err := v.Store(&o.Image); err != nil || v.Signature().String() != "s" {
				return o, apierr.New(apierr.InvalidArgs, "cannot use submit option image: want s, got %s", v.Signature())
			}
		default:
			return o, apierr.New(apierr.InvalidArgs, "cannot use submit option %q: known options are name, image", k)
		}
	}
	return o, nil
}

// jobRow is one job of ListJobsPaged: its object path, then every Job
// property in the order io.hyper2kvm.Agent1.xml declares them, as one
// struct (like systemd's ListUnits), not a dictionary. A page of 100 jobs
// as a(oa{sv}) is 2,000 variants that godbus encodes by reflection, twice
// per reply, and the client decodes one by one: about 5 ms of CPU per
// page, three times what the same values cost as plain struct fields. A
// unit test holds the fields to the XML's properties; a new property
// needs a new list method, as with systemd's ListUnitsByPatterns.
type jobRow struct {
	Path        dbus.ObjectPath
	ID          string
	Name        string
	Batch       string
	Manifest    string
	State       string
	Stage       string
	Progress    int32
	StatusText  string
	Unit        string
	SubmittedBy int64
	Priority    int32
	CreatedAt   uint64
	StartedAt   uint64
	FinishedAt  uint64
	Error       string
	ErrorStage  string
	Outputs     []string
	ReportPath  string
	BytesDone   uint64
	BytesTotal  uint64
}

// rowOf is j at path p as a row; the values are those of jobProps.
func rowOf(p dbus.ObjectPath, j jobs.Job) jobRow {
	outputs := j.Outputs
	if outputs == nil {
		outputs = []string{}
	}
	return jobRow{
		Path: p, ID: j.ID, Name: j.Name, Batch: j.Batch, Manifest: j.Manifest, State: string(j.State), Stage: j.Stage,
		Progress: int32(j.Progress), StatusText: j.StatusText, Unit: j.Unit, SubmittedBy: j.SubmittedBy,
		Priority: int32(j.Priority), CreatedAt: usec(j.CreatedAt), StartedAt: usec(j.StartedAt), FinishedAt: usec(j.FinishedAt),
		Error: j.Error, ErrorStage: j.ErrorStage, Outputs: outputs, ReportPath: j.ReportPath,
		BytesDone: uint64(max(j.BytesDone, 0)), BytesTotal: uint64(max(j.BytesTotal, 0)),
	}
}

// job is the record the row describes; it reads back what rowOf wrote.
func (r jobRow) job() jobs.Job {
	j := jobs.Job{
		ID: r.ID, Name: r.Name, Batch: r.Batch, Manifest: r.Manifest, State: jobs.State(r.State), Stage: r.Stage,
		Progress: int(r.Progress), StatusText: r.StatusText, Unit: r.Unit, SubmittedBy: r.SubmittedBy,
		Priority: int(r.Priority), Error: r.Error, ErrorStage: r.ErrorStage, ReportPath: r.ReportPath,
		BytesDone: int64(r.BytesDone), BytesTotal: int64(r.BytesTotal),
	}
	for _, t := range []struct {
		to *time.Time
		us uint64
	}{{&j.CreatedAt, r.CreatedAt}, {&j.StartedAt, r.StartedAt}, {&j.FinishedAt, r.FinishedAt}} {
		if t.us != 0 {
			*t.to = time.UnixMicro(int64(t.us))
		}
	}
	if len(r.Outputs) > 0 {
		j.Outputs = r.Outputs
	}
	return j
}

// rowsOf reads a decoded (a(o...)u) ListJobsPaged reply with type
// assertions: dbus.Store walks it by reflection, which cost as much as
// decoding the message. ok is false for any other shape.
func rowsOf(body []any) (rows []jobRow, total uint32, ok bool) {
	if len(body) != 2 {
		return nil, 0, false
	}
	list, ok1 := body[0].([][]any)
	total, ok2 := body[1].(uint32)
	if !ok1 || !ok2 {
		return nil, 0, false
	}
	rows = make([]jobRow, 0, len(list))
	for _, f := range list {
		var r jobRow
		if len(f) != 21 || !all(
			as(f[0], &r.Path), as(f[1], &r.ID), as(f[2], &r.Name), as(f[3], &r.Batch), as(f[4], &r.Manifest),
			as(f[5], &r.State), as(f[6], &r.Stage), as(f[7], &r.Progress), as(f[8], &r.StatusText), as(f[9], &r.Unit),
			as(f[10], &r.SubmittedBy), as(f[11], &r.Priority), as(f[12], &r.CreatedAt), as(f[13], &r.StartedAt),
			as(f[14], &r.FinishedAt), as(f[15], &r.Error), as(f[16], &r.ErrorStage), as(f[17], &r.Outputs),
			as(f[18], &r.ReportPath), as(f[19], &r.BytesDone), as(f[20], &r.BytesTotal)) {
			return nil, 0, false
		}
		rows = append(rows, r)
	}
	return rows, total, true
}

// as sets *to to v when v has its type.
func as[T any](v any, to *T) bool {
	t, ok := v.(T)
	if ok {
		*to = t
	}
	return ok
}

func all(oks ...bool) bool {
	for _, ok := range oks {
		if !ok {
			return false
		}
	}
	return true
}

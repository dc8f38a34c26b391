package dbusapi

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/polkit"
)

func TestJobPath(t *testing.T) {
	for _, tc := range []struct{ id, path string }{
		{"abc", JobPathBase + "/abc"},
		{"a1b2", JobPathBase + "/a1b2"},
		{"1abc", JobPathBase + "/_31abc"},
		{"20250101-web01", JobPathBase + "/_320250101_2dweb01"},
		{"a_b", JobPathBase + "/a_5fb"},
		{"a.b/c", JobPathBase + "/a_2eb_2fc"},
		{"", JobPathBase + "/_"},
		{"é", JobPathBase + "/_c3_a9"},
	} {
		p := JobPath(tc.id)
		if string(p) != tc.path {
			t.Errorf("JobPath(%q) = %s, want %s", tc.id, p, tc.path)
		}
		if !p.IsValid() {
			t.Errorf("JobPath(%q) = %s is not a valid object path", tc.id, p)
		}
		if id, err := JobID(p); err != nil || id != tc.id {
			t.Errorf("JobID(%s) = %q, %v; want %q", p, id, err, tc.id)
		}
	}
	for _, bad := range []dbus.ObjectPath{"/other/abc", JobPathBase, JobPathBase + "/", JobPathBase + "/a/b", JobPathBase + "/ab_2", JobPathBase + "/ab_zz"} {
		if id, err := JobID(bad); err == nil {
			t.Errorf("JobID(%s) = %q, want an error", bad, id)
		}
	}
}

func fullJob() jobs.Job {
	return jobs.Job{
		ID: "20250101-web01", Name: "web01", Batch: "b1", Manifest: "web01.json",
		State: jobs.Running, Stage: "convert", Progress: 42, StatusText: "convert 42% 1/2: disk0",
		Unit: "hyper2kvm-job-20250101-web01.service", SubmittedBy: 1000, Priority: 5,
		CreatedAt: time.UnixMicro(1700000000000001), StartedAt: time.UnixMicro(1700000000000002),
		FinishedAt: time.Time{}, Error: "", ErrorStage: "",
		Outputs: []string{"/var/lib/hyper2kvm/output/x/disk0.qcow2"}, ReportPath: "",
		BytesDone: 1 << 30, BytesTotal: 3 << 30,
	}
}

func TestJobPropsRoundTrip(t *testing.T) {
	for _, j := range []jobs.Job{fullJob(), {ID: "x", SubmittedBy: -1, Progress: jobs.ProgressUnknown, State: jobs.Pending}} {
		got, err := jobFromProps(jobProps(j))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, j) {
			t.Errorf("round trip of %+v gave %+v", j, got)
		}
	}
}

// TestJobPropsWrongType: a property of another type than the XML says is
// an error naming it, not a silently zero field; unknown ones are skipped.
func TestJobPropsWrongType(t *testing.T) {
	for _, tc := range []struct {
		props map[string]dbus.Variant
		bad   string
	}{
		{map[string]dbus.Variant{"Progress": dbus.MakeVariant("42")}, "Progress"},
		{map[string]dbus.Variant{"CreatedAt": dbus.MakeVariant(int64(5))}, "CreatedAt"},
		{map[string]dbus.Variant{"Outputs": dbus.MakeVariant("/a")}, "Outputs"},
		{map[string]dbus.Variant{"SubmittedBy": dbus.MakeVariant(uint32(1))}, "SubmittedBy"},
		{map[string]dbus.Variant{"NewInAFutureAgent": dbus.MakeVariant(1), "Id": dbus.MakeVariant("x")}, ""},
	} {
		j, err := jobFromProps(tc.props)
		switch {
		case tc.bad == "" && (err != nil || j.ID != "x"):
			t.Errorf("%v: %+v, %v", tc.props, j, err)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%v: error %v, want one naming %s", tc.props, err, tc.bad)
		}
	}
}

func TestStatusRoundTrip(t *testing.T) {
	s := (&fakeBackend{}).Status()
	got, err := statusFromDict(statusDict(s))
	if err != nil || got != s {
		t.Errorf("status round trip: %+v, %v; want %+v", got, err, s)
	}
}

// TestPropertiesMatchXML holds the Job property set to the XML contract.
func TestPropertiesMatchXML(t *testing.T) {
	_, ji, err := Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	props := jobProps(fullJob())
	var names []string
	for _, p := range ji.Properties {
		names = append(names, p.Name)
		v, ok := props[p.Name]
		if !ok {
			t.Errorf("property %s is in the XML but not exported", p.Name)
			continue
		}
		if v.Signature().String() != p.Type {
			t.Errorf("property %s: exported as %s, XML says %s", p.Name, v.Signature(), p.Type)
		}
		if p.Access != "read" {
			t.Errorf("property %s: access %q, want read", p.Name, p.Access)
		}
	}
	for k := range props {
		if !slices.Contains(names, k) {
			t.Errorf("property %s is exported but not in the XML", k)
		}
	}
}

// signatureOf is the D-Bus in and out signature of a method-table function.
func signatureOf(fn any) (in, out []string) {
	t := reflect.TypeOf(fn)
	for i := 0; i < t.NumIn(); i++ {
		a := t.In(i)
		if a == reflect.TypeOf(dbus.Sender("")) || a == reflect.TypeOf(dbus.Message{}) {
			continue
		}
		in = append(in, dbus.SignatureOfType(a).String())
	}
	for i := 0; i < t.NumOut()-1; i++ {
		out = append(out, dbus.SignatureOfType(t.Out(i)).String())
	}
	return in, out
}

// TestMethodsMatchXML holds the Go method tables to the XML contract, both
// ways: every XML method is implemented with its exact signature, and
// nothing else is exported.
func TestMethodsMatchXML(t *testing.T) {
	mi, ji, err := Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{}
	for _, tc := range []struct {
		iface introspect.Interface
		table map[string]any
	}{{mi, withTokens(s.managerMethods(), s.tokenMethods())}, {ji, s.jobMethods()}} {
		for _, m := range tc.iface.Methods {
			fn, ok := tc.table[m.Name]
			if !ok {
				t.Errorf("%s.%s is in the XML but not implemented", tc.iface.Name, m.Name)
				continue
			}
			var wantIn, wantOut []string
			for _, a := range m.Args {
				if a.Direction == "out" {
					wantOut = append(wantOut, a.Type)
				} else {
					wantIn = append(wantIn, a.Type)
				}
			}
			in, out := signatureOf(fn)
			if !slices.Equal(in, wantIn) || !slices.Equal(out, wantOut) {
				t.Errorf("%s.%s: implemented (%v) -> (%v), XML says (%v) -> (%v)", tc.iface.Name, m.Name, in, out, wantIn, wantOut)
			}
		}
		for name := range tc.table {
			if !slices.ContainsFunc(tc.iface.Methods, func(m introspect.Method) bool { return m.Name == name }) {
				t.Errorf("%s.%s is implemented but not in the XML", tc.iface.Name, name)
			}
		}
	}
}

func introspectOn(t *testing.T, conn *dbus.Conn, path dbus.ObjectPath) introspect.Node {
	t.Helper()
	var s string
	if err := conn.Object(BusName, path).Call(ifaceIntrospect+".Introspect", 0).Store(&s); err != nil {
		t.Fatalf("Introspect %s: %v", path, err)
	}
	var n introspect.Node
	if err := xml.Unmarshal([]byte(s), &n); err != nil {
		t.Fatalf("Introspect %s: not XML: %v\n%s", path, err, s)
	}
	return n
}

func findIface(n introspect.Node, name string) (introspect.Interface, bool) {
	for _, i := range n.Interfaces {
		if i.Name == name {
			return i, true
		}
	}
	return introspect.Interface{}, false
}

// TestIntrospectionOnBus checks what a bus client sees against the XML file.
func TestIntrospectionOnBus(t *testing.T) {
	f := newFixture(t, jobs.Job{ID: "j1", State: jobs.Pending, SubmittedBy: -1})
	mi, ji, _ := Interfaces()

	m := introspectOn(t, f.conn, ManagerPath)
	got, ok := findIface(m, ManagerIface)
	if !ok || !reflect.DeepEqual(got, mi) {
		t.Errorf("manager introspection of %s differs from the XML:\n got %+v\nwant %+v", ManagerIface, got, mi)
	}
	for _, name := range []string{ifaceObjectManager, ifaceIntrospect, ifacePeer, ifaceProperties} {
		if _, ok := findIface(m, name); !ok {
			t.Errorf("manager introspection lacks %s", name)
		}
	}
	if !slices.ContainsFunc(m.Children, func(c introspect.Node) bool { return c.Name == "job" }) {
		t.Errorf("manager introspection lists no job child node: %+v", m.Children)
	}
	dir := introspectOn(t, f.conn, JobPathBase)
	if len(dir.Children) != 1 || dir.Children[0].Name != "j1" {
		t.Errorf("%s lists children %+v, want j1", JobPathBase, dir.Children)
	}
	j := introspectOn(t, f.conn, JobPath("j1"))
	got, ok = findIface(j, JobIface)
	if !ok || !reflect.DeepEqual(got, ji) {
		t.Errorf("job introspection of %s differs from the XML:\n got %+v\nwant %+v", JobIface, got, ji)
	}
	// Peer works on every object.
	if err := f.conn.Object(BusName, JobPath("j1")).Call(ifacePeer+".Ping", 0).Err; err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func TestGetStatus(t *testing.T) {
	f := newFixture(t)
	got, err := f.client.GetStatus(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if want := f.b.Status(); got != want {
		t.Errorf("GetStatus = %+v, want %+v", got, want)
	}
	var d map[string]dbus.Variant
	if err := f.conn.Object(BusName, ManagerPath).Call(ManagerIface+".GetStatus", 0).Store(&d); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range d {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	want := []string{"active_jobs", "cancelled_today", "failed_today", "host", "max_workers", "mode", "path_unit_result", "path_unit_state", "processed_today", "queue", "queue_depth", "running", "uptime_seconds", "version"}
	if !slices.Equal(keys, want) {
		t.Errorf("GetStatus keys = %v, want %v", keys, want)
	}
	if len(f.authz.asks()) != 0 {
		t.Errorf("GetStatus asked polkit: %+v", f.authz.asks())
	}
}

// metricsJobs are finished and live jobs with what GetMetrics sums.
func metricsJobs() []jobs.Job {
	t0 := time.UnixMicro(1700000000000000)
	return []jobs.Job{
		{ID: "c1", State: jobs.Completed, SubmittedBy: -1, StartedAt: t0, FinishedAt: t0.Add(20 * time.Second), ConvertedBytes: 1000,
			StageTimes: []jobs.StageTime{{Stage: "load", Seconds: 1.5}, {Stage: "convert", Seconds: 10}}},
		{ID: "c2", State: jobs.Completed, SubmittedBy: -1, StartedAt: t0, FinishedAt: t0.Add(10 * time.Second), BytesDone: 24},
		{ID: "f1", State: jobs.Failed, SubmittedBy: -1, StartedAt: t0, FinishedAt: t0.Add(time.Second),
			StageTimes: []jobs.StageTime{{Stage: "load", Seconds: 0.25}, {Stage: "extra-stage", Seconds: 3}}},
		{ID: "r1", State: jobs.Running, SubmittedBy: -1, StartedAt: t0, BytesDone: 500},
		{ID: "p1", State: jobs.Pending, SubmittedBy: -1},
	}
}

func TestMetricsRoundTrip(t *testing.T) {
	huge := apitype.MetricsOf(nil)
	huge.ConvertedBytes = 1 << 62
	huge.Jobs[jobs.Completed] = 1 << 20
	for name, m := range map[string]apitype.Metrics{
		"no jobs":   apitype.MetricsOf(nil),
		"some jobs": apitype.MetricsOf(metricsJobs()),
		"large":     huge,
	} {
		got, err := metricsFromDict(metricsDict(m))
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Errorf("%s: metrics round trip: %+v, %v; want %+v", name, got, err, m)
		}
	}
}

// TestMetricsWrongType: a key of another type than docs/DBUS.md says is an
// error naming it; unknown keys are skipped, missing ones stay zero.
func TestMetricsWrongType(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    map[string]dbus.Variant
		bad  string
	}{
		{"jobs as u", map[string]dbus.Variant{"jobs": dbus.MakeVariant(uint32(3))}, "jobs"},
		{"stage_seconds without sums", map[string]dbus.Variant{"stage_seconds": dbus.MakeVariant(map[string]uint32{"load": 1})}, "stage_seconds"},
		{"converted_bytes as s", map[string]dbus.Variant{"converted_bytes": dbus.MakeVariant("12")}, "converted_bytes"},
		{"unknown key", map[string]dbus.Variant{"future": dbus.MakeVariant(int32(1)), "converted_bytes": dbus.MakeVariant(uint64(7))}, ""},
	} {
		m, err := metricsFromDict(tc.d)
		switch {
		case tc.bad == "" && (err != nil || m.ConvertedBytes != 7 || m.Jobs[jobs.Pending] != 0):
			t.Errorf("%s: %+v, %v", tc.name, m, err)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%s: error %v, want one naming %s", tc.name, err, tc.bad)
		}
	}
}

// TestGetMetrics: the totals cross the bus intact, with the documented
// keys and types, and nobody is asked for authorization.
func TestGetMetrics(t *testing.T) {
	f := newFixture(t, metricsJobs()...)
	got, err := f.client.GetMetrics(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	want := apitype.Metrics{
		Jobs: map[jobs.State]int{jobs.Pending: 1, jobs.Running: 1, jobs.Completed: 2, jobs.Failed: 1, jobs.Cancelled: 0},
		JobSeconds: map[jobs.State]apitype.Summary{jobs.Completed: {Count: 2, Seconds: 30}, jobs.Failed: {Count: 1, Seconds: 1},
			jobs.Cancelled: {}},
		StageSeconds: map[string]apitype.Summary{"load": {Count: 2, Seconds: 1.75}, "convert": {Count: 1, Seconds: 10},
			"extra-stage": {Count: 1, Seconds: 3}},
		ConvertedBytes:     1024,
		JobsWithStageTimes: 2,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GetMetrics = %+v\nwant %+v", got, want)
	}
	// The body as decoded, not Store: that rebuilds the variants and
	// loses the struct signatures they came with.
	call := f.conn.Object(BusName, ManagerPath).Call(ManagerIface+".GetMetrics", 0)
	if call.Err != nil {
		t.Fatal(call.Err)
	}
	d, ok := call.Body[0].(map[string]dbus.Variant)
	if !ok || len(call.Body) != 1 {
		t.Fatalf("GetMetrics body = %#v, want one a{sv}", call.Body)
	}
	sigs := map[string]string{}
	for k, v := range d {
		sigs[k] = v.Signature().String()
	}
	wantSigs := map[string]string{"jobs": "a{su}", "job_seconds": "a{s(ud)}", "stage_seconds": "a{s(ud)}",
		"jobs_with_stage_times": "u", "converted_bytes": "t"}
	if !reflect.DeepEqual(sigs, wantSigs) {
		t.Errorf("GetMetrics keys = %v, want %v", sigs, wantSigs)
	}
	if len(f.authz.asks()) != 0 {
		t.Errorf("GetMetrics asked polkit: %+v", f.authz.asks())
	}
}

func TestListAndGetJobs(t *testing.T) {
	a := fullJob()
	b := jobs.Job{ID: "b", Name: "b", State: jobs.Failed, Batch: "b2", SubmittedBy: -1, Error: "cannot read disk"}
	f := newFixture(t, a, b)
	ctx := testCtx(t)

	all, err := f.client.ListJobs(ctx, apitype.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(all, []jobs.Job{a, b}) {
		t.Errorf("ListJobs = %+v, want %+v", all, []jobs.Job{a, b})
	}
	for _, tc := range []struct {
		f    apitype.Filter
		want []string
	}{
		{apitype.Filter{States: []jobs.State{jobs.Failed}}, []string{"b"}},
		{apitype.Filter{States: []jobs.State{jobs.Running, jobs.Failed}}, []string{a.ID, "b"}},
		{apitype.Filter{Batch: "b1"}, []string{a.ID}},
		{apitype.Filter{States: []jobs.State{jobs.Completed}}, nil},
	} {
		got, err := f.client.ListJobs(ctx, tc.f)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, j := range got {
			ids = append(ids, j.ID)
		}
		if !slices.Equal(ids, tc.want) {
			t.Errorf("ListJobs(%+v) = %v, want %v", tc.f, ids, tc.want)
		}
		paths, err := f.client.ListJobPaths(ctx, tc.f, apitype.Page{OldestFirst: true})
		if err != nil {
			t.Fatal(err)
		}
		var wantPaths []dbus.ObjectPath
		for _, id := range tc.want {
			wantPaths = append(wantPaths, JobPath(id))
		}
		if !slices.Equal(paths, wantPaths) {
			t.Errorf("ListJobs paths (%+v) = %v, want %v", tc.f, paths, wantPaths)
		}
	}

	got, err := f.client.GetJob(ctx, a.ID)
	if err != nil || !reflect.DeepEqual(got, a) {
		t.Errorf("GetJob = %+v, %v; want %+v", got, err, a)
	}
	_, err = f.client.GetJob(ctx, "nope")
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Kind != apierr.NoSuchJob || !strings.Contains(ae.Message, "nope") {
		t.Errorf("GetJob(nope) error = %#v, want NoSuchJob naming the id", err)
	}

	// Bad filters are refused by name, over the raw bus too.
	for _, filter := range []map[string]dbus.Variant{
		{"state": dbus.MakeVariant([]string{"failed"})},
		{"states": dbus.MakeVariant([]string{"finished"})},
		{"batch": dbus.MakeVariant(7)},
		{"limit": dbus.MakeVariant(int32(-1))},
		{"limit": dbus.MakeVariant("10")},
		{"offset": dbus.MakeVariant(1.5)},
		{"order": dbus.MakeVariant("random")},
	} {
		err := f.conn.Object(BusName, ManagerPath).Call(ManagerIface+".ListJobs", 0, filter).Err
		var de dbus.Error
		if !errors.As(err, &de) || de.Name != "io.hyper2kvm.Agent1.Error.InvalidArgs" {
			t.Errorf("ListJobs(%v) error = %v, want InvalidArgs", filter, err)
		}
	}
	if len(f.authz.asks()) != 0 {
		t.Errorf("reads asked polkit: %+v", f.authz.asks())
	}
}

// TestListJobsPaging: ListJobs, ListJobsWithProperties and ListJobsPaged
// page newest first, 100 jobs unless the filter says otherwise, and
// ListJobsPaged counts every matching job.
func TestListJobsPaging(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var all []jobs.Job
	for i := range 250 {
		st := jobs.Completed
		if i%5 == 0 {
			st = jobs.Failed
		}
		all = append(all, jobs.Job{ID: fmt.Sprintf("j%03d", i), Name: "vm", State: st, SubmittedBy: -1, CreatedAt: t0.Add(time.Duration(i) * time.Second)})
	}
	f := newFixture(t, all...)
	ctx := testCtx(t)
	obj := f.conn.Object(BusName, ManagerPath)
	ids := func(list []jobs.Job) string {
		if len(list) == 0 {
			return ""
		}
		return list[0].ID + ".." + list[len(list)-1].ID + fmt.Sprintf(" (%d)", len(list))
	}
	tests := []struct {
		name   string
		filter map[string]dbus.Variant
		want   string
		total  uint32
	}{
		{"no filter: the newest 100", nil, "j249..j150 (100)", 250},
		{"limit", map[string]dbus.Variant{"limit": dbus.MakeVariant(uint32(10))}, "j249..j240 (10)", 250},
		{"limit as i", map[string]dbus.Variant{"limit": dbus.MakeVariant(int32(10))}, "j249..j240 (10)", 250},
		{"offset", map[string]dbus.Variant{"limit": dbus.MakeVariant(uint32(10)), "offset": dbus.MakeVariant(uint32(245))}, "j004..j000 (5)", 250},
		{"limit 0 is all", map[string]dbus.Variant{"limit": dbus.MakeVariant(uint32(0))}, "j249..j000 (250)", 250},
		{"oldest first", map[string]dbus.Variant{"order": dbus.MakeVariant("oldest"), "limit": dbus.MakeVariant(uint32(3))}, "j000..j002 (3)", 250},
		{"states, total counts the matches", map[string]dbus.Variant{"states": dbus.MakeVariant([]string{"failed"}), "limit": dbus.MakeVariant(uint32(2))}, "j245..j240 (2)", 50},
		{"past the end", map[string]dbus.Variant{"offset": dbus.MakeVariant(uint32(1000))}, "", 250},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			filter := tc.filter
			if filter == nil {
				filter = map[string]dbus.Variant{}
			}
			var rows []jobRow
			var total uint32
			if err := obj.Call(ManagerIface+".ListJobsPaged", 0, filter).Store(&rows, &total); err != nil {
				t.Fatal(err)
			}
			var list []jobs.Job
			for _, r := range rows {
				j := r.job()
				list = append(list, j)
			}
			if got := ids(list); got != tc.want || total != tc.total {
				t.Errorf("ListJobsPaged = %s, total %d; want %s, total %d", got, total, tc.want, tc.total)
			}
			var paths []dbus.ObjectPath
			if err := obj.Call(ManagerIface+".ListJobs", 0, filter).Store(&paths); err != nil {
				t.Fatal(err)
			}
			if len(paths) != len(list) || len(list) > 0 && paths[0] != JobPath(list[0].ID) {
				t.Errorf("ListJobs gives %d paths (first %v), ListJobsPaged %d jobs", len(paths), paths, len(list))
			}
			var entries []jobEntry
			if err := obj.Call(ManagerIface+".ListJobsWithProperties", 0, filter).Store(&entries); err != nil || len(entries) != len(list) {
				t.Errorf("ListJobsWithProperties gives %d entries (%v), want %d", len(entries), err, len(list))
			}
		})
	}
	// The Go client: ListJobs is every job, oldest first; ListJobsPage pages.
	every, err := f.client.ListJobs(ctx, apitype.Filter{})
	if err != nil || len(every) != 250 || every[0].ID != "j000" {
		t.Errorf("client ListJobs: %d jobs, %v", len(every), err)
	}
	page, total, err := f.client.ListJobsPage(ctx, apitype.Filter{States: []jobs.State{jobs.Completed}}, apitype.Page{Offset: 1, Limit: 2})
	if err != nil || total != 200 || ids(page) != "j248..j247 (2)" {
		t.Errorf("client ListJobsPage = %s, %d, %v", ids(page), total, err)
	}
}

// TestNoSuchJobObject: the one handler under JobPathBase answers only for
// jobs that exist; any other path there is UnknownObject.
func TestNoSuchJobObject(t *testing.T) {
	f := newFixture(t, jobs.Job{ID: "j1", State: jobs.Pending, SubmittedBy: -1}, jobs.Job{ID: "a2", State: jobs.Failed, SubmittedBy: -1})
	for _, c := range []struct {
		path   dbus.ObjectPath
		method string
		args   []any
	}{
		{JobPath("nope"), ifaceProperties + ".GetAll", []any{JobIface}},
		{JobPath("nope"), ifaceProperties + ".Get", []any{JobIface, "State"}},
		{JobPath("nope"), JobIface + ".Cancel", nil},
		{JobPath("nope"), ifaceIntrospect + ".Introspect", nil},
		{JobPath("j1") + "/deeper", ifaceProperties + ".GetAll", []any{JobIface}},
		{JobPathBase, ifaceProperties + ".GetAll", []any{JobIface}},
	} {
		err := f.conn.Object(BusName, c.path).Call(c.method, 0, c.args...).Err
		var de dbus.Error
		if !errors.As(err, &de) || de.Name != "org.freedesktop.DBus.Error.UnknownObject" {
			t.Errorf("%s on %s: %v, want UnknownObject", c.method, c.path, err)
		}
	}
	var st dbus.Variant
	if err := f.conn.Object(BusName, JobPath("a2")).Call(ifaceProperties+".Get", 0, JobIface, "State").Store(&st); err != nil || st.Value() != "failed" {
		t.Errorf("State of a2 = %v, %v", st, err)
	}
	if n := introspectOn(t, f.conn, JobPathBase); len(n.Children) != 2 || n.Children[0].Name != "a2" || n.Children[1].Name != "j1" {
		t.Errorf("%s lists %+v", JobPathBase, n.Children)
	}
}

func TestProperties(t *testing.T) {
	a := fullJob()
	f := newFixture(t, a)
	obj := f.conn.Object(BusName, JobPath(a.ID))
	v, err := obj.GetProperty(JobIface + ".Progress")
	if err != nil || v.Value() != int32(42) {
		t.Errorf("Get Progress = %v, %v; want 42", v, err)
	}
	v, err = obj.GetProperty(JobIface + ".CreatedAt")
	if err != nil || v.Value() != uint64(1700000000000001) {
		t.Errorf("Get CreatedAt = %v, %v", v, err)
	}
	v, err = obj.GetProperty(JobIface + ".FinishedAt")
	if err != nil || v.Value() != uint64(0) {
		t.Errorf("Get FinishedAt = %v, %v; want 0 for unset", v, err)
	}
	err = obj.SetProperty(JobIface+".State", dbus.MakeVariant("completed"))
	var de dbus.Error
	if !errors.As(err, &de) || de.Name != "org.freedesktop.DBus.Error.PropertyReadOnly" {
		t.Errorf("Set State error = %v, want PropertyReadOnly", err)
	}
	_, err = obj.GetProperty(JobIface + ".Nope")
	if !errors.As(err, &de) || de.Name != "org.freedesktop.DBus.Error.UnknownProperty" {
		t.Errorf("Get Nope error = %v, want UnknownProperty", err)
	}
	_, err = obj.GetProperty("org.example.Nope.X")
	if !errors.As(err, &de) || de.Name != "org.freedesktop.DBus.Error.UnknownInterface" {
		t.Errorf("Get on an unknown interface error = %v, want UnknownInterface", err)
	}
}

func TestValidate(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	ok, problems, err := f.client.Validate(ctx, []byte(`{"version":"1.0"}`))
	if err != nil || !ok || len(problems) != 0 {
		t.Errorf("Validate(good) = %v, %v, %v", ok, problems, err)
	}
	ok, problems, err = f.client.Validate(ctx, []byte(`bad`))
	if err != nil || ok || !slices.Equal(problems, []string{"vms[0].source.path: required", "version: must be \"1.0\""}) {
		t.Errorf("Validate(bad) = %v, %v, %v", ok, problems, err)
	}
	if len(f.authz.asks()) != 0 {
		t.Errorf("Validate asked polkit: %+v", f.authz.asks())
	}
}

func TestSubmitAuthorization(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	me := f.conn.Names()[0]
	uid := int64(os.Getuid())

	for _, tc := range []struct {
		name        string
		allow       bool
		authErr     error
		interactive bool
		wantMsg     string // "" means success
	}{
		{"denied", false, nil, false, "cannot submit a manifest: not authorized (polkit action io.hyper2kvm.agent.submit)"},
		{"polkit fails", true, errors.New("polkit is gone"), false, "authorization check failed: polkit is gone (polkit action io.hyper2kvm.agent.submit)"},
		{"challenge", false, polkit.ErrInteractionRequired, false, "interactive authentication required (polkit action io.hyper2kvm.agent.submit)"},
		{"allowed", true, nil, false, ""},
		{"allowed interactive", true, nil, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.authz.set(map[string]bool{polkit.ActionSubmit: tc.allow}, tc.authErr)
			before := len(f.b.Jobs(apitype.Filter{}))
			got, err := f.client.Submit(ctx, []byte(`{}`), apitype.SubmitOptions{Name: "vm.json"}, tc.interactive)
			asks := f.authz.asks()
			if want := []authAsk{{me, polkit.ActionSubmit, tc.interactive}}; !slices.Equal(asks, want) {
				t.Errorf("polkit asked %+v, want %+v", asks, want)
			}
			if tc.wantMsg != "" {
				var ae *apierr.Error
				if !errors.As(err, &ae) || ae.Kind != apierr.AccessDenied || !strings.Contains(ae.Message, tc.wantMsg) {
					t.Fatalf("Submit error = %#v, want AccessDenied containing %q", err, tc.wantMsg)
				}
				if n := len(f.b.Jobs(apitype.Filter{})); n != before {
					t.Errorf("a refused Submit created %d jobs", n-before)
				}
				return
			}
			if err != nil {
				t.Fatalf("Submit: %v", err)
			}
			if len(got) != 1 || got[0].SubmittedBy != uid || got[0].Name != "vm.json" || got[0].State != jobs.Pending {
				t.Errorf("Submit returned %+v, want one pending job named vm.json submitted by uid %d", got, uid)
			}
		})
	}

	t.Run("invalid manifest", func(t *testing.T) {
		f.authz.set(map[string]bool{polkit.ActionSubmit: true}, nil)
		_, err := f.client.Submit(ctx, []byte(`bad`), apitype.SubmitOptions{}, false)
		var ae *apierr.Error
		want := &apierr.Error{Kind: apierr.InvalidManifest, Message: "cannot accept manifest",
			Details: []string{"vms[0].source.path: required", "version: must be \"1.0\""}}
		if !errors.As(err, &ae) || !reflect.DeepEqual(ae, want) {
			t.Errorf("Submit(bad) error = %#v, want %#v", err, want)
		}
		// A plain bus client sees the field paths in the message too.
		err = f.conn.Object(BusName, ManagerPath).Call(ManagerIface+".Submit", 0, "bad", map[string]dbus.Variant{}).Err
		var de dbus.Error
		if !errors.As(err, &de) || de.Name != "io.hyper2kvm.Agent1.Error.InvalidManifest" || len(de.Body) != 1 ||
			de.Error() != "cannot accept manifest\nvms[0].source.path: required\nversion: must be \"1.0\"" {
			t.Errorf("raw Submit(bad) error = %#v", err)
		}
	})
	t.Run("unknown option", func(t *testing.T) {
		err := f.conn.Object(BusName, ManagerPath).Call(ManagerIface+".Submit", 0, "{}",
			map[string]dbus.Variant{"priority": dbus.MakeVariant(1)}).Err
		var de dbus.Error
		if !errors.As(err, &de) || de.Name != "io.hyper2kvm.Agent1.Error.InvalidArgs" || !strings.Contains(de.Error(), `"priority"`) {
			t.Errorf("Submit with an unknown option error = %v, want InvalidArgs naming it", err)
		}
	})
}

func TestCancelAuthorization(t *testing.T) {
	uid := int64(os.Getuid())
	mine := jobs.Job{ID: "mine", State: jobs.Running, SubmittedBy: uid}
	theirs := jobs.Job{ID: "theirs", State: jobs.Running, SubmittedBy: uid + 1}
	dropped := jobs.Job{ID: "dropped", State: jobs.Pending, SubmittedBy: -1}
	done := jobs.Job{ID: "done", State: jobs.Completed, SubmittedBy: uid}
	f := newFixture(t, mine, theirs, dropped, done)
	ctx := testCtx(t)
	me := f.conn.Names()[0]

	for _, tc := range []struct {
		id, action string
		allow      map[string]bool
		viaObject  bool
		wantKind   apierr.Kind // "" means success
	}{
		{"mine", polkit.ActionCancel, map[string]bool{}, false, apierr.AccessDenied},
		{"theirs", polkit.ActionCancelAny, map[string]bool{polkit.ActionCancel: true}, false, apierr.AccessDenied},
		{"dropped", polkit.ActionCancelAny, map[string]bool{polkit.ActionCancel: true}, true, apierr.AccessDenied},
		{"mine", polkit.ActionCancel, map[string]bool{polkit.ActionCancel: true}, false, ""},
		{"theirs", polkit.ActionCancelAny, map[string]bool{polkit.ActionCancelAny: true}, true, ""},
		{"done", polkit.ActionCancel, map[string]bool{polkit.ActionCancel: true}, false, apierr.InvalidState},
		{"nope", "", map[string]bool{polkit.ActionCancelAny: true}, false, apierr.NoSuchJob},
	} {
		f.authz.set(tc.allow, nil)
		var err error
		if tc.viaObject {
			err = fromDBusError("cancel", f.conn.Object(BusName, JobPath(tc.id)).Call(JobIface+".Cancel", 0).Err)
		} else {
			err = f.client.Cancel(ctx, tc.id, false)
		}
		var wantAsks []authAsk
		if tc.action != "" {
			wantAsks = []authAsk{{me, tc.action, false}}
		}
		if asks := f.authz.asks(); !slices.Equal(asks, wantAsks) {
			t.Errorf("cancel %s: polkit asked %+v, want %+v", tc.id, asks, wantAsks)
		}
		if tc.wantKind == "" {
			if err != nil {
				t.Errorf("cancel %s: %v", tc.id, err)
			}
			if j, _ := f.b.Job(tc.id); j.State != jobs.Cancelled {
				t.Errorf("cancel %s: job is %s, want cancelled", tc.id, j.State)
			}
			continue
		}
		if !apierr.Is(err, tc.wantKind) {
			t.Errorf("cancel %s: error %#v, want kind %s", tc.id, err, tc.wantKind)
		}
		if tc.wantKind == apierr.AccessDenied {
			if !strings.Contains(err.Error(), tc.action) {
				t.Errorf("cancel %s: message %q does not name %s", tc.id, err, tc.action)
			}
			if j, _ := f.b.Job(tc.id); j.State == jobs.Cancelled {
				t.Errorf("cancel %s: refused, but the job was cancelled", tc.id)
			}
		}
	}
}

func TestRetry(t *testing.T) {
	failed := jobs.Job{ID: "f", State: jobs.Failed, SubmittedBy: -1}
	f := newFixture(t, failed)
	ctx := testCtx(t)
	f.authz.set(map[string]bool{polkit.ActionSubmit: true, polkit.ActionCancel: true}, nil)
	if _, err := f.client.Retry(ctx, "f", true); !apierr.Is(err, apierr.AccessDenied) || !strings.Contains(err.Error(), polkit.ActionManage) {
		t.Errorf("Retry without manage: %v, want AccessDenied naming %s", err, polkit.ActionManage)
	}
	if asks := f.authz.asks(); len(asks) != 1 || asks[0].action != polkit.ActionManage || !asks[0].interactive {
		t.Errorf("polkit asked %+v, want one interactive manage", asks)
	}
	f.authz.set(map[string]bool{polkit.ActionManage: true}, nil)
	j, err := f.client.Retry(ctx, "f", false)
	if err != nil || j.ID != "f-retry" || j.State != jobs.Pending || j.SubmittedBy != int64(os.Getuid()) {
		t.Errorf("Retry = %+v, %v", j, err)
	}
}

// TestRetryOwnJobIsSubmit: the job's submitter retries under submit (what
// group hyper2kvm holds); manage is not asked.
func TestRetryOwnJobIsSubmit(t *testing.T) {
	mine := jobs.Job{ID: "m", State: jobs.Cancelled, SubmittedBy: int64(os.Getuid())}
	f := newFixture(t, mine)
	ctx := testCtx(t)
	f.authz.set(map[string]bool{polkit.ActionSubmit: true}, nil)
	if j, err := f.client.Retry(ctx, "m", false); err != nil || j.ID != "m-retry" {
		t.Errorf("Retry of one's own job with submit = %+v, %v", j, err)
	}
	if asks := f.authz.asks(); len(asks) != 1 || asks[0].action != polkit.ActionSubmit {
		t.Errorf("polkit asked %+v, want one submit", asks)
	}
	f.authz.set(map[string]bool{}, nil)
	if _, err := f.client.Retry(ctx, "m", false); !apierr.Is(err, apierr.AccessDenied) || !strings.Contains(err.Error(), polkit.ActionSubmit) {
		t.Errorf("Retry of one's own job without submit: %v, want AccessDenied naming %s", err, polkit.ActionSubmit)
	}
}

// TestGetJobLog: the submitter reads their job's log without polkit;
// anyone else but root needs read; the lines and cursor come from the
// backend.
func TestGetJobLog(t *testing.T) {
	me := int64(os.Getuid())
	f := newFixture(t, jobs.Job{ID: "mine", State: jobs.Running, SubmittedBy: me},
		jobs.Job{ID: "theirs", State: jobs.Running, SubmittedBy: me + 1})
	ctx := testCtx(t)
	lines, cursor, err := f.client.JobLog(ctx, "mine", 2, "", "short", false)
	if err != nil || !slices.Equal(lines, []string{"mine two", "mine three"}) || cursor != "c3" {
		t.Errorf("JobLog(mine) = %q, %q, %v", lines, cursor, err)
	}
	if asks := f.authz.asks(); len(asks) != 0 {
		t.Errorf("polkit asked %+v for the submitter", asks)
	}
	if lines, cursor, err := f.client.JobLog(ctx, "mine", 0, "c3", "short", false); err != nil || len(lines) != 0 || cursor != "c3" {
		t.Errorf("JobLog after the cursor = %q, %q, %v", lines, cursor, err)
	}
	if _, _, err := f.client.JobLog(ctx, "nope", 0, "", "short", false); !apierr.Is(err, apierr.NoSuchJob) {
		t.Errorf("JobLog(nope): %v, want NoSuchJob", err)
	}
	_, _, err = f.client.JobLog(ctx, "theirs", 0, "", "short", false)
	if me == 0 {
		if err != nil {
			t.Errorf("root reading another's log: %v", err)
		}
		return
	}
	if !apierr.Is(err, apierr.AccessDenied) || !strings.Contains(err.Error(), polkit.ActionRead) {
		t.Errorf("JobLog(theirs) without read: %v, want AccessDenied naming %s", err, polkit.ActionRead)
	}
	f.authz.set(map[string]bool{polkit.ActionRead: true}, nil)
	if _, _, err := f.client.JobLog(ctx, "theirs", 0, "", "short", false); err != nil {
		t.Errorf("JobLog(theirs) with read: %v", err)
	}
}

func TestNoAgentAndNoBus(t *testing.T) {
	addr := startBus(t)
	c, err := DialAddress(testCtx(t), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.GetStatus(testCtx(t)); !errors.Is(err, ErrNoAgent) {
		t.Errorf("GetStatus with no agent on the bus: %v, want ErrNoAgent", err)
	}
	_, err = DialAddress(testCtx(t), "unix:path="+t.TempDir()+"/nothing")
	if !errors.Is(err, ErrNoBus) {
		t.Errorf("DialAddress to nothing: %v, want ErrNoBus", err)
	}
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path="+t.TempDir()+"/nothing")
	if _, err := Dial(testCtx(t)); !errors.Is(err, ErrNoBus) {
		t.Errorf("Dial with no system bus: %v, want ErrNoBus", err)
	}
}

func TestNameTaken(t *testing.T) {
	f := newFixture(t)
	if _, err := NewServer(connect(t, f.addr), &fakeBackend{}, &fakeAuthz{}); err == nil || !strings.Contains(err.Error(), BusName) {
		t.Errorf("second NewServer: %v, want a refusal naming %s", err, BusName)
	}
	// The first one still answers.
	if _, err := f.client.GetStatus(testCtx(t)); err != nil {
		t.Error(err)
	}
}

func TestErrorMapping(t *testing.T) {
	for _, row := range apierr.Table {
		in := &apierr.Error{Kind: row.Kind, Message: "cannot do " + string(row.Kind)}
		if row.Kind == apierr.InvalidManifest {
			in.Details = []string{"vms[0].name: required", "pipeline.convert.output_format: must be qcow2 or raw"}
		}
		de := toDBusError(in)
		// GLib clients (gdbus, GNOME) accept only a lone string as an error body.
		if _, ok := de.Body[0].(string); !ok || len(de.Body) != 1 {
			t.Errorf("%s: error body %#v, want one string", row.Kind, de.Body)
		}
		if de.Name != row.DBus {
			t.Errorf("%s: D-Bus name %s, want %s", row.Kind, de.Name, row.DBus)
		}
		back := fromDBusError("x", *de)
		if !reflect.DeepEqual(back, error(in)) {
			t.Errorf("%s: round trip gave %#v", row.Kind, back)
		}
	}
	if de := toDBusError(errors.New("disk on fire")); de.Name != "io.hyper2kvm.Agent1.Error.Internal" || de.Error() != "disk on fire" {
		t.Errorf("plain error became %#v", de)
	}
	wrapped := toDBusError(errors.Join(errors.New("context"), apierr.New(apierr.QueueFull, "cannot queue: full")))
	if wrapped.Name != "io.hyper2kvm.Agent1.Error.QueueFull" {
		t.Errorf("wrapped apierr became %s", wrapped.Name)
	}
	for name, want := range map[string]error{
		"org.freedesktop.DBus.Error.ServiceUnknown":                   ErrNoAgent,
		"org.freedesktop.DBus.Error.Spawn.ChildExited":                ErrNoAgent,
		"org.freedesktop.DBus.Error.Disconnected":                     ErrNoBus,
		"org.freedesktop.DBus.Error.AccessDenied":                     nil,
		"org.freedesktop.DBus.Error.InteractiveAuthorizationRequired": nil,
	} {
		err := fromDBusError("x", dbus.Error{Name: name, Body: []any{"msg"}})
		if want != nil && !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
		if want == nil && !apierr.Is(err, apierr.AccessDenied) {
			t.Errorf("%s: %v, want AccessDenied", name, err)
		}
	}
	if err := fromDBusError("x", context.DeadlineExceeded); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: %v", err)
	}
}

// TestInstalledBusFiles checks the files installed beside the binary: the
// bus policy loads in a real dbus-daemon, and the activation file names the
// bus name and the unit.
func TestInstalledBusFiles(t *testing.T) {
	conf, err := filepath.Abs("io.hyper2kvm.Agent1.conf")
	if err != nil {
		t.Fatal(err)
	}
	addr := startBusWith(t, "<include>"+conf+"</include>")
	conn := connect(t, addr)
	srv, err := NewServer(conn, &fakeBackend{}, &fakeAuthz{})
	if err != nil {
		t.Fatalf("NewServer under the installed policy: %v", err)
	}
	defer srv.Close()

	data, err := os.ReadFile("io.hyper2kvm.Agent1.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"[D-BUS Service]", "Name=" + BusName, "User=root", "SystemdService=hyper2kvmd.service", "Exec=/usr/bin/hyper2kvmd agent"} {
		if !slices.Contains(strings.Split(string(data), "\n"), want) {
			t.Errorf("io.hyper2kvm.Agent1.service lacks the line %q", want)
		}
	}
}

// TestDoneWhenBusGoes: a dbus-daemon that dies (as in a restart) closes
// Done, so the agent can exit and be started again.
func TestDoneWhenBusGoes(t *testing.T) {
	addr, daemon := startBusCmd(t, "")
	conn := connect(t, addr)
	srv, err := NewServer(conn, &fakeBackend{}, &fakeAuthz{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	select {
	case <-srv.Done():
		t.Fatal("Done before the connection went away")
	default:
	}
	daemon.Process.Kill()
	select {
	case <-srv.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("Done not closed after the connection went away")
	}
}

// TestRowsOf: a ListJobsPaged reply read back from the wire takes the
// type-assertion path and gives back the jobs that were sent; other shapes
// do not.
func TestRowsOf(t *testing.T) {
	full := fullJob()
	bare := jobs.Job{ID: "b", State: jobs.Pending, SubmittedBy: -1}
	sent := []jobRow{rowOf("/io/hyper2kvm/Agent1/job/a", full), rowOf("/io/hyper2kvm/Agent1/job/b", bare)}
	msg := &dbus.Message{Type: dbus.TypeMethodReply, Headers: map[dbus.HeaderField]dbus.Variant{
		dbus.FieldReplySerial: dbus.MakeVariant(uint32(1)),
		dbus.FieldSignature:   dbus.MakeVariant(dbus.SignatureOf(sent, uint32(0)))}, Body: []any{sent, uint32(7)}}
	var buf bytes.Buffer
	if err := msg.EncodeTo(&buf, binary.LittleEndian); err != nil {
		t.Fatal(err)
	}
	got, err := dbus.DecodeMessage(&buf)
	if err != nil {
		t.Fatal(err)
	}
	rows, total, ok := rowsOf(got.Body)
	if !ok || total != 7 || len(rows) != 2 {
		t.Fatalf("rowsOf = %d rows, total %d, ok %v", len(rows), total, ok)
	}
	for i, want := range []jobs.Job{full, bare} {
		if rows[i].Path != sent[i].Path {
			t.Errorf("row %d path %s, want %s", i, rows[i].Path, sent[i].Path)
		}
		// The row carries what the properties carry: the same job back.
		if j := rows[i].job(); !reflect.DeepEqual(jobProps(j), jobProps(want)) {
			t.Errorf("row %d reads back as %+v, want %+v", i, j, want)
		}
	}
	for _, body := range [][]any{nil, {uint32(1)}, {"x", uint32(1)}, {[][]any{{"notapath", 1}}, uint32(1)}} {
		if _, _, ok := rowsOf(body); ok {
			t.Errorf("rowsOf(%v) accepted it", body)
		}
	}
}

// TestRowMatchesProperties: a ListJobsPaged row is the path, then every
// Job property of the XML in its order, with its type.
func TestRowMatchesProperties(t *testing.T) {
	_, ji, err := Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var props []introspect.Property
	for _, p := range ji.Properties {
		if !notInRows[p.Name] {
			props = append(props, p)
		}
	}
	rt := reflect.TypeOf(jobRow{})
	if rt.NumField() != len(props)+1 || rt.Field(0).Name != "Path" {
		t.Fatalf("jobRow has %d fields, want the path and %d properties", rt.NumField(), len(props))
	}
	for i, p := range props {
		f := rt.Field(i + 1)
		if !strings.EqualFold(f.Name, p.Name) {
			t.Errorf("row field %d is %s, the XML's property %d is %s", i+1, f.Name, i, p.Name)
		}
		if sig := dbus.SignatureOfType(f.Type).String(); sig != p.Type {
			t.Errorf("row field %s is %s, property %s is %s", f.Name, sig, p.Name, p.Type)
		}
	}
}

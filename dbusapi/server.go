package dbusapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// Authorizer decides whether the bus peer sender may perform a polkit action.
// interactive is the caller's ALLOW_INTERACTIVE_AUTHORIZATION flag. Any error
// means deny.
type Authorizer interface {
	Authorize(ctx context.Context, sender, action string, interactive bool) (bool, error)
}

// Server exports a Backend on a bus connection.
type Server struct {
	conn  *dbus.Conn
	b     Backend
	authz Authorizer
	log   *slog.Logger
	name  string // the bus name owned, "" for none

	ctx         context.Context // ends at Close; bounds every backend call
	stop        context.CancelFunc
	unsubscribe func()
	loopDone    chan struct{}
	closeOnce   sync.Once
	last        atomic.Int64 // unix nanoseconds of the last method call

	// parses bounds the manifests parsed at once by Validate and Submit:
	// parsing costs up to about 100 times the manifest in memory, and any
	// local user may call Validate.
	parses chan struct{}

	managerIface, jobIface introspect.Interface
	jobXML                 string // every job object's introspection, built once

	// mu orders the job objects' coming and going with the signals that
	// announce them, so that a client never sees a signal for an object
	// it cannot call.
	mu      sync.Mutex
	objects map[string]*jobObject // by job id
	closed  bool
	// actors are the bridge connections acting for a token's owner, by
	// unique bus name (tokens.go).
	actors map[string]*actor
	// viewers remembers briefly what each caller may see (view.go).
	viewers map[string]cachedViewer
}

// jobObject is one job object: the job as last announced. Its methods
// and properties are served by one handler for the whole subtree under
// JobPathBase (see exportJobs), not by tables per object: with a month of
// history that is 10,000 objects, and per-object tables were most of the
// agent's memory.
type jobObject struct {
	id   string
	path dbus.ObjectPath
	job  jobs.Job
}

// jobObjectIfaces are the interfaces each job object carries, as listed in
// InterfacesAdded/InterfacesRemoved and GetManagedObjects.
var jobObjectIfaces = []string{JobIface, ifaceProperties, ifaceIntrospect, ifacePeer}

// NewServer exports the manager and job objects for b on conn, follows b's
// events to keep job objects and signals current, and then requests BusName.
func NewServer(conn *dbus.Conn, b Backend, authz Authorizer) (*Server, error) {
	return newServer(conn, b, authz, BusName)
}

// newServer is NewServer with the name to own, "" for none (tests that run
// two servers on one bus).
func newServer(conn *dbus.Conn, b Backend, authz Authorizer, name string) (*Server, error) {
	if conn == nil || b == nil || authz == nil {
		return nil, errors.New("cannot start the D-Bus server: conn, backend and authorizer are all required")
	}
	mi, ji, err := Interfaces()
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &Server{
		conn: conn, b: b, authz: authz, log: defaultLogger(),
		ctx: ctx, stop: stop, loopDone: make(chan struct{}),
		managerIface: mi, jobIface: ji, jobXML: introspection([]introspect.Interface{ji}, nil),
		objects: map[string]*jobObject{},
		actors:  map[string]*actor{},
		viewers: map[string]cachedViewer{},
		parses:  make(chan struct{}, maxParses),
	}
	s.last.Store(time.Now().UnixNano())

	// Subscribe before taking the snapshot so that no change falls between
	// the two; replaying a change the snapshot already holds is harmless.
	events, unsubscribe := b.Subscribe()
	s.unsubscribe = unsubscribe
	snapshotAt := time.Now()
	for _, j := range b.Jobs(apitype.Filter{}) {
		s.upsert(j, false)
	}
	go s.follow(events, snapshotAt)
	if err := s.exportJobs(); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.exportManager(); err != nil {
		s.Close()
		return nil, err
	}

	if err := s.own(name); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// own requests the bus name, "" for none; Close releases it.
func (s *Server) own(name string) error {
	if name == "" {
		return nil
	}
	reply, err := s.conn.RequestName(name, dbus.NameFlagDoNotQueue)
	if err != nil {
		return fmt.Errorf("cannot own bus name %s: %w", name, err)
	}
	if reply != dbus.RequestNameReplyPrimaryOwner && reply != dbus.RequestNameReplyAlreadyOwner {
		return fmt.Errorf("cannot own bus name %s: another process has it", name)
	}
	s.name = name
	return nil
}

// defaultLogger writes to stderr without a time stamp: under systemd the
// journal adds its own.
func defaultLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})).With("component", "dbusapi")
}

// LastActivity is when the server last handled a method call; the agent uses
// it for its idle exit.
func (s *Server) LastActivity() time.Time { return time.Unix(0, s.last.Load()) }

// Done is closed when the bus connection is lost (dbus-daemon restarted or
// stopped). The server cannot recover by itself: the agent should exit and
// let systemd (Restart=) or the next D-Bus activation start it again.
func (s *Server) Done() <-chan struct{} { return s.conn.Context().Done() }

func (s *Server) touch() { s.last.Store(time.Now().UnixNano()) }

// Close releases the name and unexports everything.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.stop()
		if s.unsubscribe != nil {
			s.unsubscribe()
		}
		<-s.loopDone
		if s.name != "" {
			if _, rerr := s.conn.ReleaseName(s.name); rerr != nil && s.conn.Connected() {
				err = fmt.Errorf("cannot release bus name %s: %w", s.name, rerr)
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.closed = true
		for _, iface := range []string{JobIface, ifaceProperties, ifaceIntrospect} {
			s.conn.Export(nil, JobPathBase, iface)
		}
		s.objects = map[string]*jobObject{}
		for _, iface := range []string{ManagerIface, ifaceObjectManager, ifaceIntrospect} {
			s.conn.Export(nil, ManagerPath, iface)
		}
	})
	return err
}

// follow turns backend events into object exports and signals, in order.
// Events stamped before the snapshot are already in it and are skipped, so
// that replaying them cannot make a property go back.
func (s *Server) follow(events <-chan apitype.Event, snapshotAt time.Time) {
	defer close(s.loopDone)
	for {
		select {
		case <-s.ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if !ev.At.IsZero() && ev.At.Before(snapshotAt) {
				continue
			}
			s.apply(ev)
		}
	}
}

// apply exports what ev says about a job. The agent never forgets a job
// while it runs (keep_finished prunes at start, before the server exists),
// so every event makes or updates an object.
func (s *Server) apply(ev apitype.Event) {
	s.upsert(ev.Job, true)
}

// upsert makes j's object or updates its properties, announcing the
// change when announce is set (not for the snapshot taken at start).
// It returns the object path.
func (s *Server) upsert(j jobs.Job, announce bool) dbus.ObjectPath {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o, ok := s.objects[j.ID]; ok {
		if announce && !s.closed {
			props := jobProps(j)
			if changed := changedProps(jobProps(o.job), props); len(changed) > 0 {
				// Every local user may receive signals: details change
				// as invalidated, for the allowed to Get.
				d := make(map[string]dbus.Variant, len(changed))
				invalidated := []string{}
				for _, k := range changed {
					if detailProps[k] {
						invalidated = append(invalidated, k)
						continue
					}
					d[k] = props[k]
				}
				s.emit(o.path, ifaceProperties+".PropertiesChanged", JobIface, d, invalidated)
			}
		}
		o.job = j
		return o.path
	}
	o := &jobObject{id: j.ID, path: JobPath(j.ID), job: j}
	if s.closed {
		return o.path
	}
	s.objects[j.ID] = o
	if announce {
		s.emit(ManagerPath, ifaceObjectManager+".InterfacesAdded", o.path, managedIfaces(redacted(j)))
		s.emit(ManagerPath, ManagerIface+".JobNew", j.ID, o.path)
	}
	return o.path
}

// ensure returns the path and announced properties of j's object,
// making it from j if the event stream has not brought it yet. It never
// updates an existing object: properties change only in event order, so a
// watcher never sees a value go back.
func (s *Server) ensure(j jobs.Job) (dbus.ObjectPath, map[string]dbus.Variant) {
	p, known := s.ensureJob(j)
	return p, jobProps(known)
}

// ensureJob is ensure giving the job as its object shows it.
func (s *Server) ensureJob(j jobs.Job) (dbus.ObjectPath, jobs.Job) {
	s.mu.Lock()
	o, ok := s.objects[j.ID]
	var known jobs.Job
	if ok {
		known = o.job
	}
	s.mu.Unlock()
	if ok {
		return o.path, known
	}
	// A concurrent event may make it in between; upsert handles both.
	return s.upsert(j, true), j
}

// ensurePath is ensure without the properties.
func (s *Server) ensurePath(j jobs.Job) dbus.ObjectPath {
	s.mu.Lock()
	o, ok := s.objects[j.ID]
	s.mu.Unlock()
	if ok {
		return o.path
	}
	return s.upsert(j, true)
}

// remove drops j's object after announcing its last property values,
// so a watcher learns the final state even if it only follows properties.
func (s *Server) emit(path dbus.ObjectPath, name string, args ...any) {
	if err := s.conn.Emit(path, name, args...); err != nil {
		s.log.Warn("cannot emit signal", "signal", name, "path", path, "err", err)
	}
}

func managedIfaces(j jobs.Job) map[string]map[string]dbus.Variant {
	return map[string]map[string]dbus.Variant{
		JobIface:        jobProps(j),
		ifaceProperties: {},
		ifaceIntrospect: {},
		ifacePeer:       {},
	}
}

// exportJobs serves every job object: one handler per interface for the
// subtree under JobPathBase, which finds the job by the call's path. A
// path of no job is UnknownObject; JobPathBase itself introspects as the
// list of job objects.
func (s *Server) exportJobs() error {
	tables := map[string]map[string]any{
		JobIface: s.jobMethods(),
		ifaceProperties: {
			"Get": func(msg dbus.Message, iface, name string) (dbus.Variant, *dbus.Error) {
				id, derr := s.jobAt(msg)
				if derr != nil {
					return dbus.Variant{}, derr
				}
				return s.getProp(id, iface, name, senderOf(msg))
			},
			"GetAll": func(msg dbus.Message, iface string) (map[string]dbus.Variant, *dbus.Error) {
				id, derr := s.jobAt(msg)
				if derr != nil {
					return nil, derr
				}
				v, err := s.viewerOf(senderOf(msg))
				if err != nil {
					return nil, toDBusError(err)
				}
				return s.propsOf(id, iface, v)
			},
			"Set": func(msg dbus.Message, iface, name string, _ dbus.Variant) *dbus.Error {
				if _, derr := s.jobAt(msg); derr != nil {
					return derr
				}
				return dbus.NewError("org.freedesktop.DBus.Error.PropertyReadOnly",
					[]any{fmt.Sprintf("property %s of %s is read-only", name, iface)})
			},
		},
		ifaceIntrospect: {
			"Introspect": func(msg dbus.Message) (string, *dbus.Error) {
				if path(msg) == JobPathBase {
					return introspection(nil, s.jobNodes()), nil
				}
				if _, derr := s.jobAt(msg); derr != nil {
					return "", derr
				}
				return s.jobXML, nil
			},
		},
	}
	for iface, t := range tables {
		if err := s.conn.ExportSubtreeMethodTable(t, JobPathBase, iface); err != nil {
			return fmt.Errorf("cannot export %s under %s: %w", iface, JobPathBase, err)
		}
	}
	return nil
}

func path(msg dbus.Message) dbus.ObjectPath {
	p, _ := msg.Headers[dbus.FieldPath].Value().(dbus.ObjectPath)
	return p
}

// jobAt is the id of the job whose object msg calls.
func (s *Server) jobAt(msg dbus.Message) (string, *dbus.Error) {
	p := path(msg)
	id, err := JobID(p)
	if err == nil {
		s.mu.Lock()
		_, ok := s.objects[id]
		s.mu.Unlock()
		if ok {
			return id, nil
		}
	}
	return "", dbus.NewError("org.freedesktop.DBus.Error.UnknownObject", []any{fmt.Sprintf("no job object at %s", p)})
}

// jobNodes are the job objects' names under JobPathBase, sorted.
func (s *Server) jobNodes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.objects))
	for _, o := range s.objects {
		out = append(out, strings.TrimPrefix(string(o.path), JobPathBase+"/"))
	}
	sort.Strings(out)
	return out
}

func (s *Server) getProp(id, iface, name, sender string) (dbus.Variant, *dbus.Error) {
	// Only a detail needs to know who asks (a uid lookup and a polkit
	// check); the rest is for everyone.
	who := viewer{all: true}
	if detailProps[name] {
		var err error
		if who, err = s.viewerOf(sender); err != nil {
			return dbus.Variant{}, toDBusError(err)
		}
	}
	props, derr := s.propsOf(id, iface, who)
	if derr != nil {
		return dbus.Variant{}, derr
	}
	v, ok := props[name]
	if !ok {
		return dbus.Variant{}, dbus.NewError("org.freedesktop.DBus.Error.UnknownProperty",
			[]any{fmt.Sprintf("no property %s on %s", name, iface)})
	}
	return v, nil
}

func (s *Server) propsOf(id, iface string, v viewer) (map[string]dbus.Variant, *dbus.Error) {
	s.touch()
	if iface != JobIface && iface != "" {
		if iface == ifaceProperties || iface == ifaceIntrospect || iface == ifacePeer {
			return map[string]dbus.Variant{}, nil
		}
		return nil, dbus.NewError("org.freedesktop.DBus.Error.UnknownInterface",
			[]any{fmt.Sprintf("no interface %s on job %s", iface, id)})
	}
	s.mu.Lock()
	o, ok := s.objects[id]
	var j jobs.Job
	if ok {
		j = o.job
	}
	s.mu.Unlock()
	if !ok {
		return nil, toDBusError(apierr.New(apierr.NoSuchJob, "cannot find job %s", id))
	}
	return jobProps(v.show(j)), nil
}

// getManagedObjects is org.freedesktop.DBus.ObjectManager.GetManagedObjects.
func (s *Server) getManagedObjects(msg dbus.Message) (map[dbus.ObjectPath]map[string]map[string]dbus.Variant, *dbus.Error) {
	s.touch()
	v, err := s.viewerOf(senderOf(msg))
	if err != nil {
		return nil, toDBusError(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[dbus.ObjectPath]map[string]map[string]dbus.Variant, len(s.objects))
	for _, o := range s.objects {
		out[o.path] = managedIfaces(v.show(o.job))
	}
	return out, nil
}

func (s *Server) exportManager() error {
	tables := map[string]map[string]any{
		ManagerIface:       withTokens(s.managerMethods(), s.tokenMethods()),
		ifaceObjectManager: {"GetManagedObjects": s.getManagedObjects},
		ifaceIntrospect: {"Introspect": func() (string, *dbus.Error) {
			s.mu.Lock()
			children := []string(nil)
			if len(s.objects) > 0 {
				children = []string{"job"}
			}
			s.mu.Unlock()
			return introspection([]introspect.Interface{s.managerIface, objectManagerData}, children), nil
		}},
	}
	for iface, t := range tables {
		if err := s.conn.ExportMethodTable(t, ManagerPath, iface); err != nil {
			return fmt.Errorf("cannot export %s on %s: %w", iface, ManagerPath, err)
		}
	}
	return nil
}

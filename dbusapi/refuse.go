package dbusapi

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
)

// NewRefusingServer owns BusName on conn and answers every Manager method
// (and GetManagedObjects) with cause, at once. An agent that cannot run
// (its configuration file is invalid) serves this instead of exiting:
// a client then learns why within a call, where an agent that exits
// leaves every caller waiting out D-Bus activation's timeout.
//
// The methods keep the signatures of io.hyper2kvm.Agent1.xml, so a
// client's call reaches the refusal rather than failing on its arguments,
// and introspection shows the real interface. There are no job objects.
func NewRefusingServer(conn *dbus.Conn, cause *apierr.Error) (*Server, error) {
	return newRefusingServer(conn, cause, BusName)
}

func newRefusingServer(conn *dbus.Conn, cause *apierr.Error, name string) (*Server, error) {
	if conn == nil || cause == nil {
		return nil, errors.New("cannot start the refusing D-Bus server: conn and cause are both required")
	}
	mi, ji, err := Interfaces()
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &Server{
		conn: conn, log: defaultLogger(),
		ctx: ctx, stop: stop, loopDone: make(chan struct{}),
		managerIface: mi, jobIface: ji,
		objects: map[string]*jobObject{},
		actors:  map[string]*actor{},
		viewers: map[string]cachedViewer{},
		parses:  make(chan struct{}, maxParses),
	}
	close(s.loopDone) // no event loop: nothing to follow
	s.last.Store(time.Now().UnixNano())

	derr := toDBusError(cause)
	tables := map[string]map[string]any{
		ManagerIface:       refuseAll(withTokens(s.managerMethods(), s.tokenMethods()), s.touch, derr),
		ifaceObjectManager: refuseAll(map[string]any{"GetManagedObjects": s.getManagedObjects}, s.touch, derr),
		ifaceIntrospect: {"Introspect": func() (string, *dbus.Error) {
			return introspection([]introspect.Interface{mi, objectManagerData}, nil), nil
		}},
	}
	for iface, t := range tables {
		if err := conn.ExportMethodTable(t, ManagerPath, iface); err != nil {
			s.Close()
			return nil, fmt.Errorf("cannot export %s on %s: %w", iface, ManagerPath, err)
		}
	}
	if err := s.own(name); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// refuseAll is table with every function replaced by one of the same type
// that returns zero values and derr. touch counts each call as activity
// (the idle exit).
func refuseAll(table map[string]any, touch func(), derr *dbus.Error) map[string]any {
	out := make(map[string]any, len(table))
	for name, fn := range table {
		ft := reflect.TypeOf(fn)
		out[name] = reflect.MakeFunc(ft, func([]reflect.Value) []reflect.Value {
			touch()
			res := make([]reflect.Value, ft.NumOut())
			for i := range res {
				res[i] = reflect.Zero(ft.Out(i))
			}
			res[len(res)-1] = reflect.ValueOf(derr)
			return res
		}).Interface()
	}
	return out
}

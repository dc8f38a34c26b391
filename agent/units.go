package agent

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// UnitInfo is what the agent reads of a job unit. Fields a signal did not
// carry are left empty in a UnitChange.
type UnitInfo struct {
	Name        string
	LoadState   string // loaded | not-found | ...
	ActiveState string // activating | active | deactivating | inactive | failed
	SubState    string
	Result      string // success | exit-code | signal | oom-kill | timeout | ...
	StatusText  string
	Invocation  string
	// MainStarted is ExecMainStartTimestampMonotonic: non-zero once the
	// worker process was started.
	MainStarted uint64
	MainStatus  int32
	MainCode    int32
	// InactiveEnter is InactiveEnterTimestampMonotonic: zero on a unit
	// just created (inactive without ever having run), set when a unit
	// that ran became inactive or failed. It is read in the same call as
	// ActiveState, unlike the Service properties.
	InactiveEnter uint64
}

// Gone reports whether systemd no longer knows the unit.
func (u UnitInfo) Gone() bool { return u.LoadState == "not-found" || u.LoadState == "" }

// Finished reports whether the unit is down (inactive or failed).
func (u UnitInfo) Finished() bool {
	return u.ActiveState == "inactive" || u.ActiveState == "failed"
}

// Ran reports whether a finished unit has run: a transient unit is
// created inactive before its start job runs.
func (u UnitInfo) Ran() bool {
	return u.InactiveEnter != 0 || u.ActiveState == "failed" || (u.Result != "" && u.Result != "success")
}

// UnitChange is one PropertiesChanged signal of a job unit, already merged
// into the fields of UnitInfo; Has names the fields it carried.
type UnitChange struct {
	Info UnitInfo
	Has  map[string]bool
}

// Units is the agent's view of systemd: transient job units and their
// signals. The systemd implementation talks to org.freedesktop.systemd1;
// unit tests use a fake.
type Units interface {
	// Start creates and starts a transient unit; it fails when a unit of
	// that name already exists (so a job never runs twice at once).
	Start(ctx context.Context, name string, props []sd.Property) error
	Stop(ctx context.Context, name string) error
	Get(ctx context.Context, name string) (UnitInfo, error)
	// List returns the loaded units named hyper2kvm-job-*.service.
	List(ctx context.Context) ([]UnitInfo, error)
	// Ref keeps a finished unit loaded until Release, so that its result
	// can be read; Release drops that reference.
	Ref(ctx context.Context, name string) error
	Release(ctx context.Context, name string)
	// Changes delivers every PropertiesChanged of job units, in order.
	// It is closed when the connection to systemd is lost.
	Changes() <-chan UnitChange
	Close()
}

// systemState is what Units of the real manager also tell: whether the
// system is shutting down (starting a job unit then fails).
type systemState interface {
	Stopping(ctx context.Context) bool
}

const unitPathPrefix = "/org/freedesktop/systemd1/unit/"

// jobUnitPathPrefix is the escaped object path prefix of every job unit.
var jobUnitPathPrefix = unitPathPrefix + sd.PathBusEscape("hyper2kvm-job-")

// systemdUnits implements Units over the system bus.
type systemdUnits struct {
	conn    *sd.Conn
	sysconn *dbus.Conn // the connection go-systemd calls methods on (holds our unit refs)
	sigconn *dbus.Conn
	out     chan UnitChange
	stop    chan struct{}
	once    sync.Once
}

// DialSystemd connects to the system manager and subscribes to its signals.
func DialSystemd(ctx context.Context) (Units, error) {
	var conns []*dbus.Conn
	conn, err := sd.NewConnection(func() (*dbus.Conn, error) {
		c, err := dbus.ConnectSystemBus()
		if err == nil {
			conns = append(conns, c)
		}
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("cannot connect to systemd: %w", err)
	}
	u := &systemdUnits{conn: conn, sysconn: conns[0], sigconn: conns[1], out: make(chan UnitChange), stop: make(chan struct{})}
	err = u.sigconn.AddMatchSignalContext(ctx,
		dbus.WithMatchInterface("org.freedesktop.DBus.Properties"),
		dbus.WithMatchMember("PropertiesChanged"),
		dbus.WithMatchPathNamespace(dbus.ObjectPath(strings.TrimSuffix(unitPathPrefix, "/"))))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("cannot subscribe to unit changes: %w", err)
	}
	sig := make(chan *dbus.Signal, 512)
	u.sigconn.Signal(sig)
	// systemd sends unit signals only while some client is subscribed.
	if err := u.sigconn.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1").
		CallWithContext(ctx, "org.freedesktop.systemd1.Manager.Subscribe", 0).Err; err != nil {
		conn.Close()
		return nil, fmt.Errorf("cannot subscribe to systemd: %w", err)
	}
	go u.forward(sig)
	return u, nil
}

// forward turns signals into UnitChanges through an unbounded queue, so
// that a busy agent never makes godbus drop a signal.
func (u *systemdUnits) forward(sig chan *dbus.Signal) {
	var queue []UnitChange
	defer close(u.out)
	for {
		var out chan UnitChange
		var next UnitChange
		if len(queue) > 0 {
			out, next = u.out, queue[0]
		}
		select {
		case s, ok := <-sig:
			if !ok {
				return
			}
			if ch, ok := parseSignal(s); ok {
				queue = append(queue, ch)
			}
		case out <- next:
			queue = queue[1:]
		case <-u.stop:
			return
		}
	}
}

func parseSignal(s *dbus.Signal) (UnitChange, bool) {
	if s.Name != "org.freedesktop.DBus.Properties.PropertiesChanged" || !strings.HasPrefix(string(s.Path), jobUnitPathPrefix) || len(s.Body) < 2 {
		return UnitChange{}, false
	}
	changed, ok := s.Body[1].(map[string]dbus.Variant)
	if !ok {
		return UnitChange{}, false
	}
	props := map[string]any{}
	for k, v := range changed {
		props[k] = v.Value()
	}
	ch := UnitChange{Info: infoFrom(UnitFromPath(string(s.Path)), props), Has: map[string]bool{}}
	for k := range props {
		ch.Has[k] = true
	}
	return ch, true
}

func infoFrom(name string, p map[string]any) UnitInfo {
	str := func(k string) string { s, _ := p[k].(string); return s }
	i := UnitInfo{Name: name, LoadState: str("LoadState"), ActiveState: str("ActiveState"), SubState: str("SubState"),
		Result: str("Result"), StatusText: str("StatusText")}
	if v, ok := p["ExecMainStartTimestampMonotonic"].(uint64); ok {
		i.MainStarted = v
	}
	if v, ok := p["InactiveEnterTimestampMonotonic"].(uint64); ok {
		i.InactiveEnter = v
	}
	if v, ok := p["ExecMainStatus"].(int32); ok {
		i.MainStatus = v
	}
	if v, ok := p["ExecMainCode"].(int32); ok {
		i.MainCode = v
	}
	if v, ok := p["InvocationID"].([]byte); ok && len(v) > 0 {
		i.Invocation = fmt.Sprintf("%x", v)
	}
	return i
}

// UnitFromPath is the name of the unit whose systemd object path is p
// (/org/freedesktop/systemd1/unit/ + sd.PathBusEscape(name)).
func UnitFromPath(p string) string {
	s := strings.TrimPrefix(p, unitPathPrefix)
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '_' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func (u *systemdUnits) Start(ctx context.Context, name string, props []sd.Property) error {
	_, err := u.conn.StartTransientUnitContext(ctx, name, "fail", props, nil)
	if err != nil {
		return fmt.Errorf("cannot start %s: %w", name, err)
	}
	return nil
}

func (u *systemdUnits) Stop(ctx context.Context, name string) error {
	if _, err := u.conn.StopUnitContext(ctx, name, "replace", nil); err != nil {
		return fmt.Errorf("cannot stop %s: %w", name, err)
	}
	return nil
}

func (u *systemdUnits) Get(ctx context.Context, name string) (UnitInfo, error) {
	p, err := u.conn.GetUnitPropertiesContext(ctx, name)
	if err != nil {
		var de dbus.Error
		if errors.As(err, &de) && de.Name == "org.freedesktop.systemd1.NoSuchUnit" {
			return UnitInfo{Name: name, LoadState: "not-found"}, nil
		}
		return UnitInfo{}, fmt.Errorf("cannot read %s: %w", name, err)
	}
	if ls, _ := p["LoadState"].(string); ls != "loaded" {
		return infoFrom(name, p), nil
	}
	sp, err := u.conn.GetUnitTypePropertiesContext(ctx, name, "Service")
	if err != nil {
		return UnitInfo{}, fmt.Errorf("cannot read %s: %w", name, err)
	}
	for k, v := range sp {
		p[k] = v
	}
	return infoFrom(name, p), nil
}

func (u *systemdUnits) List(ctx context.Context) ([]UnitInfo, error) {
	st, err := u.conn.ListUnitsByPatternsContext(ctx, nil, []string{"hyper2kvm-job-*.service"})
	if err != nil {
		return nil, fmt.Errorf("cannot list job units: %w", err)
	}
	var out []UnitInfo
	for _, s := range st {
		out = append(out, UnitInfo{Name: s.Name, LoadState: s.LoadState, ActiveState: s.ActiveState, SubState: s.SubState})
	}
	return out, nil
}

func (u *systemdUnits) manager() dbus.BusObject {
	return u.sysconn.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1")
}

func (u *systemdUnits) Ref(ctx context.Context, name string) error {
	if err := u.manager().CallWithContext(ctx, "org.freedesktop.systemd1.Manager.RefUnit", 0, name).Err; err != nil {
		return fmt.Errorf("cannot reference %s: %w", name, err)
	}
	return nil
}

func (u *systemdUnits) Release(ctx context.Context, name string) {
	u.manager().CallWithContext(ctx, "org.freedesktop.systemd1.Manager.UnrefUnit", 0, name)
}

// Stopping reports whether the manager's SystemState is "stopping".
func (u *systemdUnits) Stopping(ctx context.Context) bool {
	var v dbus.Variant
	err := u.manager().CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0,
		"org.freedesktop.systemd1.Manager", "SystemState").Store(&v)
	s, _ := v.Value().(string)
	return err == nil && s == "stopping"
}

func (u *systemdUnits) Changes() <-chan UnitChange { return u.out }

func (u *systemdUnits) Close() {
	u.once.Do(func() {
		close(u.stop)
		u.conn.Close()
	})
}

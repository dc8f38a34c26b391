package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/godbus/dbus/v5"
	"github.com/spf13/cobra"

	"github.com/hyper2kvm/hyper2kvm/agent"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/config"
	"github.com/hyper2kvm/hyper2kvm/agent/templates"
	"github.com/hyper2kvm/hyper2kvm/dbusapi"
	"github.com/hyper2kvm/hyper2kvm/polkit"
)

func newAgentCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the agent: the drop-folder queue, job units and the D-Bus API (hyper2kvmd.service)",
		Long: `Run the agent, normally as hyper2kvmd.service. It watches the drop folder,
runs each job as a transient unit hyper2kvm-job-<id>.service in hyper2kvm.slice,
exports io.hyper2kvm.Agent1 on the system bus and exits when idle.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runAgent(cmd, cfgPath)
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", config.DefaultPath, "configuration file")
	return cmd
}

var errLostBus = errors.New("lost the connection to the system bus")

func runAgent(cmd *cobra.Command, cfgPath string) error {
	cfg, cfgErr := config.Load(cfgPath)
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, lose := context.WithCancelCause(ctx)
	defer lose(nil)
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		if cfgErr != nil {
			return cfgErr
		}
		return fmt.Errorf("cannot connect to the system bus: %w", err)
	}
	defer conn.Close()
	if cfgErr != nil {
		return misconfigured{
			path: cfgPath, cause: cfgErr, conn: conn,
			notify: func(s string) { _, _ = daemon.SdNotify(false, s) },
			// The file's idle_timeout is not known: the default's.
			idle:     config.Default().IdleTimeout.D(),
			poll:     time.Second,
			watchdog: watchdogInterval(),
			log:      os.Stderr,
		}.run(ctx)
	}
	log := agent.NewLogger(os.Stderr, cfg.Verbose)
	var (
		a   *agent.Agent
		srv *dbusapi.Server
	)
	// The bus name is taken only once the agent has recovered and scanned,
	// so the call that activated it is answered from the real state.
	export := func() error {
		srv, err = dbusapi.NewServer(conn, statusBackend{Agent: a, conn: conn}, polkit.New(conn))
		if err != nil {
			return fmt.Errorf("cannot export %s: %w", dbusapi.BusName, err)
		}
		a.SetActivity(srv.LastActivity)
		// Without the bus nobody can reach the agent: stop with an error so
		// that Restart=on-failure brings it back on a new connection, and
		// recovery picks up where this run left off.
		go func() {
			select {
			case <-srv.Done():
				lose(errLostBus)
			case <-ctx.Done():
			}
		}()
		return nil
	}
	a, err = agent.New(cfg, agent.WithLogger(log), agent.WithVersion(version), agent.WithReady(export))
	if err != nil {
		return err
	}
	checkTemplates(log, templates.Default())
	defer a.Close()
	defer func() {
		if srv != nil {
			srv.Close()
		}
	}()
	if err := a.Run(ctx); err != nil {
		return err
	}
	if err := context.Cause(ctx); errors.Is(err, errLostBus) {
		return err
	}
	if ctx.Err() == nil && a.SweepsOnExit() {
		// The agent went idle without a retain section in agent.yaml (with
		// one, the sweep is a daily River job): sweep with the defaults on
		// the way out. Not at start, where it would race the hyperctl gc
		// --dry-run that activated it.
		if _, err := a.Housekeep(ctx, false); err != nil {
			log.Warnf(nil, "%v", err)
		}
	}
	return nil
}

// watchdogInterval is half of WatchdogSec, 0 when systemd watches nothing.
func watchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return 0
	}
	return d / 2
}

// pathUnit is the unit that watches the drop folder.
const pathUnit = "hyper2kvmd.path"

// statusBackend is the agent with GetStatus telling whether the drop
// folder is watched: hyper2kvmd.path failed (say, unit-start-limit-hit)
// means drops sit in to_be_processed unseen until an admin resets it, and
// hyperctl status says so.
type statusBackend struct {
	*agent.Agent
	conn *dbus.Conn
}

func (b statusBackend) Status() apitype.Status {
	s := b.Agent.Status()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.PathUnitState, s.PathUnitResult = unitState(ctx, b.conn, pathUnit)
	return s
}

// unitState reads a unit's ActiveState (its LoadState when it is not
// loaded: "not-found", "masked") and Result from systemd; "" when systemd
// does not answer.
func unitState(ctx context.Context, conn *dbus.Conn, unit string) (state, result string) {
	obj := conn.Object("org.freedesktop.systemd1", unitObjectPath(unit))
	get := func(iface, prop string) string {
		var v dbus.Variant
		if err := obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, iface, prop).Store(&v); err != nil {
			return ""
		}
		s, _ := v.Value().(string)
		return s
	}
	if load := get("org.freedesktop.systemd1.Unit", "LoadState"); load != "loaded" {
		return load, ""
	}
	state = get("org.freedesktop.systemd1.Unit", "ActiveState")
	if i := strings.LastIndexByte(unit, '.'); i >= 0 {
		// The Result of a .path unit is on org.freedesktop.systemd1.Path.
		t := unit[i+1:]
		result = get("org.freedesktop.systemd1."+strings.ToUpper(t[:1])+t[1:], "Result")
	}
	return state, result
}

// unitObjectPath is systemd's object path of unit: every byte but ASCII
// letters and digits escaped as _xx.
func unitObjectPath(unit string) dbus.ObjectPath {
	var b strings.Builder
	b.WriteString("/org/freedesktop/systemd1/unit/")
	for i := 0; i < len(unit); i++ {
		c := unit[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "_%02x", c)
		}
	}
	return dbus.ObjectPath(b.String())
}

// checkTemplates says at start which manifest templates no longer
// validate (a field renamed or a value no longer allowed since the admin
// wrote one), naming the file and the field: a template is only read
// when used, so this is the admin's early warning.
func checkTemplates(log *agent.Logger, lib templates.Library) {
	lines, err := lib.Check()
	if err != nil {
		log.Warnf(nil, "%v", err)
	}
	for _, l := range lines {
		log.Warnf(nil, "%s", l)
	}
}

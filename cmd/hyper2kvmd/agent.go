package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/godbus/dbus/v5"
	"github.com/spf13/cobra"

	"github.com/hyper2kvm/hyper2kvm/agent"
	"github.com/hyper2kvm/hyper2kvm/agent/config"
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
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, lose := context.WithCancelCause(ctx)
	defer lose(nil)
	log := agent.NewLogger(os.Stderr, cfg.Verbose)
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return fmt.Errorf("cannot connect to the system bus: %w", err)
	}
	defer conn.Close()
	var (
		a   *agent.Agent
		srv *dbusapi.Server
	)
	// The bus name is taken only once the agent has recovered and scanned,
	// so the call that activated it is answered from the real state.
	export := func() error {
		srv, err = dbusapi.NewServer(conn, a, polkit.New(conn))
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
	return nil
}

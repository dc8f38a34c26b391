package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/api"
	"github.com/hyper2kvm/hyper2kvm/dbusapi"
)

// bridgeOptions are the flags of "hyper2kvmd bridge".
type bridgeOptions struct {
	listen      []string
	tokenFile   string
	idleTimeout time.Duration
	maxBody     int64
	group       string
	workflowDir string
	allowHosts  []string
}

func newBridgeCmd() *cobra.Command {
	o := bridgeOptions{}
	cmd := &cobra.Command{
		Use:   "bridge",
		Short: "Serve the REST API and the dashboard (hyper2kvm-api.service)",
		Long: `Serve /api/workflow/*, /health, /metrics and the dashboard, mapped onto the
agent's D-Bus API. Under hyper2kvm-api.socket the listening sockets come from
systemd and the bridge exits after --idle-timeout without requests; started by
hand it listens on --listen itself and never exits when idle unless asked to.
Writes need "Authorization: Bearer <token>" with the token from --token-file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runBridge(cmd, o)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.listen, "listen", nil, "address to listen on when not socket-activated: HOST:PORT or /path/of.sock (repeatable; default 127.0.0.1:8080 and /run/hyper2kvm/api.sock)")
	f.StringVar(&o.tokenFile, "token-file", "/etc/hyper2kvm/api.token", "file holding the bearer token that writes must present")
	f.DurationVar(&o.idleTimeout, "idle-timeout", -1, "exit after this long without requests or event streams (0 never; default 60s when socket-activated, never otherwise)")
	f.Int64Var(&o.maxBody, "max-body", api.DefaultMaxBody, "largest request body accepted, in bytes")
	f.StringVar(&o.group, "socket-group", "hyper2kvm", "group of a Unix socket the bridge creates itself")
	f.StringVar(&o.workflowDir, "workflow-dir", "/var/lib/hyper2kvm/manifest-workflow", "the agent's manifest_workflow_dir, for manifest_path in answers")
	f.StringArrayVar(&o.allowHosts, "allow-host", nil, "extra Host header name accepted from loopback clients (repeatable)")
	return cmd
}

func runBridge(cmd *cobra.Command, o bridgeOptions) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	token, err := readToken(o.tokenFile)
	if err != nil {
		// Reads still work; every write answers 403 until the file exists
		// and the bridge restarts.
		slog.Warn("writes are disabled", "err", err)
	}

	listeners, err := activation.Listeners()
	if err != nil {
		return fmt.Errorf("cannot take the sockets from systemd: %w", err)
	}
	activated := len(listeners) > 0
	if !activated {
		addrs := o.listen
		if len(addrs) == 0 {
			addrs = api.DefaultListen
		}
		listeners, err = api.Listen(ctx, addrs, o.group)
		if err != nil {
			return err
		}
	} else if len(o.listen) > 0 {
		slog.Info("socket-activated: ignoring --listen", "listen", o.listen)
	}
	idle := o.idleTimeout
	if idle < 0 {
		idle = 0
		if activated {
			idle = 60 * time.Second
		}
	}

	client := api.NewLazy(api.DialBus)
	defer client.Close()
	srv := api.New(api.Config{
		Client:       client,
		Token:        token,
		Schema:       manifest.Schema(),
		Version:      version,
		MaxBody:      o.maxBody,
		WorkflowDir:  o.workflowDir,
		AllowedHosts: o.allowHosts,
		UserDial:     dialUserToken,
	})

	var addrs []string
	for _, l := range listeners {
		addrs = append(addrs, l.Addr().Network()+":"+l.Addr().String())
	}
	slog.Info("serving", "addresses", strings.Join(addrs, " "), "socket_activated", activated, "idle_timeout", idle, "writes", token != "")
	_, _ = daemon.SdNotify(false, daemon.SdNotifyReady+"\nSTATUS=serving on "+strings.Join(addrs, " "))
	err = api.Serve(ctx, listeners, srv, idle)
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	closeListeners(listeners)
	return err
}

func closeListeners(ls []net.Listener) {
	for _, l := range ls {
		l.Close()
	}
}

// readToken reads the bearer token; surrounding white space is not part of it.
func readToken(path string) (string, error) {
	if path == "" {
		return "", fmt.Errorf("cannot read the token: no --token-file")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read the token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("cannot read the token: %s is empty", path)
	}
	return t, nil
}

// dialUserToken opens an agent connection that acts for the owner of a
// per-user API token: the agent identifies and authorizes its calls as
// that user.
func dialUserToken(ctx context.Context, token string) (api.Client, string, error) {
	c, err := dbusapi.Dial(ctx)
	if err != nil {
		return nil, "", err
	}
	_, user, err := c.ActAs(ctx, token)
	if err != nil {
		c.Close()
		return nil, "", err
	}
	return c, user, nil
}

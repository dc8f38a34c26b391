package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
)

// queueController is a client that can pause, resume and drain the
// agent's queue (the D-Bus client).
type queueController interface {
	SetQueue(ctx context.Context, action string, interactive bool) error
}

// queueCmd is "hyperctl queue pause|resume|drain".
func (a *app) queueCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "queue pause|resume|drain",
		Short: "Pause, resume or drain this host's queue",
		Long: `pause: start no job (dropped files are still claimed and queued).
drain: claim no file either; running jobs finish (for host maintenance).
resume: both again. hyperctl status shows the state. Needs the polkit
action io.hyper2kvm.agent.manage.`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"pause", "resume", "drain"},
		RunE: func(cmd *cobra.Command, args []string) error {
			switch args[0] {
			case "pause", "resume", "drain":
			default:
				return usageError("queue %q: want pause, resume or drain", args[0])
			}
			ctx := cmd.Context()
			c, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			qc, ok := c.(queueController)
			if !ok {
				return fail(exitFailed, "this connection has no queue control")
			}
			if err := qc.SetQueue(ctx, args[0], a.interactive()); err != nil {
				return a.apiError(err, actionManage)
			}
			if !a.jsonOutput() {
				fmt.Fprintf(a.env.stdout, "Queue: %s.\n", map[string]string{"pause": "paused", "resume": "running", "drain": "draining"}[args[0]])
			}
			return nil
		},
	}
}

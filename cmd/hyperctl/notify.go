package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
)

// notifier is a client that can ask the agent for a test webhook (the
// D-Bus client).
type notifier interface {
	NotifyTest(ctx context.Context, interactive bool) ([]string, error)
}

// notifyCmd is "hyperctl notify test".
func (a *app) notifyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "notify",
		Short: "Webhooks: send a test delivery",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "test",
		Short: "Send a sample delivery to every webhook of agent.yaml",
		Long: `Queue a sample delivery (event "test", a made-up completed job) to every
webhook in notify.webhooks of agent.yaml, signed as any delivery. It is
sent and retried like any delivery; each attempt, with the HTTP status, is
in the agent's journal (journalctl -u hyper2kvmd.service). Needs the polkit
action io.hyper2kvm.agent.manage.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			n, ok := c.(notifier)
			if !ok {
				return fail(exitFailed, "this connection cannot send test webhooks")
			}
			ids, err := n.NotifyTest(ctx, a.interactive())
			if err != nil {
				return a.apiError(err, actionManage)
			}
			if a.jsonOutput() {
				if ids == nil {
					ids = []string{}
				}
				if err := writeJSON(a.env.stdout, map[string]any{"deliveries": ids}); err != nil {
					return fail(exitFailed, "cannot write output: %w", err)
				}
				return nil
			}
			for _, id := range ids {
				fmt.Fprintf(a.env.stdout, "Queued test delivery %s.\n", id)
			}
			fmt.Fprintln(a.env.stdout, "Each attempt is in the agent's journal: journalctl -u hyper2kvmd.service")
			return nil
		},
	})
	return cmd
}

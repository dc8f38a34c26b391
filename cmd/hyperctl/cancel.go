package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// cancelCmd is "hyperctl cancel ID".
func (a *app) cancelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a pending or running job",
		Long: `Cancel a job. Cancelling your own job needs the polkit action
io.hyper2kvm.agent.cancel, anybody's job io.hyper2kvm.agent.cancel-any.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			id, err := a.resolve(ctx, c, args[0], onlyOfName)
			if err != nil {
				return a.apiError(err, "")
			}
			if err := c.Cancel(ctx, id, a.interactive()); err != nil {
				return a.apiError(err, actionCancel)
			}
			if !a.jsonOutput() {
				fmt.Fprintf(a.env.stdout, "Cancelled job %s.\n", id)
			}
			return nil
		},
	}
}

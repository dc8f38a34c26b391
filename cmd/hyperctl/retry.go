package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// retryCmd is "hyperctl retry ID".
func (a *app) retryCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "retry ID",
		Short: "Run a failed or cancelled job again",
		Long: `Queue a failed or cancelled job again as a new job with the same manifest.
Your own job needs the polkit action io.hyper2kvm.agent.submit (group
hyper2kvm holds it); another user's needs io.hyper2kvm.agent.manage. The
new job runs as the original job's submitter.`,
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
			j, err := c.Retry(ctx, id, a.interactive())
			if err != nil {
				return a.apiError(err, actionManage)
			}
			if a.jsonOutput() {
				return writeJSON(a.env.stdout, viewOf(j))
			}
			fmt.Fprintf(a.env.stdout, "Job %s queued again as %s.\n", id, j.ID)
			return nil
		},
	}
}

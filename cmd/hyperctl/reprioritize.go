package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"
)

// reprioritizer is a client that can change a pending job's priority (the
// D-Bus client; a client without it says so).
type reprioritizer interface {
	Reprioritize(ctx context.Context, id string, priority int, interactive bool) error
}

// reprioritizeCmd is "hyperctl reprioritize ID N".
func (a *app) reprioritizeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reprioritize ID N",
		Short: "Give a pending job a new priority (-100..100, higher first)",
		Long: `Give a pending job a new priority: it starts before every pending job of
a lower one. Your own job needs the polkit action io.hyper2kvm.agent.submit,
anybody's io.hyper2kvm.agent.manage.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			prio, err := strconv.Atoi(args[1])
			if err != nil {
				return usageError("priority %q: want an integer from -100 to 100", args[1])
			}
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
			rp, ok := c.(reprioritizer)
			if !ok {
				return fail(exitFailed, "this connection cannot reprioritize jobs")
			}
			if err := rp.Reprioritize(ctx, id, prio, a.interactive()); err != nil {
				return a.apiError(err, actionSubmit)
			}
			if !a.jsonOutput() {
				fmt.Fprintf(a.env.stdout, "Job %s now has priority %d.\n", id, prio)
			}
			return nil
		},
	}
}

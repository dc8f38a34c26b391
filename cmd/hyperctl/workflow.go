package main

import (
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/spf13/cobra"
)

// workflowCmd is the original "hyperctl workflow -op status|list|queue|watch".
func (a *app) workflowCmd() *cobra.Command {
	var op string
	cmd := &cobra.Command{
		Use:   "workflow --op status|list|queue|watch",
		Short: "The original hyperctl's workflow operations",
		Long: `The original hyperctl's interface, kept for scripts:
  -op status   same as hyperctl status
  -op list     same as hyperctl jobs
  -op queue    same as hyperctl jobs --state pending
  -op watch    same as hyperctl watch`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if op != "" && op != args[0] {
					return usageError("give the operation either as an argument or as --op, not both")
				}
				op = args[0]
			}
			switch op {
			case "status":
				return a.runStatus(cmd)
			case "list":
				return a.runJobs(cmd, apitype.Filter{})
			case "queue":
				return a.runJobs(cmd, apitype.Filter{States: []jobs.State{jobs.Pending}})
			case "watch":
				return a.runWatch(cmd.Context(), nil)
			case "":
				return usageError("workflow needs --op status|list|queue|watch")
			}
			return usageError("unknown workflow operation %q: use status, list, queue or watch", op)
		},
	}
	cmd.Flags().StringVar(&op, "op", "", "status, list, queue or watch (also -op X, -op=X)")
	_ = cmd.RegisterFlagCompletionFunc("op", cobra.FixedCompletions([]string{"status", "list", "queue", "watch"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

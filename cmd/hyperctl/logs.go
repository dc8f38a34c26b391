package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/spf13/cobra"
)

// logsCmd is "hyperctl logs ID [-f] [-n N]": the job's journal, read by the
// agent (GetJobLog), which answers only a caller allowed to see the job.
func (a *app) logsCmd() *cobra.Command {
	var follow bool
	var lines int
	cmd := &cobra.Command{
		Use:   "logs ID",
		Short: "Show a job's log",
		Long: `Show the journal of the job's unit (hyper2kvm-job-ID.service) and every
message tagged HYPER2KVM_JOB_ID=ID (the agent's own lines about the job).
The agent reads the journal and answers the job's submitter, root, and
whoever holds the polkit action io.hyper2kvm.agent.read (group hyper2kvm);
no journal access of your own is needed. -f keeps printing new lines until
the job has ended (or ^C).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if lines < 0 {
				return usageError("-n %d: want a positive number of lines", lines)
			}
			ctx := cmd.Context()
			c, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			id, err := a.resolve(ctx, c, args[0], newestOfName)
			var ae *apierr.Error
			if errors.As(err, &ae) && ae.Kind == apierr.NoSuchJob {
				return usageError("%q is not a job id or the name of a job", args[0])
			}
			if err != nil {
				return a.apiError(err, "")
			}
			err = a.printLog(ctx, c, id, lines, follow)
			if err != nil && ctx.Err() != nil {
				return nil // ^C ends a follow
			}
			return a.apiError(err, actionRead)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines until the job ends")
	cmd.Flags().IntVarP(&lines, "lines", "n", 0, "show only the last N lines")
	return cmd
}

// printLog prints job id's log; following, it polls the agent with the
// journal cursor every env.poll, and stops once the job has ended and its
// last lines are out.
func (a *app) printLog(ctx context.Context, c agentClient, id string, lines int, follow bool) error {
	got, cursor, err := c.JobLog(ctx, id, lines, "", "short", a.interactive())
	if err != nil {
		return err
	}
	a.writeLines(got)
	if !follow {
		return nil
	}
	for {
		j, err := c.GetJob(ctx, id)
		if err != nil {
			return err
		}
		ended := j.State.Ready()
		// Read once more after the job ended: its last lines may have
		// been logged after the previous read.
		got, cursor, err = c.JobLog(ctx, id, 0, cursor, "short", false)
		if err != nil {
			return err
		}
		a.writeLines(got)
		if ended {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(a.env.poll):
		}
	}
}

func (a *app) writeLines(lines []string) {
	for _, l := range lines {
		fmt.Fprintln(a.env.stdout, l)
	}
}

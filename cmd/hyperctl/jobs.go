package main

import (
	"fmt"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/spf13/cobra"
)

// jobList is the --output json shape of jobs: the REST bridge's shape.
type jobList struct {
	Jobs  []jobs.Job `json:"jobs"`
	Total int        `json:"total"`
}

// jobsCmd is "hyperctl jobs [--state S]".
func (a *app) jobsCmd() *cobra.Command {
	var states []string
	cmd := &cobra.Command{
		Use:   "jobs",
		Short: "List jobs",
		Long: `List the agent's jobs, newest last. --state (repeatable or comma-separated)
keeps only jobs in those states: pending, running, completed, failed, cancelled.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := stateFilter(states)
			if err != nil {
				return err
			}
			return a.runJobs(cmd, f)
		},
	}
	cmd.Flags().StringSliceVar(&states, "state", nil, "only jobs in these states (pending,running,completed,failed,cancelled)")
	_ = cmd.RegisterFlagCompletionFunc("state", cobra.FixedCompletions(
		[]string{"pending", "running", "completed", "failed", "cancelled"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func stateFilter(states []string) (agent.Filter, error) {
	var f agent.Filter
	for _, s := range states {
		st := jobs.State(strings.TrimSpace(strings.ToLower(s)))
		if st == "processing" || st == "active" { // the original REST API's names
			st = jobs.Running
		}
		if !st.Valid() {
			return f, usageError("--state %q: must be one of pending, running, completed, failed, cancelled", s)
		}
		f.States = append(f.States, st)
	}
	return f, nil
}

func (a *app) runJobs(cmd *cobra.Command, f agent.Filter) error {
	ctx := cmd.Context()
	c, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	list, err := c.ListJobs(ctx, f)
	if err != nil {
		return a.apiError(err, "")
	}
	if list == nil {
		list = []jobs.Job{}
	}
	if a.jsonOutput() {
		return writeJSON(a.env.stdout, jobList{Jobs: list, Total: len(list)})
	}
	a.printJobs(list)
	return nil
}

func (a *app) printJobs(list []jobs.Job) {
	if len(list) == 0 {
		fmt.Fprintln(a.env.stdout, "No jobs.")
		return
	}
	t := &table{}
	t.add(a.paint(ansiBold, "ID"), a.paint(ansiBold, "NAME"), a.paint(ansiBold, "STATE"),
		a.paint(ansiBold, "STAGE"), a.paint(ansiBold, "PROGRESS"), a.paint(ansiBold, "CREATED"), a.paint(ansiBold, "INFO"))
	for _, j := range list {
		info := j.StatusText
		if j.Error != "" {
			info = j.Error
		}
		t.add(j.ID, j.Name, a.paint(stateColour(j.State), string(j.State)), orDash(j.Stage),
			formatProgress(j), formatTime(j.CreatedAt), truncate(orDash(info), 60))
	}
	t.write(a.env.stdout)
}

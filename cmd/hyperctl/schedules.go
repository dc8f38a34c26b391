package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
)

// scheduleLister is a client that can list schedules (the D-Bus client).
type scheduleLister interface {
	Schedules(ctx context.Context) ([]apitype.Schedule, error)
}

// schedulesCmd is "hyperctl schedules".
func (a *app) schedulesCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "schedules",
		Short: "List recurring work (/etc/hyper2kvm/schedules.d) with next and last runs",
		Long: `List the schedules of /etc/hyper2kvm/schedules.d: each names a manifest or
a template and a cron expression, and each firing submits an ordinary job
(as root). Shown: name, cron, next run, last run and the job(s) it
submitted, or why it submitted none. A file that does not parse is listed
with the problem, naming the file and the field; the command then exits 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			l, ok := c.(scheduleLister)
			if !ok {
				return fail(exitFailed, "this connection cannot list schedules")
			}
			ss, err := l.Schedules(ctx)
			if err != nil {
				return a.apiError(err, "")
			}
			bad := false
			for _, s := range ss {
				bad = bad || s.Name == ""
			}
			if a.jsonOutput() {
				if err := writeJSON(a.env.stdout, map[string]any{"schedules": ss}); err != nil {
					return fail(exitFailed, "cannot write output: %w", err)
				}
			} else {
				writeSchedules(a.env.stdout, ss)
			}
			if bad {
				return fail(exitFailed, "some schedules do not parse; fix the files named above")
			}
			return nil
		},
	}
}

func writeSchedules(w interface{ Write([]byte) (int, error) }, ss []apitype.Schedule) {
	if len(ss) == 0 {
		fmt.Fprintln(w, "No schedules in /etc/hyper2kvm/schedules.d.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCRON\tNEXT RUN\tLAST RUN\tLAST JOB")
	when := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.Local().Format("2006-01-02 15:04")
	}
	var problems []string
	for _, s := range ss {
		if s.Name == "" {
			problems = append(problems, s.Error)
			continue
		}
		last := strings.Join(s.LastJobs, ",")
		if s.Error != "" {
			last = "failed: " + s.Error
		}
		if last == "" {
			last = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, s.Cron, when(s.Next), when(s.LastRun), last)
	}
	tw.Flush()
	for _, p := range problems {
		fmt.Fprintf(w, "refused: %s\n", p)
	}
}

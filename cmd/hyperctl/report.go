package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/hyper2kvm/hyper2kvm/agent/analytics"
)

// reportCmd is "hyperctl report [--since 7d] [-o text|json|csv]".
func (a *app) reportCmd() *cobra.Command {
	var since string
	cmd := &cobra.Command{
		Use:   "report [--since 7d]",
		Short: "Workflow numbers: jobs per day, bytes, throughput, stage times, failures",
		Long: `Summarise the finished jobs the agent keeps (keep_finished, 30 days by
default): jobs per day by outcome, bytes converted, throughput in GiB per
hour of run time, time per stage (p50/p95), failures grouped by stage and
reason, per host. -o json gives every number, -o csv the days.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runReport(cmd.Context(), since)
		},
	}
	cmd.Flags().StringVar(&since, "since", "7d", "window: 7d, 2w, 36h or a date (2026-01-31)")
	return cmd
}

func (a *app) runReport(ctx context.Context, since string) error {
	now := a.env.now()
	from, err := analytics.ParseSince(since, now)
	if err != nil {
		return usageError("--since: %w", err)
	}
	c, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	s, err := c.Analytics(ctx, from, now)
	if err != nil {
		return a.apiError(err, "")
	}
	w := a.env.stdout
	switch a.g.output {
	case "json":
		return writeJSON(w, s)
	case "csv":
		cw := csv.NewWriter(w)
		if err := cw.WriteAll(s.CSV()); err != nil {
			return fail(exitFailed, "cannot write output: %w", err)
		}
		return nil
	}
	fmt.Fprintf(w, "Jobs finished since %s: %d (%d completed, %d failed, %d cancelled); %s converted at %.2f GiB/h\n",
		from.Format("2006-01-02 15:04"), s.Jobs, s.Completed, s.Failed, s.Cancelled, formatBytes(s.Bytes), s.GiBPerH)
	if len(s.Days) > 0 {
		fmt.Fprintln(w, "\nPer day:")
		t := &table{}
		t.add("DAY", "COMPLETED", "FAILED", "CANCELLED", "CONVERTED", "GIB/H")
		for _, d := range s.Days {
			t.add(d.Day, strconv.Itoa(d.Completed), strconv.Itoa(d.Failed), strconv.Itoa(d.Cancelled), formatBytes(d.Bytes), fmt.Sprintf("%.2f", d.GiBPerH))
		}
		t.write(w)
	}
	if len(s.Stages) > 0 {
		fmt.Fprintln(w, "\nTime per stage:")
		t := &table{}
		t.add("STAGE", "JOBS", "P50", "P95")
		for _, st := range s.Stages {
			t.add(st.Stage, strconv.Itoa(st.Count), fmt.Sprintf("%.1fs", st.P50), fmt.Sprintf("%.1fs", st.P95))
		}
		t.write(w)
	}
	if len(s.Failures) > 0 {
		fmt.Fprintln(w, "\nFailures:")
		t := &table{}
		t.add("COUNT", "STAGE", "REASON", "E.G.")
		for _, f := range s.Failures {
			t.add(strconv.Itoa(f.Count), f.Stage, f.Reason, f.Example)
		}
		t.write(w)
	}
	for _, h := range s.Hosts {
		fmt.Fprintf(w, "\nHost %s: %d jobs, %s, %.2f GiB/h\n", h.Host, h.Jobs, formatBytes(h.Bytes), h.GiBPerH)
	}
	return nil
}

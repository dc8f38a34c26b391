package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

// statusCmd is "hyperctl status": the agent's manager properties.
func (a *app) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the agent's status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runStatus(cmd)
		},
	}
}

func (a *app) runStatus(cmd *cobra.Command) error {
	ctx := cmd.Context()
	c, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	st, err := c.GetStatus(ctx)
	if err != nil {
		return a.apiError(err, "")
	}
	if a.jsonOutput() {
		return writeJSON(a.env.stdout, st)
	}
	running := a.paint(ansiGreen, "running")
	if !st.Running {
		running = a.paint(ansiRed, "not running")
	}
	keyValues(a.env.stdout, [][2]string{
		{"Agent", fmt.Sprintf("%s (version %s, mode %s)", running, orDash(st.Version), orDash(st.Mode))},
		{"Uptime", formatDuration(time.Duration(st.UptimeSeconds * float64(time.Second)))},
		{"Queue", strconv.Itoa(st.QueueDepth) + " waiting"},
		{"Active", fmt.Sprintf("%d of %d workers", st.ActiveJobs, st.MaxWorkers)},
		{"Today", fmt.Sprintf("%d processed, %d failed", st.ProcessedToday, st.FailedToday)},
	})
	return nil
}

package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
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
	kv := [][2]string{
		{"Agent", fmt.Sprintf("%s (version %s, mode %s)", running, orDash(st.Version), orDash(st.Mode))},
		{"Uptime", formatDuration(time.Duration(st.UptimeSeconds * float64(time.Second)))},
		{"Queue", strconv.Itoa(st.QueueDepth) + " waiting" + queueNote(st.Queue)},
		{"Active", fmt.Sprintf("%d of %d workers", st.ActiveJobs, st.MaxWorkers)},
		{"Today", fmt.Sprintf("%d processed, %d failed, %d cancelled", st.ProcessedToday, st.FailedToday, st.CancelledToday)},
	}
	if watched, text := dropFolder(st); text != "" {
		if !watched {
			text = a.paint(ansiRed, text)
		}
		kv = append(kv, [2]string{"Drop folder", text})
	}
	keyValues(a.env.stdout, kv)
	// A fleet: every host's workers, queue and heartbeat (one host's
	// status says all of that above already).
	if l, ok := c.(hostLister); ok {
		if hs, err := l.Hosts(ctx); err == nil && len(hs) > 1 {
			fmt.Fprintln(a.env.stdout)
			writeHosts(a.env.stdout, hs, time.Now())
		}
	}
	return nil
}

// queueNote says a paused or draining queue (hyperctl queue).
func queueNote(state string) string {
	if state == "" || state == "running" {
		return ""
	}
	return " (" + state + ": hyperctl queue resume)"
}

// dropFolder says whether hyper2kvmd.path watches the drop folder, and
// what to do when it does not: a failed path unit (unit-start-limit-hit
// after a burst of restarts) leaves drops unseen until reset-failed. ""
// when the agent did not say (an older agent).
func dropFolder(st apitype.Status) (watched bool, text string) {
	const unit = "hyper2kvmd.path"
	switch st.PathUnitState {
	case "":
		return true, ""
	case "active", "activating", "reloading":
		return true, "watched (" + unit + " " + st.PathUnitState + ")"
	case "failed":
		why := ""
		if st.PathUnitResult != "" && st.PathUnitResult != "success" {
			why = " (" + st.PathUnitResult + ")"
		}
		return false, fmt.Sprintf("not watched: %s is failed%s; run: systemctl reset-failed %s && systemctl start %s", unit, why, unit, unit)
	case "not-found":
		return false, "not watched: " + unit + " is not installed"
	case "masked":
		return false, fmt.Sprintf("not watched: %s is masked; run: systemctl unmask %s && systemctl start %s", unit, unit, unit)
	}
	return false, fmt.Sprintf("not watched: %s is %s; run: systemctl enable --now %s", unit, st.PathUnitState, unit)
}

package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
)

// hostLister is a client that can list the fleet's hosts (the D-Bus client).
type hostLister interface {
	Hosts(ctx context.Context) ([]apitype.Host, error)
}

// hostsCmd is "hyperctl hosts".
func (a *app) hostsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "hosts",
		Short: "List the fleet's hosts: labels, workers busy, queue, last heartbeat",
		Long: `List the hosts whose agents share this agent's job store (store.url on
PostgreSQL): each with its host.labels, how many job units it runs of how
many it may, its queue (running, paused, draining) and when it last beat.
A host whose heartbeat is older than store.lease_timeout is shown as lost:
its unfinished jobs run on another host. On one host (SQLite) the list is
this host alone.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			l, ok := c.(hostLister)
			if !ok {
				return fail(exitFailed, "this connection cannot list hosts")
			}
			hs, err := l.Hosts(ctx)
			if err != nil {
				return a.apiError(err, "")
			}
			if a.jsonOutput() {
				if err := writeJSON(a.env.stdout, map[string]any{"hosts": hs}); err != nil {
					return fail(exitFailed, "cannot write output: %w", err)
				}
				return nil
			}
			writeHosts(a.env.stdout, hs, time.Now())
			return nil
		},
	}
}

// labelsText is a host's labels as k=v,k=v ("-" for none).
func labelsText(l map[string]string) string {
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(l)) {
		kv = append(kv, k+"="+l[k])
	}
	if len(kv) == 0 {
		return "-"
	}
	return strings.Join(kv, ",")
}

func writeHosts(w io.Writer, hs []apitype.Host, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tLABELS\tWORKERS\tQUEUE\tLAST HEARTBEAT")
	for _, h := range hs {
		beat := formatDuration(now.Sub(h.HeartbeatAt).Round(time.Second)) + " ago"
		if !h.Alive {
			beat += " (lost: its jobs run elsewhere)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d of %d busy\t%s\t%s\n", h.Name, labelsText(h.Labels), h.Busy, h.MaxWorkers, orDash(h.Queue), beat)
	}
	tw.Flush()
}

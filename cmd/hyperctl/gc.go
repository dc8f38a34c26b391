package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
)

// gcCmd is "hyperctl gc [--dry-run]".
func (a *app) gcCmd() *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "gc [--dry-run]",
		Short: "Remove what the retention rules let go (processed/, failed/, old outputs)",
		Long: `Ask the agent to apply the retain section of agent.yaml: settled manifests,
reports and dropped images older than retain.processed (30 days by default),
dropped images of completed jobs with retain.dropped_images: delete-on-success,
and converted outputs only when retain.outputs gives an age. --dry-run lists
what would go and removes nothing. Every removal is in the agent's journal.
Needs the polkit action io.hyper2kvm.agent.manage.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runGC(cmd.Context(), dryRun)
		},
	}
	cmd.Flags().BoolVarP(&dryRun, "dry-run", "n", false, "only list what would be removed")
	return cmd
}

// gcResult is the -o json shape of gc.
type gcResult struct {
	DryRun bool             `json:"dry_run"`
	Items  []apitype.GCItem `json:"items"`
	Bytes  int64            `json:"bytes"`
}

func (a *app) runGC(ctx context.Context, dryRun bool) error {
	c, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	items, err := c.GarbageCollect(ctx, dryRun, a.interactive())
	if err != nil {
		return a.apiError(err, actionManage)
	}
	res := gcResult{DryRun: dryRun, Items: items}
	failed := 0
	for _, it := range items {
		if it.Kind != "empty-day" {
			res.Bytes += it.Size
		}
		if it.Error != "" {
			failed++
		}
	}
	if res.Items == nil {
		res.Items = []apitype.GCItem{}
	}
	if a.jsonOutput() {
		if err := writeJSON(a.env.stdout, res); err != nil {
			return fail(exitFailed, "cannot write output: %w", err)
		}
	} else {
		w := a.env.stdout
		verb := "Removed"
		if dryRun {
			verb = "Would remove"
		}
		if len(items) == 0 {
			fmt.Fprintln(w, "Nothing to remove.")
		}
		t := &table{}
		t.add("KIND", "SIZE", "PATH", "WHY")
		for _, it := range items {
			reason := it.Reason
			if it.Error != "" {
				reason = a.paint(ansiRed, "cannot remove: "+it.Error)
			}
			t.add(it.Kind, formatBytes(it.Size), it.Path, reason)
		}
		if len(items) > 0 {
			t.write(w)
			fmt.Fprintf(w, "%s %d item(s), %s.\n", verb, len(items)-failed, formatBytes(res.Bytes))
		}
	}
	if failed > 0 {
		return fail(exitFailed, "could not remove %d item(s)", failed)
	}
	return nil
}

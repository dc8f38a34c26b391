package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/spf13/cobra"
)

type submitOpts struct {
	file string
	wait bool
	// template and sets: the manifest comes from a template instead of
	// a file (template.go).
	template string
	sets     []string
	jobs     int // -j: the batch's concurrency, 0 to leave it as written
	priority int
	setPrio  bool   // --priority given
	at       string // --at: not before
	// placement is --placement: the manifest's placement, replaced.
	placement []string
}

// submitCmd is "hyperctl submit FILE [--wait]".
func (a *app) submitCmd() *cobra.Command {
	var o submitOpts
	cmd := &cobra.Command{
		Use:   "submit FILE",
		Short: "Queue a manifest or a disk image with the agent",
		Long: `Check FILE locally, then hand it to the agent, which queues one job per VM.
FILE may be a disk image (what its bytes say, not its name): it is converted as the
drop folder would, with the agent's default pipeline; a text file named as an image
is refused.
Needs the polkit action io.hyper2kvm.agent.submit. --wait follows the jobs
like watch and exits 0 when all completed, 1 when any failed.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 && o.template != "" {
				return usageError("give either a manifest FILE or --template NAME, not both")
			}
			if len(args) == 1 {
				if o.file != "" && o.file != args[0] {
					return usageError("give the manifest either as FILE or as --file, not both")
				}
				o.file = args[0]
			}
			return a.runSubmit(cmd.Context(), o)
		},
	}
	addSubmitFlags(cmd, &o)
	return cmd
}

func addSubmitFlags(cmd *cobra.Command, o *submitOpts) {
	cmd.Flags().StringVarP(&o.file, "file", "f", "", "the manifest file (also -file F, -file=F)")
	cmd.Flags().BoolVarP(&o.wait, "wait", "w", false, "follow the jobs until they finish")
	cmd.Flags().StringVarP(&o.template, "template", "t", "", "make the manifest from the template NAME (hyperctl template list)")
	cmd.Flags().StringArrayVar(&o.sets, "set", nil, "with --template: fill a field, KEY=VALUE (load.source_path=/srv/web01.vmdk, name=web01); repeatable")
	cmd.Flags().IntVarP(&o.jobs, "jobs", "j", 0, "a batch: run up to N of its VMs at once (its \"concurrency\"; default the manifest's, else the agent's max_concurrent_jobs)")
	cmd.Flags().IntVar(&o.priority, "priority", 0, "the jobs' priority, -100..100, higher first (replaces the manifest's)")
	cmd.Flags().StringVar(&o.at, "at", "", `start no earlier than this time: "2026-12-24 02:00" (local) or RFC 3339 (the manifest's schedule.not_before)`)
	cmd.Flags().StringArrayVar(&o.placement, "placement", nil, "run only on a fleet host matching this: a host name or a label key=value of its host.labels (datastore=ds01); repeatable (the manifest's placement)")
	cmd.PreRun = func(cmd *cobra.Command, _ []string) { o.setPrio = cmd.Flags().Changed("priority") }
}

// atLayouts are what --at accepts, in local time unless it says a zone.
var atLayouts = []string{time.RFC3339, "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02T15:04"}

// parseAt reads --at.
func parseAt(s string) (time.Time, error) {
	for _, l := range atLayouts {
		if t, err := time.ParseInLocation(l, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, usageError(`--at %q: want a time like "2026-12-24 02:00" (local) or 2026-12-24T02:00:00+01:00`, s)
}

// applySubmitFlags puts --priority and --at into the manifest, which
// carries them to the agent (and so to every surface that shows a job).
func applySubmitFlags(m *manifest.Manifest, o submitOpts) ([]byte, error) {
	if o.setPrio {
		p := o.priority
		m.Priority = &p
		for i := range m.VMs {
			m.VMs[i].Priority = &p
		}
	}
	if len(o.placement) > 0 {
		m.Placement = o.placement
	}
	if o.at != "" {
		at, err := parseAt(o.at)
		if err != nil {
			return nil, err
		}
		if m.Schedule == nil {
			m.Schedule = &manifest.Schedule{}
		}
		m.Schedule.NotBefore = at.Format(time.RFC3339)
	}
	if probs := m.Validate(); len(probs) > 0 {
		return nil, usageError("%v", probs)
	}
	data, err := json.Marshal(m)
	if err != nil {
		return nil, fail(exitFailed, "cannot encode the manifest: %w", err)
	}
	return data, nil
}

// submitResult is the --output json shape of submit.
type submitResult struct {
	Jobs []jobJSON `json:"jobs"`
}

func (a *app) runSubmit(ctx context.Context, o submitOpts) error {
	if len(o.sets) > 0 && o.template == "" {
		return usageError("--set fills a template: give --template NAME too")
	}
	var data []byte
	var probs manifest.Problems
	var image string
	if o.template != "" {
		var err error
		if data, probs, err = a.fromTemplate(o.template, o.sets); err != nil {
			return err
		}
		o.file = o.template + ".json"
	} else {
		// An image is submitted as the drop folder takes one: the agent
		// writes its manifest.
		sourceType, err := sniffImage(o.file)
		if err != nil {
			return err
		}
		if sourceType != "" {
			if image, err = absImage(o.file); err != nil {
				return err
			}
			fmt.Fprint(a.env.stderr, imageNotice(o.file, sourceType))
		} else if data, _, probs, err = a.parseManifestFile(o.file); err != nil {
			return err
		}
	}
	if len(probs) > 0 {
		// The agent would refuse it too; say why without a round trip.
		a.printValidateResult(validateResult{File: o.file, Errors: toProblemJSON(probs)})
		return silentExit(exitFailed)
	}
	if o.jobs < 0 {
		return usageError("-j %d: must be at least 1", o.jobs)
	}
	if image != "" && (o.jobs > 0 || o.setPrio || o.at != "" || len(o.placement) > 0) {
		return usageError("-j, --priority, --at and --placement change a manifest; an image gets the drop folder's defaults (write a manifest to set them)")
	}
	if o.jobs > 0 {
		var err error
		if data, err = withConcurrency(data, o.jobs); err != nil {
			return err
		}
	}
	if o.setPrio || o.at != "" || len(o.placement) > 0 {
		m, err := manifest.Parse(data)
		if err != nil {
			return usageError("cannot parse %s: %w", o.file, err)
		}
		if data, err = applySubmitFlags(m, o); err != nil {
			return err
		}
	}
	c, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()

	// Subscribe before submitting so no change of the new jobs is missed.
	var events <-chan apitype.Event
	if o.wait {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		if events, err = c.Watch(wctx); err != nil {
			return a.apiError(err, "")
		}
	}
	var opts apitype.SubmitOptions
	switch {
	case image != "":
		opts.Image = image
	case o.file != "-":
		opts.Name = filepath.Base(o.file)
	}
	submitted, err := c.Submit(ctx, data, opts, a.interactive())
	if err != nil {
		return a.apiError(err, actionSubmit)
	}
	if !o.wait {
		if a.jsonOutput() {
			return writeJSON(a.env.stdout, submitResult{Jobs: viewsOf(submitted)})
		}
		for _, j := range submitted {
			fmt.Fprintf(a.env.stdout, "Submitted %s as job %s.\n", j.Name, j.ID)
		}
		return nil
	}

	ids := make([]string, 0, len(submitted))
	for _, j := range submitted {
		ids = append(ids, j.ID)
		if !a.jsonOutput() {
			fmt.Fprintf(a.env.stdout, "Submitted %s as job %s.\n", j.Name, j.ID)
		}
	}
	w := a.newWatcher(ids)
	if a.jsonOutput() {
		// Only the final records: a script wants the outcome, watch streams.
		w.json, w.out = false, io.Discard
	}
	// Re-read the jobs: they may have moved on before the subscription's
	// first event arrived.
	current := make([]jobs.Job, 0, len(ids))
	for _, j := range submitted {
		if cur, err := c.GetJob(ctx, j.ID); err == nil {
			j = cur
		}
		current = append(current, j)
	}
	werr := w.run(ctx, current, events)
	if a.jsonOutput() {
		final := make([]jobs.Job, 0, len(ids))
		for _, id := range ids {
			if t, ok := w.jobs[id]; ok {
				final = append(final, t.job)
			}
		}
		if err := writeJSON(a.env.stdout, submitResult{Jobs: viewsOf(final)}); err != nil {
			return fail(exitFailed, "cannot write output: %w", err)
		}
	}
	return werr
}

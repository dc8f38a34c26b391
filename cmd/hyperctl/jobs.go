package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/spf13/cobra"
)

// jobList is the --output json shape of jobs: the REST bridge's shape.
// Total is how many jobs match, also when fewer are shown.
type jobList struct {
	Jobs  []jobJSON `json:"jobs"`
	Total int       `json:"total"`
}

// jobsCmd is "hyperctl jobs [--state S] [--limit N | --all] [--offset N]".
func (a *app) jobsCmd() *cobra.Command {
	var states []string
	cmd := &cobra.Command{
		Use:   "jobs",
		Short: "List jobs",
		Long: fmt.Sprintf(`List the agent's newest jobs, newest last: %d unless --limit N says
otherwise, every one with --all; --offset N skips the N newest first.
When more jobs match than are shown, a line on stderr says how many.
--state (repeatable or comma-separated) keeps only jobs in those states:
pending, running, completed, failed, cancelled.`, apitype.DefaultPageLimit),
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
	cmd.Flags().Int("limit", apitype.DefaultPageLimit, "show at most this many of the newest jobs")
	cmd.Flags().Int("offset", 0, "skip this many of the newest jobs")
	cmd.Flags().Bool("all", false, "show every job (same as --limit 0)")
	_ = cmd.RegisterFlagCompletionFunc("state", cobra.FixedCompletions(
		[]string{"pending", "running", "completed", "failed", "cancelled"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// pageFlags reads --limit, --offset and --all where cmd has them (the
// original "workflow -op list" has not: it gets the default page).
func pageFlags(cmd *cobra.Command) (apitype.Page, error) {
	p := apitype.Page{Limit: apitype.DefaultPageLimit}
	fl := cmd.Flags()
	if fl.Lookup("limit") != nil {
		p.Limit, _ = fl.GetInt("limit")
		p.Offset, _ = fl.GetInt("offset")
		if all, _ := fl.GetBool("all"); all {
			if fl.Changed("limit") && p.Limit != 0 {
				return p, usageError("--all and --limit %d contradict each other", p.Limit)
			}
			p.Limit = 0
		}
	}
	if p.Limit < 0 {
		return p, usageError("--limit %d: must be 0 (all) or more", p.Limit)
	}
	if p.Offset < 0 {
		return p, usageError("--offset %d: must be 0 or more", p.Offset)
	}
	return p, nil
}

// jobPager is the paged list of *dbusapi.Client; a client without it is
// paged here from the whole list.
type jobPager interface {
	ListJobsPage(ctx context.Context, f apitype.Filter, p apitype.Page) ([]jobs.Job, int, error)
}

func listPage(ctx context.Context, c agentClient, f apitype.Filter, p apitype.Page) ([]jobs.Job, int, error) {
	if pc, ok := c.(jobPager); ok {
		return pc.ListJobsPage(ctx, f, p)
	}
	all, err := c.ListJobs(ctx, f)
	if err != nil {
		return nil, 0, err
	}
	page, total := p.Slice(all)
	return page, total, nil
}

func stateFilter(states []string) (apitype.Filter, error) {
	var f apitype.Filter
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

func (a *app) runJobs(cmd *cobra.Command, f apitype.Filter) error {
	p, err := pageFlags(cmd)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	c, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	list, total, err := listPage(ctx, c, f, p)
	if err != nil {
		return a.apiError(err, "")
	}
	slices.Reverse(list) // the page is newest first; show it newest last
	if list == nil {
		list = []jobs.Job{}
	}
	if shown := len(list); shown < total {
		fmt.Fprintf(a.env.stderr, "%d of %d jobs shown (newest, skipping %d); --all or --limit N for more\n", shown, total, p.Offset)
	}
	if a.jsonOutput() {
		return writeJSON(a.env.stdout, jobList{Jobs: viewsOf(list), Total: total})
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
	fleet := manyHosts(list)
	head := []string{a.paint(ansiBold, "ID"), a.paint(ansiBold, "NAME"), a.paint(ansiBold, "STATE")}
	if fleet {
		head = append(head, a.paint(ansiBold, "HOST"))
	}
	t.add(append(head, a.paint(ansiBold, "STAGE"), a.paint(ansiBold, "PROGRESS"), a.paint(ansiBold, "CREATED"))...)
	infos := []string{"INFO"}
	for _, j := range list {
		info := j.StatusText
		if j.Error != "" {
			info = j.Error
		}
		row := []string{j.ID, j.Name, a.paint(stateColour(j.State), string(j.State))}
		if fleet {
			row = append(row, orDash(terminalSafe(j.Host)))
		}
		t.add(append(row, orDash(j.Stage), formatProgress(j), formatTime(j.CreatedAt))...)
		infos = append(infos, orDash(info))
	}
	// INFO is never cut: on a terminal it wraps within its column, and
	// where the column would be too narrow it goes on lines of its own
	// below each job; elsewhere (a pipe, a file) it is whole on its line.
	width := a.termWidth()
	at := t.width() + 2
	switch {
	case width == 0:
		for i := range t.rows {
			t.rows[i] = append(t.rows[i], infos[i])
		}
		t.write(a.env.stdout)
	case width-at >= minInfoWidth:
		for i, lines := range t.lines() {
			for k, l := range wrap(infos[i], width-at-1) {
				if i == 0 {
					l = a.paint(ansiBold, l)
				}
				if k == 0 {
					fmt.Fprintln(a.env.stdout, lines+strings.Repeat(" ", at-visibleLen(lines))+l)
				} else {
					fmt.Fprintln(a.env.stdout, strings.Repeat(" ", at)+l)
				}
			}
		}
	default:
		for i, lines := range t.lines() {
			fmt.Fprintln(a.env.stdout, strings.TrimRight(lines, " "))
			if i == 0 {
				continue
			}
			for _, l := range wrap(infos[i], max(width-5, minInfoWidth)) {
				fmt.Fprintln(a.env.stdout, "    "+l)
			}
		}
	}
}

// minInfoWidth is the narrowest INFO column worth wrapping into.
const minInfoWidth = 24

// manyHosts reports whether the jobs were claimed by more than one host: a
// fleet sharing one store. Only then does the list have a HOST column; on
// one host it would say the same name on every line.
func manyHosts(list []jobs.Job) bool {
	first := ""
	for _, j := range list {
		switch {
		case j.Host == "":
		case first == "":
			first = j.Host
		case j.Host != first:
			return true
		}
	}
	return false
}

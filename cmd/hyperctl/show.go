package main

import (
	"fmt"
	"os/user"
	"strconv"
	"strings"
	"unicode"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/spf13/cobra"
)

// showCmd is "hyperctl show ID".
func (a *app) showCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show ID|NAME",
		Short: "Show one job in detail",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			id, err := a.resolve(ctx, c, args[0], newestOfName)
			if err != nil {
				return a.apiError(err, "")
			}
			j, err := c.GetJob(ctx, id)
			if err != nil {
				return a.apiError(err, "")
			}
			if a.jsonOutput() {
				return writeJSON(a.env.stdout, viewOf(j))
			}
			a.printJob(j)
			a.printReport(ctx, c, j)
			return nil
		},
	}
}

func (a *app) printJob(j jobs.Job) {
	kv := [][2]string{
		{"ID", j.ID},
		{"Name", j.Name},
		{"State", a.paint(stateColour(j.State), string(j.State))},
		{"Stage", orDash(j.Stage)},
		{"Progress", formatProgress(j)},
		{"Status", orDash(j.StatusText)},
	}
	if j.Batch != "" {
		kv = append(kv, [2]string{"Batch", j.Batch})
	}
	submitter := "drop folder"
	if j.SubmittedBy >= 0 {
		submitter = userName(j.SubmittedBy)
	}
	kv = append(kv,
		[2]string{"Manifest", orDash(j.Manifest)},
		[2]string{"Submitted by", submitter},
		[2]string{"Priority", fmt.Sprint(j.Priority)},
		[2]string{"Unit", orDash(j.Unit)},
		[2]string{"Host", orDash(j.Host)},
		[2]string{"Created", formatTime(j.CreatedAt)},
		[2]string{"Started", formatTime(j.StartedAt)},
		[2]string{"Finished", formatTime(j.FinishedAt)},
	)
	if j.BytesTotal > 0 {
		kv = append(kv, [2]string{"Bytes", formatBytes(j.BytesDone) + " of " + formatBytes(j.BytesTotal)})
	}
	if j.Error != "" {
		e := j.Error
		if j.ErrorStage != "" {
			e = "in " + j.ErrorStage + ": " + e
		}
		kv = append(kv, [2]string{"Error", a.paint(ansiRed, e)})
	}
	if len(j.Outputs) > 0 {
		kv = append(kv, [2]string{"Outputs", strings.Join(j.Outputs, "\n\t")})
	}
	if j.ReportPath != "" {
		kv = append(kv, [2]string{"Report", j.ReportPath})
	}
	if len(j.Warnings) > 0 {
		kv = append(kv, [2]string{"Warnings", fmt.Sprint(len(j.Warnings))})
	}
	keyValues(a.env.stdout, kv)
	a.printAttempts(j.Attempts)
	if len(j.Warnings) > 0 {
		// A section of its own: warnings are sentences, too long for the
		// key-value column, and they are what the user must read.
		fmt.Fprintln(a.env.stdout, "\nWarnings:")
		for _, w := range j.Warnings {
			fmt.Fprintln(a.env.stdout, "  "+a.paint(ansiYellow, "! "+terminalSafe(w)))
		}
	}
}

// printAttempts is the Attempts section of show: each failed run with
// the host it ran on, the stage that failed, its error and when it was
// run again, so that a job retried across a fleet tells where each try
// went wrong.
func (a *app) printAttempts(as []jobs.Attempt) {
	if len(as) == 0 {
		return
	}
	fmt.Fprintln(a.env.stdout, "\nAttempts:")
	for _, at := range as {
		where := "on " + orDash(terminalSafe(at.Host))
		if at.Stage != "" {
			where += ", in " + terminalSafe(at.Stage)
		}
		fmt.Fprintf(a.env.stdout, "  %d  %s  ended %s  retried %s\n", at.Attempt, where, formatTime(at.EndedAt), formatTime(at.RetryAt))
		fmt.Fprintln(a.env.stdout, "     "+a.paint(ansiRed, terminalSafe(at.Error)))
	}
}

// terminalSafe is s with control characters shown as '?': a warning may
// quote a guest's file, and a guest is hostile input.
func terminalSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}

// warningsNote is " with N warnings" for a job that has some, else "".
func warningsNote(j jobs.Job) string {
	switch n := len(j.Warnings); n {
	case 0:
		return ""
	case 1:
		return " with 1 warning"
	default:
		return fmt.Sprintf(" with %d warnings", n)
	}
}

// userName is a uid as a person reads it: the login name and the uid, or
// the uid alone when this machine has no such user.
func userName(uid int64) string {
	if u, err := user.LookupId(strconv.FormatInt(uid, 10)); err == nil {
		return fmt.Sprintf("%s (uid %d)", u.Username, uid)
	}
	return fmt.Sprintf("uid %d", uid)
}

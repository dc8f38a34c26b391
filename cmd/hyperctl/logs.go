package main

import (
	"errors"
	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"os/exec"
	"regexp"
	"strconv"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/spf13/cobra"
)

// jobIDPattern keeps the id from being read as a journalctl option or match.
var jobIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]*$`)

// logsCmd is "hyperctl logs ID [-f]": the job's journal.
func (a *app) logsCmd() *cobra.Command {
	var follow bool
	var lines int
	cmd := &cobra.Command{
		Use:   "logs ID",
		Short: "Show a job's log from the journal",
		Long: `Show the journal of the job's unit (hyper2kvm-job-ID.service) and every
message tagged HYPER2KVM_JOB_ID=ID (the agent's own lines about the job).
Reading the system journal needs root or the systemd-journal/adm group.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if !jobIDPattern.MatchString(id) {
				// A job's name or unit name: the agent knows which id.
				c, err := a.connect(cmd.Context())
				if err != nil {
					return err
				}
				id, err = a.resolve(cmd.Context(), c, id, newestOfName)
				c.Close()
				var ae *apierr.Error
				if errors.As(err, &ae) && ae.Kind == apierr.NoSuchJob || err == nil && !jobIDPattern.MatchString(id) {
					return usageError("%q is not a job id or the name of a job", args[0])
				}
				if err != nil {
					return a.apiError(err, "")
				}
			}
			jargs := journalArgs(id, follow, lines)
			err := a.env.journal(cmd.Context(), jargs, a.env.stdout, a.env.stderr)
			var xe *exec.ExitError
			switch {
			case err == nil:
				return nil
			case cmd.Context().Err() != nil:
				return nil // ^C ends a follow
			case errors.As(err, &xe):
				return silentExit(exitFailed) // journalctl said why
			}
			return fail(exitFailed, "cannot run journalctl: %w", err)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines")
	cmd.Flags().IntVarP(&lines, "lines", "n", 0, "show only the last N lines")
	return cmd
}

func journalArgs(id string, follow bool, lines int) []string {
	unit := jobs.UnitName(id)
	args := []string{"--no-pager", "-o", "short-iso"}
	if follow {
		args = append(args, "--follow")
	}
	if lines > 0 {
		args = append(args, "--lines", strconv.Itoa(lines))
	}
	// _SYSTEMD_UNIT: the worker's output; UNIT: systemd's lines about the
	// unit (started, failed); HYPER2KVM_JOB_ID: the agent's lines. "+" is OR.
	return append(args, "_SYSTEMD_UNIT="+unit, "+", "UNIT="+unit, "+", "HYPER2KVM_JOB_ID="+id)
}

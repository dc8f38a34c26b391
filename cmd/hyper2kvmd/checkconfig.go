package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/hyper2kvm/hyper2kvm/agent/config"
	"github.com/hyper2kvm/hyper2kvm/agent/schedules"
)

// newCheckConfigCmd is `hyper2kvmd check-config [FILE]`, like `sshd -t`:
// the agent's own reading of the file, without starting anything, so an
// admin (and the package's postinst) learns of a typo before the agent
// does. It reads schedules.d too: each file that does not parse is one
// problem naming the file and the field.
func newCheckConfigCmd() *cobra.Command {
	var schedDir string
	cmd := &cobra.Command{
		Use:   "check-config [FILE]",
		Short: "Check the agent's configuration file (default " + config.DefaultPath + ") and " + schedules.Dir + ", and exit",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := config.DefaultPath
			if len(args) == 1 {
				path = args[0]
			}
			var errs []error
			if _, err := config.Load(path); err != nil {
				errs = append(errs, err)
			}
			ss, serrs := schedules.Load(schedDir)
			errs = append(errs, serrs...)
			if len(errs) > 0 {
				return &exitErr{code: 1, err: errors.Join(errs...)}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", path)
			if len(ss) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (%d schedules)\n", schedDir, len(ss))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&schedDir, "schedules-dir", schedules.Dir, "the schedules directory to check")
	return cmd
}

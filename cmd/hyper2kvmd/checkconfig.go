package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/hyper2kvm/hyper2kvm/agent/config"
)

// newCheckConfigCmd is `hyper2kvmd check-config [FILE]`, like `sshd -t`:
// the agent's own reading of the file, without starting anything, so an
// admin (and the package's postinst) learns of a typo before the agent
// does.
func newCheckConfigCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check-config [FILE]",
		Short: "Check the agent's configuration file (default " + config.DefaultPath + ") and exit",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := config.DefaultPath
			if len(args) == 1 {
				path = args[0]
			}
			if _, err := config.Load(path); err != nil {
				return &exitErr{code: 1, err: err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", path)
			return nil
		},
	}
}

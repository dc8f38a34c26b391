package main

import (
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// manCmd is "hyperctl man DIR": man pages for make install. Shell completion
// is cobra's own "hyperctl completion bash|zsh|fish".
func (a *app) manCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write man pages (section 1) into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return fail(exitFailed, "cannot create %s: %w", args[0], err)
			}
			hdr := &doc.GenManHeader{Title: "HYPERCTL", Section: "1", Source: "hyper2kvm " + version, Manual: "hyper2kvm"}
			if err := doc.GenManTree(cmd.Root(), hdr, args[0]); err != nil {
				return fail(exitFailed, "cannot write man pages: %w", err)
			}
			return nil
		},
	}
}

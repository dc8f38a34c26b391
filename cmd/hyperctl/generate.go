package main

import "github.com/spf13/cobra"

func (a *app) generateCmd() *cobra.Command {
	return &cobra.Command{Use: "generate VM-PATH OUTPUT-DIR", Short: "Write a manifest for an image", Args: cobra.ExactArgs(2), RunE: func(cmd *cobra.Command, args []string) error {
		return fail(exitFailed, "cannot generate manifests yet")
	}}
}

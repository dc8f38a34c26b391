package main

import "github.com/spf13/cobra"

func (a *app) createCmd() *cobra.Command {
	return &cobra.Command{Use: "create", Short: "Build a manifest step by step", RunE: func(cmd *cobra.Command, args []string) error {
		return fail(exitFailed, "cannot create manifests yet")
	}}
}

package main

import (
	"github.com/spf13/cobra"
)

// manifestCmd is "hyperctl manifest create|validate|submit|generate", the
// original hyperctl's verbs, kept for its users and scripts.
func (a *app) manifestCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "manifest",
		Short: "Create, check, submit and generate manifests",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return usageError("manifest needs a subcommand: create, validate, submit or generate")
		},
	}

	var vo validateOpts
	validate := &cobra.Command{
		Use:   "validate --file FILE",
		Short: "Check a manifest locally (same as hyperctl validate)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if vo.file != "" && vo.file != args[0] {
					return usageError("give the manifest either as FILE or as --file, not both")
				}
				vo.file = args[0]
			}
			return a.runValidate(vo)
		},
	}
	addValidateFlags(validate, &vo)

	var so submitOpts
	submit := &cobra.Command{
		Use:   "submit --file FILE",
		Short: "Queue a manifest with the agent (same as hyperctl submit)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if so.file != "" && so.file != args[0] {
					return usageError("give the manifest either as FILE or as --file, not both")
				}
				so.file = args[0]
			}
			return a.runSubmit(cmd.Context(), so)
		},
	}
	addSubmitFlags(submit, &so)

	cmd.AddCommand(validate, submit, a.createCmd(), a.generateCmd())
	return cmd
}

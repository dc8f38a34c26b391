package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func newWorkerCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "worker",
		Short: "worker (not implemented yet)",
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("worker: not implemented yet")
		},
	}
}

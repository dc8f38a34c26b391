package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func newBridgeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "bridge",
		Short: "bridge (not implemented yet)",
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("bridge: not implemented yet")
		},
	}
}

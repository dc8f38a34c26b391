package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func newConvertCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "convert",
		Short: "convert (not implemented yet)",
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("convert: not implemented yet")
		},
	}
}

// Command hyperctl is the hyper2kvm command line. It talks to the agent over
// D-Bus (polkit decides what the caller may do) and never touches the queue
// directories itself.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

var version = "dev"

func main() {
	root := &cobra.Command{
		Use:           "hyperctl",
		Short:         "Control the hyper2kvm agent",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "hyperctl:", err)
		os.Exit(2)
	}
}

// Command hyper2kvmd is the hyper2kvm agent and its helpers: "agent" (the
// system service), "worker" (one job, inside its transient unit), "bridge"
// (the socket-activated REST bridge) and "convert" (one manifest in the
// foreground, the same code the worker runs).
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/hyper2kvm/hyper2kvm/agent/sandbox"
)

// version is set by the Makefile with -ldflags.
var version = "dev"

func main() {
	// The native guest backend starts this binary again to run a guest's
	// program in its sandbox (agent/sandbox).
	if sandbox.IsChild() {
		os.Exit(sandbox.Main(os.Args[1:]))
	}
	root := &cobra.Command{
		Use:           "hyper2kvmd",
		Short:         "hyper2kvm agent: converts VMware and Hyper-V VMs to KVM",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newAgentCmd(), newWorkerCmd(), newBridgeCmd(), newConvertCmd(), newCheckConfigCmd(), newSourceCmd(), newHookHTTPCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "hyper2kvmd:", err)
		os.Exit(exitCode(err))
	}
}

// exitErr carries an exit code through cobra.
type exitErr struct {
	code int
	err  error
}

func (e *exitErr) Error() string { return e.err.Error() }
func (e *exitErr) Unwrap() error { return e.err }

func exitCode(err error) int {
	if e, ok := err.(*exitErr); ok {
		return e.code
	}
	return 1
}

// Command hyperctl is the hyper2kvm command line. It talks to the agent over
// D-Bus (polkit decides what the caller may do) and never touches the queue
// directories itself. Each verb lives in its own file; root.go wires them.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], systemEnv())
	stop()
	os.Exit(code)
}

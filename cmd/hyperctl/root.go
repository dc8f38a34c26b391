package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/analytics"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/templates"
	"github.com/hyper2kvm/hyper2kvm/dbusapi"
	"github.com/spf13/cobra"
)

// Exit codes, documented in docs/CLI.md. Scripts depend on them.
const (
	exitOK           = 0
	exitFailed       = 1 // the job failed, the manifest is invalid, the agent refused
	exitUsage        = 2 // bad command line, unreadable or unparsable input
	exitUnreachable  = 3 // no system bus, or the agent cannot be started
	exitUnauthorized = 4 // polkit said no
	exitInterrupted  = 130
)

// agentClient is the part of *dbusapi.Client hyperctl uses; unit tests
// replace it with a fake, the e2e tests run the real one against a real agent.
type agentClient interface {
	GetStatus(ctx context.Context) (apitype.Status, error)
	ListJobs(ctx context.Context, f apitype.Filter) ([]jobs.Job, error)
	GetJob(ctx context.Context, id string) (jobs.Job, error)
	Submit(ctx context.Context, manifest []byte, o apitype.SubmitOptions, interactive bool) ([]jobs.Job, error)
	Cancel(ctx context.Context, id string, interactive bool) error
	Retry(ctx context.Context, id string, interactive bool) (jobs.Job, error)
	JobLog(ctx context.Context, id string, lines int, after, format string, interactive bool) ([]string, string, error)
	Watch(ctx context.Context) (<-chan apitype.Event, error)
	GarbageCollect(ctx context.Context, dryRun, interactive bool) ([]apitype.GCItem, error)
	Analytics(ctx context.Context, since, until time.Time) (analytics.Summary, error)
	Close() error
}

// env is everything a command touches outside its arguments, so that a test
// can run the whole CLI in-process with its own streams, bus and clock.
type env struct {
	stdin    io.Reader
	stdout   io.Writer
	stderr   io.Writer
	getenv   func(string) string
	dial     func(ctx context.Context) (agentClient, error)
	terminal func(f any) bool // is f a terminal?
	// poll is how often logs -f asks the agent for new lines.
	poll time.Duration
	now  func() time.Time
	// templates is the manifest templates library (template.go).
	templates templates.Library
}

func systemEnv() *env {
	return &env{
		stdin:  os.Stdin,
		stdout: os.Stdout,
		stderr: os.Stderr,
		getenv: os.Getenv,
		dial: func(ctx context.Context) (agentClient, error) {
			c, err := dbusapi.Dial(ctx)
			if err != nil {
				return nil, err
			}
			return c, nil
		},
		terminal:  isTerminal,
		poll:      time.Second,
		now:       time.Now,
		templates: templates.Default(),
	}
}

// globals are the persistent flags every command sees.
type globals struct {
	output        string // text | json
	noAskPassword bool
}

// app is one run of hyperctl: its environment and global flags.
type app struct {
	env *env
	g   globals
}

// exitError carries an exit code out of a command. Any error that is not an
// exitError is cobra complaining about the command line, which is exit 2.
type exitError struct {
	code int
	err  error
	// quiet: the command already printed what went wrong.
	quiet bool
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

func fail(code int, format string, args ...any) error {
	return &exitError{code: code, err: fmt.Errorf(format, args...)}
}

func silentExit(code int) error { return &exitError{code: code, quiet: true} }

// usageError is a usage problem found by a command itself (not by cobra).
func usageError(format string, args ...any) error {
	return fail(exitUsage, format, args...)
}

// run executes hyperctl with args and returns the process exit code.
func run(ctx context.Context, args []string, e *env) int {
	a := &app{env: e}
	root := a.newRoot()
	root.SetArgs(normaliseArgs(args))
	root.SetIn(e.stdin)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if !ee.quiet && ee.err != nil {
			fmt.Fprintln(e.stderr, "hyperctl:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(e.stderr, "hyperctl:", err)
	if cmd == nil {
		cmd = root
	}
	fmt.Fprintf(e.stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	return exitUsage
}

func (a *app) newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "hyperctl",
		Short: "Control the hyper2kvm conversion agent",
		Long: `hyperctl talks to the hyper2kvm agent (io.hyper2kvm.Agent1) over the system
D-Bus. polkit decides what the caller may do; the agent is started by D-Bus
activation when it is not running.

Exit codes: 0 ok, 1 failed or invalid, 2 usage or unreadable input,
3 agent unreachable, 4 not authorized, 130 interrupted.`,
		Version:           version,
		SilenceUsage:      true,
		SilenceErrors:     true,
		DisableAutoGenTag: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			switch a.g.output {
			case "text", "json":
				return nil
			case "csv":
				if cmd.Name() == "report" {
					return nil
				}
				return usageError("--output csv is for hyperctl report; here use text or json")
			}
			return usageError("--output must be text or json, not %q", a.g.output)
		},
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return err })
	pf := root.PersistentFlags()
	pf.StringVarP(&a.g.output, "output", "o", "text", "output format: text or json")
	pf.BoolVar(&a.g.noAskPassword, "no-ask-password", false, "do not let polkit ask for a password")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))

	root.AddCommand(
		a.statusCmd(),
		a.jobsCmd(),
		a.showCmd(),
		a.watchCmd(),
		a.submitCmd(),
		a.cancelCmd(),
		a.reprioritizeCmd(),
		a.queueCmd(),
		a.retryCmd(),
		a.logsCmd(),
		a.tokenCmd(),
		a.validateCmd(),
		a.manifestCmd(),
		a.templateCmd(),
		a.preflightCmd(),
		a.gcCmd(),
		a.notifyCmd(),
		a.schedulesCmd(),
		a.hostsCmd(),
		a.reportCmd(),
		a.workflowCmd(),
		a.manCmd(),
		a.sourcesCmd(),
		a.vmsCmd(),
		a.importCmd(),
	)
	return root
}

// legacyLongFlags are long flags the original hyperctl spelled with one dash
// (Go's flag package style). pflag would read "-file" as the shorthand
// cluster "-f -i -l -e", so they are rewritten before cobra sees them.
var legacyLongFlags = []string{"file", "op", "output", "state"}

func normaliseArgs(args []string) []string {
	out := make([]string, 0, len(args))
	for i, arg := range args {
		if arg == "--" {
			return append(out, args[i:]...)
		}
		if strings.HasPrefix(arg, "-") && !strings.HasPrefix(arg, "--") {
			name, _, _ := strings.Cut(arg[1:], "=")
			for _, l := range legacyLongFlags {
				if name == l {
					arg = "-" + arg
					break
				}
			}
		}
		out = append(out, arg)
	}
	return out
}

// connect dials the agent, mapping failures to exit codes.
func (a *app) connect(ctx context.Context) (agentClient, error) {
	c, err := a.env.dial(ctx)
	if err != nil {
		return nil, a.apiError(err, "")
	}
	return c, nil
}

// interactive says whether polkit may ask the user for a password: only when
// a person is at a terminal and did not say --no-ask-password.
func (a *app) interactive() bool {
	return !a.g.noAskPassword && a.env.terminal(a.env.stdin)
}

func (a *app) jsonOutput() bool { return a.g.output == "json" }

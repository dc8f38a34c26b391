package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/hyper2kvm/hyper2kvm/agent/preflight"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// Where the agent writes outputs unless agent.yaml says otherwise.
const (
	agentConfig      = "/etc/hyper2kvm/agent.yaml"
	defaultOutputDir = "/var/lib/hyper2kvm/output"
)

// preflightCmd is "hyperctl preflight FILE".
func (a *app) preflightCmd() *cobra.Command {
	var outDir string
	cmd := &cobra.Command{
		Use:   "preflight FILE",
		Short: "Run a manifest's pre-flight checks without queueing it",
		Long: `Run the checks a job runs before it writes anything, as the calling user and
without the agent: each source readable by you, whole (its format's own
tables) and not changed in the last seconds, and room for the outputs on
the output filesystem (the source's allocated size, 60% of it when
compressed, plus up to 64 MiB of slack). The checks inside the guest (encrypted volumes,
dirty filesystems) run in the job, after INSPECT.

Exit 0 when nothing blocks (warnings are printed), 1 when a check blocks,
with the reason and the fix.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runPreflight(cmd.Context(), args[0], outDir)
		},
	}
	cmd.Flags().StringVar(&outDir, "output-dir", "", "the agent's output directory (default: output_dir of "+agentConfig+", else "+defaultOutputDir+")")
	return cmd
}

// preflightVM is one VM's checks in -o json.
type preflightVM struct {
	Name    string         `json:"name"`
	Blocked bool           `json:"blocked"`
	Checks  []report.Check `json:"checks"`
}

type preflightResult struct {
	File string        `json:"file"`
	OK   bool          `json:"ok"`
	VMs  []preflightVM `json:"vms"`
}

func (a *app) runPreflight(ctx context.Context, file, outDir string) error {
	_, m, probs, err := a.parseManifestFile(file)
	if err != nil {
		return err
	}
	if len(probs) > 0 {
		a.printValidateResult(validateResult{File: file, Errors: toProblemJSON(probs)})
		return silentExit(exitFailed)
	}
	if outDir == "" {
		outDir = configuredOutputDir()
	}
	res := preflightResult{File: file, OK: true}
	for _, vm := range m.Split() {
		r := preflight.Source(ctx, vm.Pipeline, preflight.Options{OutputDir: outDir, Settled: true})
		res.VMs = append(res.VMs, preflightVM{Name: vm.Name, Blocked: r.Blocked(), Checks: r})
		res.OK = res.OK && !r.Blocked()
	}
	if a.jsonOutput() {
		if err := writeJSON(a.env.stdout, res); err != nil {
			return fail(exitFailed, "cannot write output: %w", err)
		}
	} else {
		w := a.env.stdout
		for _, vm := range res.VMs {
			fmt.Fprintf(w, "%s:\n", vm.Name)
			t := &table{}
			t.add("CHECK", "STATUS", "DETAIL")
			for _, c := range vm.Checks {
				st := c.Status
				switch st {
				case preflight.Blocker:
					st = a.paint(ansiRed+ansiBold, st)
				case preflight.Warning:
					st = a.paint(ansiYellow, st)
				case preflight.OK:
					st = a.paint(ansiGreen, st)
				}
				t.add(c.Name, st, c.Message)
			}
			t.write(w)
			for _, c := range vm.Checks {
				if c.Fix != "" {
					fmt.Fprintf(w, "  %s: %s\n", c.Name, c.Fix)
				}
			}
		}
		if res.OK {
			fmt.Fprintf(w, "%s nothing blocks %s\n", a.paint(ansiGreen+ansiBold, "ok:"), file)
		} else {
			fmt.Fprintf(w, "%s %s would fail before writing anything\n", a.paint(ansiRed+ansiBold, "blocked:"), file)
		}
	}
	if !res.OK {
		return silentExit(exitFailed)
	}
	return nil
}

// configuredOutputDir reads output_dir from agent.yaml (world-readable)
// without the agent's config package, which hyperctl does not link.
func configuredOutputDir() string {
	data, err := os.ReadFile(agentConfig)
	if err != nil {
		return defaultOutputDir
	}
	var c struct {
		OutputDir string `yaml:"output_dir"`
	}
	if yaml.Unmarshal(data, &c) != nil || c.OutputDir == "" {
		return defaultOutputDir
	}
	return c.OutputDir
}

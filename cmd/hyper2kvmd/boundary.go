package main

import (
	"context"
	"os"
	"path/filepath"

	"github.com/hyper2kvm/hyper2kvm/agent"
	"github.com/hyper2kvm/hyper2kvm/agent/hooks"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/preflight"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// boundary is what the worker does at the engine's stage boundaries: the
// pre-flight checks (before LOAD, after INSPECT), then the manifest's
// hooks for that point (docs/WORKFLOW.md).
type boundary struct {
	m         *manifest.Manifest
	outputDir string
	log       *agent.Logger
	fields    agent.Fields
	hooks     *hookRunner // nil: no hooks
}

func (b *boundary) at(ctx context.Context, point string, rep *report.Report) error {
	var checks preflight.Result
	switch point {
	case "pre_load":
		checks = preflight.Source(ctx, b.m.Pipeline, preflight.Options{OutputDir: b.outputDir})
		if b.hooks != nil {
			checks = append(checks, b.hooks.r.Check(b.hooks.hk))
		}
	case "post_inspect":
		checks = preflight.Guest(rep.Guest, b.m.Pipeline)
	}
	if len(checks) > 0 {
		rep.Preflight = append(rep.Preflight, checks...)
		rep.Warnings = append(rep.Warnings, checks.Warnings()...)
		for _, c := range checks {
			switch c.Status {
			case preflight.Blocker:
				b.log.Errorf(b.fields, "pre-flight %s: %s; fix: %s", c.Name, c.Message, c.Fix)
			case preflight.Warning:
				b.log.Warnf(b.fields, "pre-flight %s: %s (%s)", c.Name, c.Message, c.Fix)
			default:
				b.log.Debugf(b.fields, "pre-flight %s: %s: %s", c.Name, c.Status, c.Message)
			}
		}
		if err := checks.Err(); err != nil {
			return err
		}
	}
	if b.hooks != nil {
		return b.hooks.run(ctx, point, rep)
	}
	return nil
}

// hookRunner runs the manifest's hooks for the worker: their lines go to
// the job's journal (the worker's own, with the job's fields), their runs
// into the report.
type hookRunner struct {
	r  *hooks.Runner
	hk *manifest.Hooks
	m  *manifest.Manifest
}

// newHookRunner is nil when the manifest has no hooks.
func newHookRunner(spec agent.JobSpec, m *manifest.Manifest, log *agent.Logger, fields agent.Fields) *hookRunner {
	if m == nil || m.Pipeline == nil || m.Pipeline.Hooks == nil {
		return nil
	}
	out := spec.OutputDir
	if c := m.Pipeline.Convert; c != nil && c.OutputDir != "" {
		out = c.OutputDir
	}
	self, err := os.Executable()
	if err != nil {
		self = ""
	}
	return &hookRunner{hk: m.Pipeline.Hooks, m: m, r: &hooks.Runner{
		Job:  hooks.Job{ID: spec.ID, Name: m.Name, SourcePath: m.Pipeline.Load.SourcePath, OutputDir: filepath.Clean(out), UID: spec.SourceUID},
		Self: self,
		Log:  func(line string) { log.Infof(fields, "%s", line) },
	}}
}

func (h *hookRunner) run(ctx context.Context, point string, rep *report.Report) error {
	list := h.hk.At(point)
	if len(list) == 0 {
		return nil
	}
	runs, err := h.r.Run(ctx, point, list)
	rep.Hooks = append(rep.Hooks, runs...)
	for _, run := range runs {
		if run.Status == "failed" && run.Continue {
			rep.Warnings = append(rep.Warnings, "hook "+point+" "+run.Target+" failed (continue_on_error): "+run.Error)
		}
	}
	return err
}

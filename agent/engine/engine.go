// Package engine runs one VM's pipeline, LOAD -> INSPECT -> FIX -> CONVERT ->
// VALIDATE, with real tools, and writes the report. The worker (hyper2kvmd
// worker, inside a job's transient unit) and hyper2kvmd convert both call Run.
// The agent never imports it.
package engine

import (
	"context"
	"errors"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/progress"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// Options are what the caller decides beyond the manifest.
type Options struct {
	JobID     string
	OutputDir string // where the outputs go unless the manifest's convert.output_dir says otherwise
	WorkDir   string // scratch space (overlays, FUSE mount points); removed by Run
	Backend   string // default guest-access backend when the manifest names none
	Progress  func(progress.Update)
}

// Run converts one VM. vm must be a validated single-VM manifest (a batch is
// split by the agent first). The report is returned even when err is non-nil.
func Run(ctx context.Context, vm *manifest.Manifest, o Options) (*report.Report, error) {
	return nil, errors.New("engine: not implemented yet")
}

package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

// Files in a job's directory, /var/lib/hyper2kvm/jobs/<id>/. The agent
// writes job.json and manifest.json before starting the unit; the worker
// writes started (its first act) and report.json (its last); the unit's
// ExecStopPost writes oom-kills (see oomProbe) after the worker is gone.
const (
	JobFile      = "job.json"
	ManifestFile = "manifest.json"
	ReportFile   = "report.json"
	StartedFile  = "started"
	OOMFile      = "oom-kills"
)

// JobSpec is job.json: what the worker needs beyond the manifest.
type JobSpec struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Batch     string `json:"batch,omitempty"`
	Claim     string `json:"claim"`      // the claimed file in processing/
	OutputDir string `json:"output_dir"` // default output directory
	WorkDir   string `json:"work_dir"`   // scratch, removed by the engine
	Backend   string `json:"backend"`    // default guest-access backend
	Verbose   bool   `json:"verbose,omitempty"`
	Priority  int    `json:"priority"`
	// SourceUID is the user who dropped or submitted the job: the worker
	// (root) reads only files that user could read (engine.Options.SourceUID).
	// 0 for root's jobs, and in job.json of agents before this field.
	SourceUID int64 `json:"source_uid,omitempty"`
	// TrustedSource is the image the agent claimed into processing/ for a
	// dropped image: the worker reads it without that check.
	TrustedSource string `json:"trusted_source,omitempty"`
	// StartedAt is when the agent started the job, and KeptOutputs the
	// files already in the manifest's own output_dir under names the job
	// may write: what CleanOutputs needs to tell the job's files apart.
	StartedAt   time.Time `json:"started_at,omitzero"`
	KeptOutputs []string  `json:"kept_outputs,omitempty"`
}

// ReadJobDir reads job.json and manifest.json from dir.
func ReadJobDir(dir string) (JobSpec, *manifest.Manifest, error) {
	var spec JobSpec
	data, err := os.ReadFile(filepath.Join(dir, JobFile))
	if err != nil {
		return spec, nil, fmt.Errorf("cannot read job: %w", err)
	}
	if err := json.Unmarshal(data, &spec); err != nil {
		return spec, nil, fmt.Errorf("cannot parse %s: %w", JobFile, err)
	}
	data, err = os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return spec, nil, fmt.Errorf("cannot read job manifest: %w", err)
	}
	m, err := manifest.Parse(data)
	if err != nil {
		return spec, nil, fmt.Errorf("cannot parse job manifest %s: %w", filepath.Join(dir, ManifestFile), err)
	}
	return spec, m, nil
}

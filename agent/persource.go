package agent

import (
	"encoding/json"
	"path/filepath"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

// limits.per_source caps the jobs running at once that read from one
// source directory: a datastore or an NFS export saturates long before
// the host's CPUs do. A job over the cap stays pending and is looked at
// again at the next dispatch (a job ending is one).

// sourceDir is the directory the job reads its source from, "" when the
// manifest says none.
func sourceDir(r *record) string {
	var m manifest.Manifest
	if json.Unmarshal(r.VM, &m) != nil || m.Pipeline == nil || m.Pipeline.Load.SourcePath == "" {
		return ""
	}
	return filepath.Dir(m.Pipeline.Load.SourcePath)
}

// sourceFull reports whether r's source directory already has
// limits.per_source jobs running. Called with a.mu held.
func (a *Agent) sourceFull(r *record) bool {
	limit := a.cfg.Limits.PerSource
	if limit <= 0 {
		return false
	}
	dir := sourceDir(r)
	if dir == "" {
		return false
	}
	n := 0
	for _, o := range a.st.live {
		if o.State == jobs.Running && o != r && sourceDir(o) == dir {
			n++
		}
	}
	return n >= limit
}

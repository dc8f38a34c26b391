package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hyper2kvm/hyper2kvm/agent"
	"github.com/hyper2kvm/hyper2kvm/agent/engine"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/sources"
	"github.com/hyper2kvm/hyper2kvm/agent/vsphere"
)

// remote is the worker's engine.Remote: it exports the VM from its source
// with the password systemd gave the job's unit as a credential.
type remote struct {
	load   manifest.Load
	jobID  string
	jobDir string
}

// export is the job's vSphere export: its source, that source's password
// from the unit's credential, and the VM the manifest names.
func (r remote) export() (vsphere.JobExport, error) {
	src, err := sources.Get(sources.DefaultDir, r.load.Source)
	if err != nil {
		return vsphere.JobExport{}, err
	}
	pw, err := sources.UnitPassword(src.Name)
	if err != nil {
		return vsphere.JobExport{}, err
	}
	return vsphere.JobExport{
		Source: src, Password: string(pw), JobID: r.jobID, JobDir: r.jobDir, Snapshot: r.load.Snapshot,
		VM: vsphere.Ref{Path: r.load.VM, Moref: r.load.VMMoref, UUID: r.load.VMUUID},
	}, nil
}

func (r remote) Fetch(ctx context.Context, dir string, progress func(done, total int64)) (*engine.Fetched, error) {
	x, err := r.export()
	if err != nil {
		return nil, err
	}
	disks, hw, err := x.Run(ctx, dir, progress)
	got := &engine.Fetched{Hardware: hw}
	for _, d := range disks {
		got.Disks = append(got.Disks, engine.FetchedDisk{ID: d.ID, File: d.File, Display: d.Display})
	}
	return got, err
}

// Stream is the worker's engine.StreamingRemote: flat datastore disks of
// a powered-off VM convert while they download; the session stays open
// until the engine stops it.
func (r remote) Stream(ctx context.Context, dir string, progress func(done, total int64)) (*engine.Streamed, error) {
	x, err := r.export()
	if err != nil {
		return nil, err
	}
	s, hw, err := x.Stream(ctx, dir, progress)
	var ns *vsphere.NotStreamableError
	if errors.As(err, &ns) {
		return &engine.Streamed{Hardware: hw}, &engine.NotStreamableError{Reason: err.Error()}
	}
	if err != nil {
		return &engine.Streamed{Hardware: hw}, err
	}
	got := &engine.Streamed{Hardware: hw, Wait: s.Wait, Stop: func(cause error) error { return s.Stop(ctx, cause) }}
	for _, d := range s.Disks {
		got.Disks = append(got.Disks, engine.StreamedDisk{ID: d.ID, Spec: d.Spec, Display: d.Display})
	}
	return got, nil
}

// removeSnapshot is the job unit's ExecStopPost for a job that reads from
// a source: it removes a snapshot the worker recorded and did not remove
// (the worker was killed, or the removal failed).
func removeSnapshot(ctx context.Context, dir string) error {
	spec, m, err := agent.ReadJobDir(dir)
	if err != nil || m.Pipeline == nil || !m.Pipeline.Load.IsRemote() {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, vsphere.SnapshotFile)); err != nil {
		return nil
	}
	log := agent.NewLogger(os.Stderr, false)
	fields := agent.Fields{agent.FieldJobID: spec.ID, agent.FieldManifest: spec.Claim}
	src, err := sources.Get(sources.DefaultDir, m.Pipeline.Load.Source)
	if err == nil {
		// systemd before 254 takes the unit's credentials away when its
		// main process ends, before ExecStopPost: then decrypt the stored
		// one (this runs as root, like the agent).
		pw, uerr := sources.UnitPassword(src.Name)
		if uerr != nil {
			pw, err = sources.OpenPassword(ctx, sources.DefaultCredentialDir, src.Name)
		}
		if err == nil {
			var moref string
			moref, err = vsphere.CleanupSnapshot(ctx, src, string(pw), dir)
			if err == nil && moref != "" {
				log.Infof(fields, "job %s: removed snapshot %s its worker left on source %s", spec.ID, moref, src.Name)
			}
		}
	}
	if err != nil {
		log.Errorf(fields, "job %s: %v", spec.ID, err)
		return &exitErr{1, fmt.Errorf("cannot remove the job's snapshot: %w", err)}
	}
	return nil
}

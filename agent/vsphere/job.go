package vsphere

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/report"
	"github.com/hyper2kvm/hyper2kvm/agent/sources"
)

// SnapshotFile is the file of a job's directory that names the snapshot
// the job took, from its creation until its removal: a job killed in
// between (kill -9, a crash, a reboot) leaves it, and the job unit's
// ExecStopPost, or the job's next run, removes the snapshot it names.
const SnapshotFile = "vsphere-snapshot"

// JobExport is one job's export, run by the worker in the job's unit.
type JobExport struct {
	Source   *sources.Source
	Password string
	VM       Ref
	Snapshot bool
	JobID    string
	JobDir   string // holds SnapshotFile
}

// Run exports the VM's disks into dir and returns them with the VM's
// hardware (also on failure, when it was read).
func (j JobExport) Run(ctx context.Context, dir string, progress func(done, total int64)) ([]ExportedDisk, *report.Hardware, error) {
	c, err := Connect(ctx, j.Source, j.Password)
	if err != nil {
		return nil, nil, err
	}
	defer c.Logout(context.WithoutCancel(ctx))
	// A snapshot an earlier run of this job left goes first.
	if err := c.removeRecorded(ctx, j.JobDir); err != nil {
		return nil, nil, err
	}
	obj, err := c.FindVM(ctx, j.VM)
	if err != nil {
		return nil, nil, err
	}
	vm, err := c.ReadVM(ctx, obj)
	if err != nil {
		return nil, nil, err
	}
	record := filepath.Join(j.JobDir, SnapshotFile)
	disks, err := c.Export(ctx, vm, ExportOptions{
		Dir: dir, Snapshot: j.Snapshot, SnapshotName: "hyper2kvm-" + j.JobID,
		Parallel: j.Source.MaxParallelExports, Progress: progress,
		SnapshotTaken: func(moref string) error { return writeSynced(record, moref+"\n") },
	})
	if vm.Hardware.Snapshot != "" && !errors.As(err, new(*SnapshotRemovalError)) {
		// Removed (Export's own defer): nothing is left to recover.
		os.Remove(record)
	}
	return disks, &vm.Hardware, err
}

// CleanupSnapshot removes the snapshot a job recorded in jobDir, if any:
// the job unit's ExecStopPost, after the worker ended however it ended.
func CleanupSnapshot(ctx context.Context, src *sources.Source, password, jobDir string) (string, error) {
	moref, err := readRecord(jobDir)
	if err != nil || moref == "" {
		return "", err
	}
	c, err := Connect(ctx, src, password)
	if err != nil {
		return moref, err
	}
	defer c.Logout(context.WithoutCancel(ctx))
	return moref, c.removeRecorded(ctx, jobDir)
}

func (c *Client) removeRecorded(ctx context.Context, jobDir string) error {
	moref, err := readRecord(jobDir)
	if err != nil || moref == "" {
		return err
	}
	if err := c.RemoveSnapshot(ctx, moref); err != nil {
		return err
	}
	return os.Remove(filepath.Join(jobDir, SnapshotFile))
}

func readRecord(jobDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(jobDir, SnapshotFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("cannot read the snapshot record: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// writeSynced writes s to p and makes it durable before the export reads
// anything: the record must outlive a crash right after.
func writeSynced(p, s string) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("cannot record the snapshot: %w", err)
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return fmt.Errorf("cannot record the snapshot: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("cannot record the snapshot: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("cannot record the snapshot: %w", err)
	}
	if d, err := os.Open(filepath.Dir(p)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

package vsphere

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
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

// Streaming is a job's export whose disks are served to qemu while they
// download (JobExport.Stream): the session stays open until Stop.
type Streaming struct {
	Disks    []StreamedDisk // in Hardware.Disks order
	Hardware *report.Hardware
	c        *Client
	served   []*servedDisk
}

// StreamedDisk is one disk of a Streaming.
type StreamedDisk struct {
	ID      string
	Spec    string // the json: filename qemu reads it by, format raw
	Display string // the datastore path of the disk
}

// Wait returns once disk id is downloaded whole and synced, or with its
// download's error.
func (s *Streaming) Wait(id string) error {
	for _, d := range s.served {
		if d.id == id {
			return d.wait()
		}
	}
	return fmt.Errorf("no disk %s is being downloaded", id)
}

// Stop ends the downloads (cancelled when cause is not nil, else waited
// for) and their exports, removes what a failed download left, and logs
// out. It returns the first download error, else cause.
func (s *Streaming) Stop(ctx context.Context, cause error) error {
	var first error
	for _, d := range s.served {
		if err := d.stop(cause); err != nil && first == nil {
			first = err
		}
	}
	s.c.Logout(context.WithoutCancel(ctx))
	return first
}

// Stream starts the export of a powered-off VM whose disks are all flat
// datastore files (see ExportConverted), each served read-only to qemu
// on a private unix socket while it downloads into dir. A VM that cannot
// stream (running, a disk not one flat extent) gets *NotStreamableError
// with nothing left in dir and the session closed: the caller exports it
// with Run. ctx bounds the downloads: it must outlive the conversion.
func (j JobExport) Stream(ctx context.Context, dir string, progress func(done, total int64)) (_ *Streaming, _ *report.Hardware, err error) {
	c, err := Connect(ctx, j.Source, j.Password)
	if err != nil {
		return nil, nil, err
	}
	s := &Streaming{c: c}
	defer func() {
		if err != nil {
			s.Stop(ctx, err)
		}
	}()
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
	hw := &vm.Hardware
	if len(vm.disks) == 0 {
		return nil, hw, fmt.Errorf("VM %s of source %s has no virtual disk to export", hw.Name, c.src.Name)
	}
	if hw.PowerState != string(types.VirtualMachinePowerStatePoweredOff) {
		return nil, hw, &NotStreamableError{Disk: hw.Disks[0].ID, Reason: "the VM is " + hw.PowerState + " (a running VM is exported from a snapshot)"}
	}
	if progress == nil {
		progress = func(int64, int64) {}
	}
	parallel := j.Source.MaxParallelExports
	if parallel <= 0 {
		parallel = 2
	}
	x := &exporter{c: c, vm: vm, o: ExportOptions{Dir: dir, Parallel: parallel, Progress: progress}, slots: make(chan struct{}, parallel)}
	// Every descriptor is read first: a disk that cannot stream sends the
	// whole VM to the ordinary export before anything is downloaded.
	type plan struct {
		ds   *object.Datastore
		p    string
		desc *imgfmt.VMDKDescriptor
		raw  []byte
	}
	plans := make([]plan, len(hw.Disks))
	for i, d := range hw.Disks {
		ds, p, err := x.datastoreFile(ctx, d.File)
		if err != nil {
			return nil, hw, fmt.Errorf("disk %s (%s): %w", d.ID, d.File, err)
		}
		desc, raw, err := x.fetchDescriptor(ctx, ds.NewURL(p), d.ID)
		if err != nil {
			return nil, hw, fmt.Errorf("disk %s (%s): %w", d.ID, d.File, err)
		}
		plans[i] = plan{ds, p, desc, raw}
		x.total.Add(d.Capacity)
	}
	hw.ExportMethod = "datastore"
	for i, d := range hw.Disks {
		sd, err := x.serveDisk(ctx, i, filepath.Join(dir, d.ID+".vmdk"), plans[i].ds, plans[i].p, plans[i].desc, plans[i].raw)
		if err != nil {
			return nil, hw, fmt.Errorf("disk %s (%s): %w", d.ID, d.File, err)
		}
		s.served = append(s.served, sd)
		s.Disks = append(s.Disks, StreamedDisk{ID: d.ID, Spec: sd.spec, Display: d.File})
	}
	hw.Overlapped = true
	s.Hardware = hw
	return s, hw, nil
}

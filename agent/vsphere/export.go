package vsphere

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/nfc"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
	"github.com/hyper2kvm/hyper2kvm/agent/noreplace"
)

// PoweredOnError refuses to export a running VM without a snapshot.
type PoweredOnError struct{ Source, VM, State string }

func (e *PoweredOnError) Error() string {
	return fmt.Sprintf("VM %s of source %s is %s: its disks change while it runs; shut it down in vSphere first, or set load.snapshot: true to export a snapshot taken now (quiesced when VMware Tools runs; removed after the export)", e.VM, e.Source, e.State)
}

// ExportOptions say how Export runs.
type ExportOptions struct {
	// Dir receives the disk files (it must exist).
	Dir string
	// Snapshot allows a running VM: a snapshot is taken, exported and
	// removed whatever happens.
	Snapshot     bool
	SnapshotName string
	// SnapshotTaken is called with the snapshot's moref as soon as it
	// exists, before anything is read: what a restarted job needs to
	// remove it (RemoveSnapshot). An error stops the export.
	SnapshotTaken func(moref string) error
	// Parallel is how many disks download at once (default 2).
	Parallel int
	// Progress gets the bytes downloaded so far and the total known.
	Progress func(done, total int64)
}

// ExportedDisk is one disk written into ExportOptions.Dir.
type ExportedDisk struct {
	ID      string // Hardware.Disks[i].ID
	File    string // the file to convert: an image, or a VMDK descriptor with its extents beside it
	Display string // the datastore path of the disk
}

// Export copies vm's disks into o.Dir (in Hardware.Disks order) through an
// HttpNfcLease, or the datastore where the server has no ExportVm, and
// records in vm.Hardware how (ExportMethod, Snapshot).
func (c *Client) Export(ctx context.Context, vm *VM, o ExportOptions) (_ []ExportedDisk, err error) {
	if len(vm.disks) == 0 {
		return nil, fmt.Errorf("VM %s of source %s has no virtual disk to export", vm.Hardware.Name, c.src.Name)
	}
	if o.Parallel <= 0 {
		o.Parallel = 2
	}
	if o.Progress == nil {
		o.Progress = func(int64, int64) {}
	}
	running := vm.Hardware.PowerState != string(types.VirtualMachinePowerStatePoweredOff)
	if running && !o.Snapshot {
		return nil, &PoweredOnError{Source: c.src.Name, VM: vm.Hardware.Name, State: vm.Hardware.PowerState}
	}
	x := &exporter{c: c, vm: vm, o: o}
	if running {
		snap, err := c.createSnapshot(ctx, vm, o.SnapshotName)
		if err != nil {
			return nil, err
		}
		vm.Hardware.Snapshot = snap.Value
		// Removed even when ctx is cancelled (a job cancel): the removal
		// is its own short transaction on the server.
		defer func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
			defer cancel()
			if rerr := c.RemoveSnapshot(rctx, snap.Value); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}()
		if o.SnapshotTaken != nil {
			if err := o.SnapshotTaken(snap.Value); err != nil {
				return nil, err
			}
		}
		res, err := methods.ExportSnapshot(ctx, c.vc, &types.ExportSnapshot{This: snap})
		if err != nil {
			return nil, fmt.Errorf("cannot export snapshot %s of VM %s: %w", snap.Value, vm.Hardware.Name, err)
		}
		return x.fromLease(ctx, nfc.NewLease(c.vc, res.Returnval))
	}
	lease, err := vm.obj.Export(ctx)
	if err != nil {
		if fault.Is(err, &types.NotImplemented{}) || fault.Is(err, &types.NotSupported{}) || fault.Is(err, &types.MethodNotFound{}) || strings.Contains(err.Error(), "ExportVm") {
			// A server without ExportVm (govmomi's simulator): read the
			// disk files from the datastore, which a powered-off VM does
			// not write to.
			return x.fromDatastore(ctx)
		}
		return nil, fmt.Errorf("cannot export VM %s: %w", vm.Hardware.Name, err)
	}
	return x.fromLease(ctx, lease)
}

type exporter struct {
	c           *Client
	vm          *VM
	o           ExportOptions
	done, total atomic.Int64
	// slots, when set, limits the downloads running at once (Stream).
	slots chan struct{}
}

func (x *exporter) fromLease(ctx context.Context, lease *nfc.Lease) (_ []ExportedDisk, err error) {
	x.vm.Hardware.ExportMethod = "nfc"
	info, err := lease.Wait(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("the export lease of VM %s did not become ready (is its datastore accessible? is the host in maintenance?): %w", x.vm.Hardware.Name, err)
	}
	// The updater renews the lease (HttpNfcLeaseProgress) while the disks
	// download: a lease left without progress times out on the server.
	upd := lease.StartUpdater(ctx, info)
	defer func() {
		upd.Done()
		if err != nil {
			_ = lease.Abort(context.WithoutCancel(ctx), nil)
		} else if cerr := lease.Complete(ctx); cerr != nil {
			err = fmt.Errorf("cannot complete the export lease of VM %s: %w", x.vm.Hardware.Name, cerr)
		}
	}()
	var urls []*url.URL
	for i, du := range info.DeviceUrl {
		if du.Disk == nil || !*du.Disk || i >= len(info.Items) {
			continue
		}
		urls = append(urls, info.Items[i].URL)
	}
	if len(urls) != len(x.vm.disks) {
		return nil, fmt.Errorf("the export lease of VM %s offers %d disks, the VM has %d", x.vm.Hardware.Name, len(urls), len(x.vm.disks))
	}
	return x.all(ctx, func(ctx context.Context, i int, dst string) error {
		u := urls[x.vm.listed[i]]
		if err := x.download(ctx, u, dst); err != nil {
			return err
		}
		return x.extents(ctx, i, dst)
	})
}

func (x *exporter) fromDatastore(ctx context.Context) ([]ExportedDisk, error) {
	x.vm.Hardware.ExportMethod = "datastore"
	return x.all(ctx, func(ctx context.Context, i int, dst string) error {
		ds, p, err := x.datastoreFile(ctx, x.vm.Hardware.Disks[i].File)
		if err != nil {
			return err
		}
		if err := x.download(ctx, ds.NewURL(p), dst); err != nil {
			return err
		}
		return x.extents(ctx, i, dst)
	})
}

// all runs fetch for every disk, o.Parallel at once; the first error
// stops the others.
func (x *exporter) all(ctx context.Context, fetch func(ctx context.Context, i int, dst string) error) ([]ExportedDisk, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	out := make([]ExportedDisk, len(x.vm.disks))
	for i, d := range x.vm.Hardware.Disks {
		x.total.Add(d.Capacity)
		out[i] = ExportedDisk{ID: d.ID, File: filepath.Join(x.o.Dir, d.ID+".vmdk"), Display: d.File}
	}
	sem := make(chan struct{}, x.o.Parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for i := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			if err := fetch(ctx, i, out[i].File); err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("disk %s (%s): %w", out[i].ID, out[i].Display, err)
					cancel(first)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return out, nil
}

// datastoreFile resolves "[ds] dir/file.vmdk".
func (x *exporter) datastoreFile(ctx context.Context, file string) (*object.Datastore, string, error) {
	var dp object.DatastorePath
	if !dp.FromString(file) {
		return nil, "", fmt.Errorf("cannot read the datastore path %q", file)
	}
	_, dc, err := x.c.finder(ctx)
	if err != nil {
		return nil, "", err
	}
	f := find.NewFinder(x.c.vc, false)
	f.SetDatacenter(dc)
	ds, err := f.Datastore(ctx, dp.Datastore)
	if err != nil {
		return nil, "", fmt.Errorf("datastore %s is not accessible from source %s: %w", dp.Datastore, x.c.src.Name, err)
	}
	return ds, dp.Path, nil
}

// extents fetches the extents of a VMDK descriptor downloaded to dst (a
// flat disk: the server serves the descriptor alone) from the datastore
// directory of disk i, beside it.
func (x *exporter) extents(ctx context.Context, i int, dst string) error {
	b, err := readHead(dst, 64<<10)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(bytes.TrimLeft(b, "\n\r\t "), []byte("# Disk DescriptorFile")) {
		return nil
	}
	desc, err := imgfmt.ParseVMDKDescriptor(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("the server sent a VMDK descriptor that cannot be read: %w", err)
	}
	ds, p, err := x.datastoreFile(ctx, x.vm.Hardware.Disks[i].File)
	if err != nil {
		return err
	}
	for _, e := range desc.Extents {
		if e.File == "" || strings.ContainsAny(e.File, "/\\") || e.File == "." || e.File == ".." {
			return fmt.Errorf("the disk's descriptor names the extent %q, not a file beside it", e.File)
		}
		if err := x.download(ctx, ds.NewURL(path.Join(path.Dir(p), e.File)), filepath.Join(filepath.Dir(dst), e.File)); err != nil {
			return err
		}
	}
	return nil
}

func readHead(p string, n int) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	m, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b[:m], nil
}

// maxAttempts is how many times a dropped download is resumed.
const maxAttempts = 6

// download writes u into dst through dst.part (sparse: zero blocks are
// not written), resuming with a Range request after a dropped connection,
// and renames it into place; dst must not exist.
func (x *exporter) download(ctx context.Context, u *url.URL, dst string) error {
	part := dst + ".part"
	f, err := os.OpenFile(part, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("cannot create %s: %w", part, err)
	}
	defer func() {
		f.Close()
		os.Remove(part)
	}()
	var off int64
	var lastErr error
	for attempt := 1; ; attempt++ {
		if attempt > maxAttempts {
			return fmt.Errorf("download of %s failed %d times, the last: %w", u.Path, maxAttempts, lastErr)
		}
		hdr := map[string]string{}
		if off > 0 {
			hdr["Range"] = fmt.Sprintf("bytes=%d-", off)
		}
		res, err := x.c.vc.DownloadRequest(ctx, u, &soap.Download{Method: http.MethodGet, Headers: hdr})
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			lastErr = err
			continue
		}
		switch {
		case res.StatusCode == http.StatusOK:
			if off > 0 {
				// The server ignored the Range: start over.
				x.done.Add(-off)
				off = 0
			}
		case res.StatusCode == http.StatusPartialContent && off > 0:
		case res.StatusCode == http.StatusNotFound:
			res.Body.Close()
			return fmt.Errorf("the server has no file at %s (404): is the datastore accessible?", u.Path)
		case res.StatusCode == http.StatusUnauthorized || res.StatusCode == http.StatusForbidden:
			res.Body.Close()
			return fmt.Errorf("the server refused the download of %s (%s): the user needs the Datastore.Browse and Datastore.FileManagement or VApp.Export privileges (docs/SOURCES.md)", u.Path, res.Status)
		default:
			res.Body.Close()
			lastErr = fmt.Errorf("%s", res.Status)
			continue
		}
		n, err := x.copySparse(f, res.Body, off)
		res.Body.Close()
		if err == nil && res.ContentLength >= 0 && n < res.ContentLength {
			err = fmt.Errorf("the connection ended after %d of %d bytes", n, res.ContentLength)
		}
		off += n
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		lastErr = err
	}
	if err := f.Truncate(off); err != nil {
		return fmt.Errorf("cannot write %s: %w", part, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("cannot write %s: %w", part, err)
	}
	if err := noreplace.Rename(part, dst); err != nil {
		return fmt.Errorf("cannot move %s into place: %w", dst, err)
	}
	return nil
}

const block = 1 << 20

// copySparse writes r into f from off, skipping all-zero blocks (the
// file is truncated to its length at the end), and counts progress.
func (x *exporter) copySparse(f *os.File, r io.Reader, off int64) (int64, error) {
	buf := make([]byte, block)
	var n int64
	for {
		m, err := fill(r, buf)
		if m > 0 {
			if !allZero(buf[:m]) {
				if _, werr := f.WriteAt(buf[:m], off+n); werr != nil {
					return n, fmt.Errorf("cannot write the download: %w", werr)
				}
			}
			n += int64(m)
			x.o.Progress(x.done.Add(int64(m)), x.total.Load())
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// fill reads until buf is full or the reader ends: io.EOF only on a clean
// end; a connection dropped mid-body is the transport's own error
// (io.ErrUnexpectedEOF), which io.ReadFull would confuse with a short
// last block.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// zeroBlock is compared against with bytes.Equal (vectorised), not a loop.
var zeroBlock = make([]byte, block)

func allZero(b []byte) bool { return bytes.Equal(b, zeroBlock[:len(b)]) }

// createSnapshot takes a snapshot of a running VM, quiesced when Tools
// runs in it.
func (c *Client) createSnapshot(ctx context.Context, vm *VM, name string) (types.ManagedObjectReference, error) {
	if name == "" {
		name = "hyper2kvm-export"
	}
	task, err := vm.obj.CreateSnapshot(ctx, name, "taken by hyper2kvm to export this VM; removed after the export", false, vm.ToolsRunning)
	if err != nil {
		return types.ManagedObjectReference{}, fmt.Errorf("cannot take a snapshot of VM %s: %w", vm.Hardware.Name, err)
	}
	res, err := task.WaitForResult(ctx)
	if err != nil {
		return types.ManagedObjectReference{}, fmt.Errorf("cannot take a snapshot of VM %s: %w", vm.Hardware.Name, err)
	}
	ref, ok := res.Result.(types.ManagedObjectReference)
	if !ok {
		return types.ManagedObjectReference{}, fmt.Errorf("the snapshot task of VM %s returned %T, not a snapshot", vm.Hardware.Name, res.Result)
	}
	return ref, nil
}

// RemoveSnapshot removes the snapshot moref (its disks consolidated into
// the VM); one already gone is not an error.
func (c *Client) RemoveSnapshot(ctx context.Context, moref string) error {
	ref := types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: moref}
	consolidate := true
	res, err := methods.RemoveSnapshot_Task(ctx, c.vc, &types.RemoveSnapshot_Task{This: ref, RemoveChildren: false, Consolidate: &consolidate})
	if err == nil {
		err = object.NewTask(c.vc, res.Returnval).Wait(ctx)
	}
	if err != nil && !fault.Is(err, &types.ManagedObjectNotFound{}) {
		return &SnapshotRemovalError{Moref: moref, Err: err}
	}
	return nil
}

// SnapshotRemovalError says a snapshot hyper2kvm took could not be
// removed: the job's record of it stays for the next try.
type SnapshotRemovalError struct {
	Moref string
	Err   error
}

func (e *SnapshotRemovalError) Error() string {
	return fmt.Sprintf("cannot remove snapshot %s that hyper2kvm took (it is tried again when the job unit stops; else remove it in vSphere): %v", e.Moref, e.Err)
}

func (e *SnapshotRemovalError) Unwrap() error { return e.Err }

package vsphere

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
	"github.com/hyper2kvm/hyper2kvm/agent/noreplace"
	"github.com/hyper2kvm/hyper2kvm/agent/qemuimg"
)

// StreamOptions say how ExportConverted runs.
type StreamOptions struct {
	// Dir receives the downloaded disk files, as ExportOptions.Dir: the
	// source copy stays whole beside the output.
	Dir string
	// OutDir receives DISKID.FORMAT for every disk; none may exist.
	OutDir string
	// Format is the output format (qcow2 when empty).
	Format string
	// Parallel is how many disks stream at once (default 2).
	Parallel int
	// Progress gets the bytes downloaded so far and the total known.
	Progress func(done, total int64)
}

// ConvertedDisk is one disk ExportConverted downloaded and converted.
type ConvertedDisk struct {
	ExportedDisk
	Output string // the converted image
	Format string
}

// NotStreamableError says a disk cannot be converted while it downloads;
// the caller downloads it whole (Export) and converts it after.
type NotStreamableError struct{ Disk, Reason string }

func (e *NotStreamableError) Error() string {
	return fmt.Sprintf("disk %s cannot be converted while it downloads: %s", e.Disk, e.Reason)
}

// maxDescriptorFile bounds what is read as a disk's descriptor file: a
// real one is a few hundred bytes; a larger file is an image.
const maxDescriptorFile = 64 << 10

// ExportConverted downloads the disks of a powered-off VM from its
// datastore and converts each while it downloads: the flat extent is
// written to Dir (sparse, .part + rename, resumed with Range) and served
// at the same time, read-only, to `qemu-img convert` through an NBD
// export on a private unix socket whose reads wait for the bytes to
// arrive. qemu never talks to the server: the certificate pin, the
// session and every check of what the server sends stay here.
//
// Only a disk whose descriptor names one flat extent (createType vmfs or
// monolithicFlat, no parent) streams: a sparse or stream-optimized VMDK
// keeps its grain directory or footer where a reader needs it before the
// data (*NotStreamableError; nothing is left in Dir or OutDir then).
func (c *Client) ExportConverted(ctx context.Context, vm *VM, o StreamOptions) ([]ConvertedDisk, error) {
	if len(vm.disks) == 0 {
		return nil, fmt.Errorf("VM %s of source %s has no virtual disk to export", vm.Hardware.Name, c.src.Name)
	}
	if vm.Hardware.PowerState != string(types.VirtualMachinePowerStatePoweredOff) {
		return nil, &PoweredOnError{Source: c.src.Name, VM: vm.Hardware.Name, State: vm.Hardware.PowerState}
	}
	if o.Format == "" {
		o.Format = "qcow2"
	}
	if o.Parallel <= 0 {
		o.Parallel = 2
	}
	if o.Progress == nil {
		o.Progress = func(int64, int64) {}
	}
	vm.Hardware.ExportMethod = "datastore"
	x := &exporter{c: c, vm: vm, o: ExportOptions{Dir: o.Dir, Parallel: o.Parallel, Progress: o.Progress}}
	out := make([]ConvertedDisk, len(vm.disks))
	disks, err := x.all(ctx, func(ctx context.Context, i int, dst string) error {
		target := filepath.Join(o.OutDir, vm.Hardware.Disks[i].ID+"."+o.Format)
		if err := x.streamDisk(ctx, i, dst, target, o.Format); err != nil {
			return err
		}
		// Set once written: only what this call wrote is removed below.
		out[i].Output, out[i].Format = target, o.Format
		return nil
	})
	if err != nil {
		// The disks that made it are of no use without the others.
		for _, d := range out {
			if d.Output != "" {
				os.Remove(d.Output)
			}
		}
		return nil, err
	}
	for i := range out {
		out[i].ExportedDisk = disks[i]
	}
	return out, nil
}

// streamDisk fetches disk i's descriptor into dst, then its flat extent
// beside it while qemu-img converts it into target.
func (x *exporter) streamDisk(ctx context.Context, i int, dst, target, format string) error {
	id := x.vm.Hardware.Disks[i].ID
	ds, p, err := x.datastoreFile(ctx, x.vm.Hardware.Disks[i].File)
	if err != nil {
		return err
	}
	desc, raw, err := x.fetchDescriptor(ctx, ds.NewURL(p), id)
	if err != nil {
		return err
	}
	s, err := x.serveDisk(ctx, i, dst, ds, p, desc, raw)
	if err != nil {
		return err
	}
	_, cerr := qemuimg.Convert(ctx, qemuimg.ConvertOptions{
		Source: s.spec, SourceFormat: "raw",
		Target: target, TargetFormat: format,
		// The output gets its name only with its source whole on disk.
		Finish: func(*os.File) error { return s.wait() },
	})
	return s.stop(cerr)
}

// servedDisk is one disk downloading into the work directory while an
// NBD export serves it read-only to qemu.
type servedDisk struct {
	id   string
	spec string // the json: filename qemu opens it by, format raw
	// wait returns once the download is whole, synced and named, or with
	// its error.
	wait func() error
	// stop ends the download (when cause is not nil) and the export, and
	// removes what a failed download left; it returns the download's
	// error first (it says more than qemu-img's EIO), then cause.
	stop func(cause error) error
}

// serveDisk writes disk i's descriptor (raw, read from datastore path p
// of ds) into dst and starts downloading its flat extent beside it,
// served while it grows on a unix socket in a private directory.
func (x *exporter) serveDisk(ctx context.Context, i int, dst string, ds *object.Datastore, p string, desc *imgfmt.VMDKDescriptor, raw []byte) (_ *servedDisk, err error) {
	id := x.vm.Hardware.Disks[i].ID
	ext := desc.Extents[0]
	size := ext.Sectors * 512
	// The extent is kept as ID-flat.vmdk: two disks' extents may have the
	// same name in their own datastore directories, not in Dir.
	local := id + "-flat.vmdk"
	raw, err = imgfmt.RewriteVMDKExtents(raw, func(int, string) string { return local })
	if err != nil {
		return nil, fmt.Errorf("disk %s: cannot name the extent in the descriptor: %w", id, err)
	}
	if err := writeNewFile(dst, raw); err != nil {
		return nil, err
	}
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
			os.Remove(dst)
		}
	}()
	extDst := filepath.Join(filepath.Dir(dst), local)
	u := ds.NewURL(path.Join(path.Dir(p), ext.File))

	// The socket lives in a directory of its own, 0700: only this process
	// (and the qemu it starts) can reach the export.
	sockDir, err := os.MkdirTemp("", "hyper2kvm-nbd-")
	if err != nil {
		return nil, fmt.Errorf("cannot create the export's socket directory: %w", err)
	}
	undo = append(undo, func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "disk")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("cannot serve the download to qemu-img: %w", err)
	}
	undo = append(undo, func() { ln.Close() })

	part := extDst + ".part"
	f, err := os.OpenFile(part, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cannot create %s: %w", part, err)
	}
	undo = append(undo, func() { f.Close(); os.Remove(part) })
	if err := f.Truncate(size); err != nil {
		return nil, fmt.Errorf("cannot create %s: %w", part, err)
	}
	g := newGrowing(f, size)

	ctx, cancel := context.WithCancelCause(ctx)
	dl := make(chan error, 1)
	go func() {
		err := x.acquire(ctx)
		if err == nil {
			err = x.streamFile(ctx, u, f, size, g)
			x.release()
		}
		if err == nil {
			err = finishPart(f, part, extDst)
		}
		if err != nil {
			os.Remove(part)
			g.fail(err)
			cancel(err)
		}
		dl <- err
	}()
	served := make(chan struct{})
	go func() {
		serveNBD(ctx, ln, g)
		close(served)
	}()
	var mu sync.Mutex
	var dlErr error
	dlWaited := false
	waitDL := func() error {
		mu.Lock()
		defer mu.Unlock()
		if !dlWaited {
			dlErr, dlWaited = <-dl, true
		}
		return dlErr
	}
	spec, _ := json.Marshal(map[string]any{"driver": "raw", "file": map[string]any{
		"driver": "nbd", "server": map[string]string{"type": "unix", "path": sock}, "export": id,
	}})
	stop := func(cause error) error {
		if cause != nil {
			cancel(cause)
		}
		g.fail(context.Canceled) // no reader waits past here
		derr := waitDL()
		ln.Close()
		<-served
		cancel(nil)
		f.Close()
		os.RemoveAll(sockDir)
		if derr != nil {
			os.Remove(dst)
			return derr
		}
		if cause != nil {
			os.Remove(extDst)
			os.Remove(dst)
			return cause
		}
		return nil
	}
	return &servedDisk{id: id, spec: "json:" + string(spec), wait: waitDL, stop: stop}, nil
}

// acquire takes one of the source's parallel download slots, when the
// caller set them (ExportConverted's all() limits its disks itself).
func (x *exporter) acquire(ctx context.Context) error {
	if x.slots == nil {
		return nil
	}
	select {
	case x.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (x *exporter) release() {
	if x.slots != nil {
		<-x.slots
	}
}

// fetchDescriptor reads the disk's descriptor file (a few hundred bytes)
// and checks that it names one flat extent that can stream.
func (x *exporter) fetchDescriptor(ctx context.Context, u *url.URL, id string) (*imgfmt.VMDKDescriptor, []byte, error) {
	res, err := x.c.vc.DownloadRequest(ctx, u, &soap.Download{Method: http.MethodGet})
	if err != nil {
		return nil, nil, fmt.Errorf("cannot download %s: %w", u.Path, err)
	}
	defer res.Body.Close()
	if err := x.refuseRedirect(res, u); err != nil {
		return nil, nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, nil, statusError(res, u)
	}
	if res.ContentLength > maxDescriptorFile {
		return nil, nil, &NotStreamableError{Disk: id, Reason: fmt.Sprintf("its file is an image of %d bytes, not a descriptor", res.ContentLength)}
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, maxDescriptorFile+1))
	if err != nil {
		return nil, nil, fmt.Errorf("cannot download %s: %w", u.Path, err)
	}
	if len(b) > maxDescriptorFile {
		return nil, nil, &NotStreamableError{Disk: id, Reason: "its file is an image, not a descriptor"}
	}
	if !bytes.HasPrefix(bytes.TrimLeft(b, "\n\r\t "), []byte("# Disk DescriptorFile")) {
		return nil, nil, &NotStreamableError{Disk: id, Reason: "its file is not a VMDK descriptor"}
	}
	desc, err := imgfmt.ParseVMDKDescriptor(bytes.NewReader(b))
	if err != nil {
		return nil, nil, fmt.Errorf("the server sent a VMDK descriptor that cannot be read: %w", err)
	}
	if pc := strings.ToLower(desc.ParentCID); pc != "" && pc != "ffffffff" {
		return nil, nil, &NotStreamableError{Disk: id, Reason: "it is a delta disk (it has a parent)"}
	}
	if len(desc.Extents) != 1 {
		return nil, nil, &NotStreamableError{Disk: id, Reason: fmt.Sprintf("its descriptor names %d extents, not one", len(desc.Extents))}
	}
	e := desc.Extents[0]
	if e.Type != "FLAT" && e.Type != "VMFS" || e.Offset != 0 {
		return nil, nil, &NotStreamableError{Disk: id, Reason: fmt.Sprintf("its extent is %s, not one flat file", e.Type)}
	}
	if e.File == "" || strings.ContainsAny(e.File, "/\\") || e.File == "." || e.File == ".." || strings.HasPrefix(e.File, ".") {
		return nil, nil, fmt.Errorf("disk %s: the descriptor names the extent %q, not a file beside it", id, e.File)
	}
	if e.Sectors <= 0 || e.Sectors > 1<<50/512 {
		return nil, nil, fmt.Errorf("disk %s: the descriptor gives the extent %d sectors", id, e.Sectors)
	}
	return desc, b, nil
}

// streamFile downloads u into f (size bytes, already that long and
// sparse), advancing g as blocks land; a dropped connection resumes with
// Range. What the server sends is checked against size: a body longer
// than declared, a declared length or a Content-Range other than the one
// asked for, a server that starts over instead of resuming (its second
// copy could differ from what qemu already read) are refused.
func (x *exporter) streamFile(ctx context.Context, u *url.URL, f *os.File, size int64, g *growing) error {
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
		if err := x.checkStreamAnswer(res, u, off, size); err != nil {
			res.Body.Close()
			var retry *retryable
			if errors.As(err, &retry) {
				lastErr = retry.err
				continue
			}
			return err
		}
		n, err := x.copyGrowing(f, res.Body, off, size, g)
		res.Body.Close()
		off += n
		if err == nil {
			return nil
		}
		var hostile *hostileError
		if errors.As(err, &hostile) {
			return err
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		lastErr = err
	}
}

// retryable is an answer worth asking again (a 5xx).
type retryable struct{ err error }

func (r *retryable) Error() string { return r.err.Error() }

// hostileError is something no honest server sends: not retried.
type hostileError struct{ msg string }

func (h *hostileError) Error() string { return h.msg }

func (x *exporter) checkStreamAnswer(res *http.Response, u *url.URL, off, size int64) error {
	if err := x.refuseRedirect(res, u); err != nil {
		return err
	}
	switch {
	case res.StatusCode == http.StatusOK && off == 0:
		if res.ContentLength >= 0 && res.ContentLength != size {
			return &hostileError{fmt.Sprintf("the server declares %d bytes for %s, its descriptor %d; refusing it", res.ContentLength, u.Path, size)}
		}
	case res.StatusCode == http.StatusOK:
		return &hostileError{fmt.Sprintf("the server ignored the Range request to resume %s at byte %d and sent it from the start; a disk being converted while it downloads cannot start over (its first bytes are already converted)", u.Path, off)}
	case res.StatusCode == http.StatusPartialContent && off > 0:
		want := fmt.Sprintf("bytes %d-%d/%d", off, size-1, size)
		if got := res.Header.Get("Content-Range"); got != want {
			return &hostileError{fmt.Sprintf("the server answered the Range request for %s with Content-Range %q, not %q; refusing it", u.Path, got, want)}
		}
		if res.ContentLength >= 0 && res.ContentLength != size-off {
			return &hostileError{fmt.Sprintf("the server declares %d bytes from %d of %s, not the %d left; refusing it", res.ContentLength, off, u.Path, size-off)}
		}
	case res.StatusCode == http.StatusPartialContent:
		return &hostileError{fmt.Sprintf("the server sent part of %s (206) to a request for the whole; refusing it", u.Path)}
	case res.StatusCode >= 500:
		return &retryable{fmt.Errorf("%s", res.Status)}
	default:
		return statusError(res, u)
	}
	return nil
}

func statusError(res *http.Response, u *url.URL) error {
	switch res.StatusCode {
	case http.StatusNotFound:
		return fmt.Errorf("the server has no file at %s (404): is the datastore accessible?", u.Path)
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("the server refused the download of %s (%s): the user needs the Datastore.Browse and Datastore.FileManagement privileges (docs/SOURCES.md)", u.Path, res.Status)
	}
	return fmt.Errorf("the server answered the download of %s with %s", u.Path, res.Status)
}

// refuseRedirect refuses an answer that came from somewhere else than
// asked: the disk is read from the datastore of the pinned server only.
func (x *exporter) refuseRedirect(res *http.Response, u *url.URL) error {
	if res.Request != nil && res.Request.URL != nil && (res.Request.URL.Host != u.Host || res.Request.URL.Path != u.Path || res.Request.URL.Scheme != u.Scheme) {
		return &hostileError{fmt.Sprintf("the server redirected the download of %s to %s; refusing it", u.Path, res.Request.URL.Redacted())}
	}
	return nil
}

// copyGrowing writes r into f from off up to size (all-zero blocks are
// left as holes), advancing g and the progress after every block; a
// byte past size is refused.
func (x *exporter) copyGrowing(f *os.File, r io.Reader, off, size int64, g *growing) (int64, error) {
	buf := make([]byte, block)
	var n int64
	for off+n < size {
		want := min(int64(len(buf)), size-off-n)
		m, err := fill(r, buf[:want])
		if m > 0 {
			if !allZero(buf[:m]) {
				if _, werr := f.WriteAt(buf[:m], off+n); werr != nil {
					return n, &hostileError{fmt.Sprintf("cannot write the download: %v", werr)}
				}
			}
			n += int64(m)
			g.advance(off + n)
			x.o.Progress(x.done.Add(int64(m)), x.total.Load())
		}
		if err == io.EOF {
			if off+n < size {
				return n, fmt.Errorf("the connection ended after %d of %d bytes", off+n, size)
			}
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	var one [1]byte
	if m, _ := io.ReadFull(r, one[:]); m > 0 {
		return n, &hostileError{fmt.Sprintf("the server sent more than the %d bytes of the disk; refusing it", size)}
	}
	return n, nil
}

// finishPart makes the download durable and gives it its name, never
// over an existing file.
func finishPart(f *os.File, part, dst string) error {
	if err := f.Sync(); err != nil {
		return fmt.Errorf("cannot write %s: %w", part, err)
	}
	if err := noreplace.Rename(part, dst); err != nil {
		return fmt.Errorf("cannot move %s into place: %w", dst, err)
	}
	return nil
}

// writeNewFile writes b to a new file p (never over one), synced.
func writeNewFile(p string, b []byte) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("cannot create %s: %w", p, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(p)
		return fmt.Errorf("cannot write %s: %w", p, err)
	}
	return nil
}

package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// Remote fetches the VM of a load that names a source (load.source_type
// vsphere): the worker implements it with agent/vsphere, inside the job's
// unit, which holds the source's password; the engine itself never
// connects anywhere.
type Remote interface {
	// Fetch writes the VM's disks into dir (which exists, private to the
	// job) and says what hardware the VM has. progress gets the bytes
	// downloaded and the total expected.
	Fetch(ctx context.Context, dir string, progress func(done, total int64)) (*Fetched, error)
}

// Fetched is what Remote.Fetch got.
type Fetched struct {
	Disks    []FetchedDisk // in the VM's boot order
	Hardware *report.Hardware
}

// FetchedDisk is one downloaded disk.
type FetchedDisk struct {
	ID      string // "disk1", ...
	File    string // the image, or a VMDK descriptor with its extents beside it, in dir
	Display string // what a user recognises: the datastore path
}

// loadRemote is LOAD's first half for a VM read from a source: download
// its disks into the work directory (removed with it when the job ends)
// and take its hardware from the source's API.
func (r *runner) loadRemote() (string, error) {
	l := r.p.Load
	if r.o.Remote == nil {
		return "", errors.New("source_type vsphere is read by the agent's job units only (submit the manifest or drop it); hyper2kvmd convert cannot reach a source")
	}
	if r.workDir == "" {
		if err := r.makeWorkDir(); err != nil {
			return "", err
		}
	}
	dir := filepath.Join(r.workDir, "source")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("cannot create the download directory: %w", err)
	}
	what := "source " + l.Source
	r.progress("load", 0, 0, 0, "connecting to "+what)
	started := time.Now()
	progress := func(done, total int64) {
		pct := 0
		if total > 0 {
			pct = int(min(done*50/total, 49))
		}
		r.progress("load", pct, done, total, "download from "+what+rateETA(done, total, time.Since(started)))
	}
	if detected, ok, err := r.streamRemote(dir, what, progress); ok || err != nil {
		if err == nil {
			r.rep.Source.Path = l.Source + ":" + remoteName(l.VM, l.VMMoref, l.VMUUID)
			r.rep.Source.Detected = detected
		}
		return detected, err
	}
	got, err := r.o.Remote.Fetch(r.ctx, dir, progress)
	if got != nil && got.Hardware != nil {
		r.rep.Source.Hardware = got.Hardware
	}
	if err != nil {
		return "", err
	}
	if got == nil || len(got.Disks) == 0 {
		return "", fmt.Errorf("%s gave no disk", what)
	}
	r.rep.Source.Path = l.Source + ":" + remoteName(l.VM, l.VMMoref, l.VMUUID)
	r.files.trustedDir = dir
	detected := ""
	for _, fd := range got.Disks {
		if filepath.Dir(fd.File) != dir || strings.HasPrefix(filepath.Base(fd.File), ".") {
			return "", fmt.Errorf("disk %s: the download %s is not in the job's download directory", fd.ID, fd.File)
		}
		format, err := imgfmt.Detect(fd.File)
		if err != nil {
			return "", fmt.Errorf("disk %s (%s): %w", fd.ID, fd.Display, err)
		}
		switch format {
		case imgfmt.VMDK, imgfmt.Raw, imgfmt.QCOW2:
		default:
			return "", fmt.Errorf("disk %s (%s): the server sent %s, not a disk image hyper2kvm reads from a source (VMDK)", fd.ID, fd.Display, describe(format))
		}
		if detected == "" {
			detected = format
		}
		d, err := r.fileDisk(fd.File, fd.Display, format, fd.ID)
		if err != nil {
			return "", err
		}
		r.disks = append(r.disks, d)
	}
	r.rep.Source.Detected = detected
	return detected, nil
}

// rateETA is ", 120 MiB/s, 1m20s left" for a download, "" too early to say.
// total is the disks' capacity, an upper bound of what a sparse export sends.
func rateETA(done, total int64, elapsed time.Duration) string {
	if done <= 0 || elapsed < time.Second {
		return ""
	}
	rate := float64(done) / elapsed.Seconds()
	s := fmt.Sprintf(", %.0f MiB/s", rate/(1<<20))
	if total > done {
		s += fmt.Sprintf(", at most %s left", time.Duration(float64(total-done)/rate*float64(time.Second)).Round(time.Second))
	}
	return s
}

func remoteName(vm, moref, uuid string) string {
	switch {
	case vm != "":
		return vm
	case moref != "":
		return moref
	}
	return uuid
}

// inTrustedDir says whether p lies directly in the download directory.
func (u *userFiles) inTrustedDir(p string) bool {
	return u.trustedDir != "" && filepath.Dir(p) == u.trustedDir
}

// StreamingRemote is a Remote that can also serve a VM's disks to qemu
// while they download, so that CONVERT runs beside the download instead
// of after it. The engine asks for it only when INSPECT and FIX are off:
// they read (and FIX changes) the whole guest before CONVERT.
type StreamingRemote interface {
	Remote
	// Stream starts the download of the VM's disks into dir and returns
	// them readable at once. A VM whose disks cannot be read while they
	// download gets *NotStreamableError with nothing left in dir: the
	// engine then calls Fetch.
	Stream(ctx context.Context, dir string, progress func(done, total int64)) (*Streamed, error)
}

// Streamed is what StreamingRemote.Stream started.
type Streamed struct {
	Disks    []StreamedDisk // in the VM's boot order
	Hardware *report.Hardware
	// Wait returns once disk id is downloaded whole and synced, or with
	// the download's error: CONVERT names an output only after it.
	Wait func(id string) error
	// Stop ends the downloads (cancelled when cause is not nil) and what
	// serves them; the engine calls it once, before the work directory
	// goes. It returns a download's error, else cause.
	Stop func(cause error) error
}

// StreamedDisk is one disk being downloaded.
type StreamedDisk struct {
	ID      string
	Spec    string // the "json:" filename qemu reads it by, as raw
	Display string // what a user recognises: the datastore path
}

// NotStreamableError says why a VM's disks are downloaded before they
// convert.
type NotStreamableError struct{ Reason string }

func (e *NotStreamableError) Error() string { return e.Reason }

// streamRemote is loadRemote's way for a VM whose disks convert while
// they download; ok false (and no error) when they cannot: the reason is
// in LOAD's result ("overlap").
func (r *runner) streamRemote(dir, what string, progress func(done, total int64)) (string, bool, error) {
	sr, ok := r.o.Remote.(StreamingRemote)
	if !ok {
		return "", false, nil
	}
	if manifest.Bool(r.p.Inspect.Enabled) || manifest.Bool(r.p.Fix.Enabled) {
		r.overlap = "no: INSPECT or FIX reads the whole disk before CONVERT"
		return "", false, nil
	}
	// The downloads go on through CONVERT, whose progress (qemu-img's,
	// which cannot pass the download) is the job's from then on: theirs
	// would send the job view back to LOAD.
	var quiet atomic.Bool
	got, err := sr.Stream(r.ctx, dir, func(done, total int64) {
		if !quiet.Load() {
			progress(done, total)
		}
	})
	quiet.Store(true)
	if got != nil && got.Hardware != nil {
		r.rep.Source.Hardware = got.Hardware
	}
	var ns *NotStreamableError
	if errors.As(err, &ns) {
		r.overlap = "no: " + ns.Reason
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	r.stopStream = got.Stop
	if len(got.Disks) == 0 {
		return "", false, fmt.Errorf("%s gave no disk", what)
	}
	r.overlap = "yes"
	for _, sd := range got.Disks {
		if !strings.HasPrefix(sd.Spec, "json:") {
			return "", false, fmt.Errorf("disk %s: the download is served as %q, not a json: spec", sd.ID, sd.Spec)
		}
		id := sd.ID
		r.disks = append(r.disks, &disk{id: id, display: sd.Display, path: sd.Spec, format: imgfmt.Raw,
			downloaded: func() error { return got.Wait(id) }})
	}
	return imgfmt.Raw, true, nil
}

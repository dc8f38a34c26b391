package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
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
	got, err := r.o.Remote.Fetch(r.ctx, dir, func(done, total int64) {
		pct := 0
		if total > 0 {
			pct = int(min(done*50/total, 49))
		}
		r.progress("load", pct, done, total, "download from "+what+rateETA(done, total, time.Since(started)))
	})
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

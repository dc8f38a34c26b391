package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/engine"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// fakeStreaming serves a raw image as a source's streaming export would
// (a json: spec qemu reads), or says it cannot.
type fakeStreaming struct {
	fakeRemote
	raw       string
	notStream string // the reason Stream gives, "" to stream
	waitErr   error  // what the download ends with
	fetched   bool
	waited    bool
	stops     int
	stopCause error
}

func (f *fakeStreaming) Fetch(ctx context.Context, dir string, progress func(done, total int64)) (*engine.Fetched, error) {
	f.fetched = true
	return f.fakeRemote.Fetch(ctx, dir, progress)
}

func (f *fakeStreaming) Stream(ctx context.Context, dir string, progress func(done, total int64)) (*engine.Streamed, error) {
	hw := f.hw
	if f.notStream != "" {
		return &engine.Streamed{Hardware: &hw}, &engine.NotStreamableError{Reason: f.notStream}
	}
	hw.Overlapped = true
	spec, _ := json.Marshal(map[string]any{"driver": "raw", "file": map[string]any{"driver": "file", "filename": f.raw}})
	return &engine.Streamed{
		Disks:    []engine.StreamedDisk{{ID: "disk1", Spec: "json:" + string(spec), Display: "[LocalDS_0] web01/web01.vmdk"}},
		Hardware: &hw,
		Wait:     func(string) error { f.waited = true; return f.waitErr },
		Stop: func(cause error) error {
			f.stops++
			f.stopCause = cause
			if f.waitErr != nil {
				return f.waitErr
			}
			return cause
		},
	}, nil
}

// A VM whose disks can be read while they download converts from the
// stream: LOAD says so, the output is named only after the download was
// waited for, the stream is stopped once; a VM that cannot is downloaded
// whole first; a failed download fails the job with its own error and
// leaves no output.
func TestRunRemoteStreaming(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	raw := fixture.LinuxDisk(t, dir, fixture.Options{SizeMB: 16})
	vmdk := fixture.Convert(t, raw, "vmdk", "streamOptimized")
	hw := report.Hardware{Name: "web01", CPUs: 1, MemoryMB: 512, Firmware: "bios",
		Disks: []report.HardwareDisk{{Label: "Hard disk 1", Controller: "scsi0:0", File: "[LocalDS_0] web01/web01.vmdk", ID: "disk1"}}}
	for _, tc := range []struct {
		name      string
		notStream string
		waitErr   error
		overlap   string
		fetched   bool
		fails     string
	}{
		{name: "streamed", overlap: "yes"},
		{name: "not streamable", notStream: "disk disk1 is stream-optimized", overlap: "no: disk disk1 is stream-optimized", fetched: true},
		{name: "download fails", waitErr: errors.New("the connection ended after 3 of 16 bytes"), fails: "the connection ended"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := t.TempDir()
			f := &fakeStreaming{fakeRemote: fakeRemote{vmdk: vmdk, hw: hw}, raw: raw, notStream: tc.notStream, waitErr: tc.waitErr}
			out := filepath.Join(d, "out")
			rep, err := engine.Run(context.Background(), remoteManifest(), engine.Options{JobID: "j1", OutputDir: out, WorkDir: filepath.Join(d, "work"), Remote: f})
			_, statErr := os.Stat(filepath.Join(out, "web01.qcow2"))
			if tc.fails != "" {
				if err == nil || !strings.Contains(err.Error(), tc.fails) || rep.Error == nil || !strings.Contains(rep.Error.Message, tc.fails) {
					t.Fatalf("Run = %v, report error %+v; want %q", err, rep.Error, tc.fails)
				}
				if statErr == nil {
					t.Error("the output is left after a failed download")
				}
				if f.stops != 1 || f.stopCause == nil {
					t.Errorf("Stop called %d times with %v, want once with the job's error", f.stops, f.stopCause)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%+v", err, rep)
			}
			if statErr != nil {
				t.Errorf("no output: %v", statErr)
			}
			if f.fetched != tc.fetched {
				t.Errorf("Fetch called %v, want %v", f.fetched, tc.fetched)
			}
			streamed := tc.notStream == ""
			if streamed && (!f.waited || f.stops != 1 || f.stopCause != nil) {
				t.Errorf("waited %v, stopped %d times with %v; want waited, stopped once with nil", f.waited, f.stops, f.stopCause)
			}
			var load map[string]any
			for _, s := range rep.Stages {
				if s.Name == "load" {
					b, _ := json.Marshal(s.Result)
					json.Unmarshal(b, &load)
				}
			}
			if load["overlap"] != tc.overlap {
				t.Errorf("LOAD's overlap %v, want %q", load["overlap"], tc.overlap)
			}
			if rep.Source.Hardware == nil || rep.Source.Hardware.Overlapped != streamed {
				t.Errorf("report hardware %+v, want overlapped %v", rep.Source.Hardware, streamed)
			}
		})
	}
}

// fakeFlat hands over a flat VMDK (a descriptor and its extent beside it)
// as the ordinary download of a datastore disk does.
type fakeFlat struct {
	desc string
	hw   report.Hardware
}

func (f *fakeFlat) Fetch(ctx context.Context, dir string, progress func(done, total int64)) (*engine.Fetched, error) {
	ext := strings.TrimSuffix(f.desc, ".vmdk") + "-flat.vmdk"
	for src, dst := range map[string]string{f.desc: "disk1.vmdk", ext: filepath.Base(ext)} {
		b, err := os.ReadFile(src)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o600); err != nil {
			return nil, err
		}
	}
	return &engine.Fetched{Disks: []engine.FetchedDisk{{ID: "disk1", File: filepath.Join(dir, "disk1.vmdk"), Display: "[LocalDS_0] web01/web01.vmdk"}}, Hardware: &f.hw}, nil
}

// A flat disk downloaded whole (the fallback, or a job with FIX on) reads
// its extent from the download directory, not from beside the datastore
// path it is shown by.
func TestRunRemoteFlatDownloaded(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	raw := fixture.LinuxDisk(t, dir, fixture.Options{SizeMB: 16})
	desc := fixture.Convert(t, raw, "vmdk", "monolithicFlat")
	f := &fakeFlat{desc: desc, hw: report.Hardware{Name: "web01", CPUs: 1, MemoryMB: 512, Firmware: "bios",
		Disks: []report.HardwareDisk{{Label: "Hard disk 1", Controller: "scsi0:0", File: "[LocalDS_0] web01/web01.vmdk", ID: "disk1"}}}}
	out := filepath.Join(dir, "out")
	rep, err := engine.Run(context.Background(), remoteManifest(), engine.Options{JobID: "j1", OutputDir: out, WorkDir: filepath.Join(dir, "work"), Remote: f})
	if err != nil {
		t.Fatalf("%v\n%+v", err, rep.Error)
	}
	if msg, err := exec.Command("qemu-img", "compare", "-q", raw, filepath.Join(out, "web01.qcow2")).CombinedOutput(); err != nil {
		t.Errorf("the output differs from the disk: %v %s", err, msg)
	}
}

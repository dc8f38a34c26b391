package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/engine"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/test/box"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

// Issue 18, "results that lie by omission": a disk with no operating system
// fails with FIX on and converts as a data disk with FIX off; a job's
// warnings are in hyperctl and REST, not only in report.json; FIX with
// nothing to do does not run, so the output is the source's bytes.

// omAgentYAML keeps the built-in default_pipeline (inspect, fix, convert,
// validate): what a dropped image gets out of the box.
const omAgentYAML = `max_concurrent_jobs: 2
idle_timeout: 10m
stable_time: 200ms
job:
  runtime_max_sec: 900
`

func omStart(t *testing.T) *relBox {
	t.Helper()
	b := &relBox{Box: box.Start(t, box.Options{Install: true, Devices: true,
		Files: map[string]string{"/etc/hyper2kvm/agent.yaml": omAgentYAML}}), t: t}
	b.MustExec(t, "mkdir", "-p", "/srv/src", relQueue+"/to_be_processed")
	b.MustExec(t, "systemctl", "start", "hyper2kvmd.path")
	return b
}

// omDropImage copies the box's file src into the drop folder as name, the
// careful way (a dot-name, then a rename).
func (b *relBox) omDropImage(src, name string) {
	b.t.Helper()
	tmp := relQueue + "/to_be_processed/." + name
	b.MustExec(b.t, "cp", "--sparse=always", src, tmp)
	b.MustExec(b.t, "mv", tmp, relQueue+"/to_be_processed/"+name)
}

// omJob is the first job of a settled report: its engine report's stages.
type omJob struct {
	ID      string   `json:"job_id"`
	Status  string   `json:"status"`
	Error   string   `json:"error"`
	Outputs []string `json:"outputs"`
	Report  struct {
		Warnings []string `json:"warnings"`
		Stages   []struct {
			Name   string          `json:"name"`
			Status string          `json:"status"`
			Reason string          `json:"reason"`
			Result json.RawMessage `json:"result"`
		} `json:"stages"`
	} `json:"report"`
}

func omFirstJob(t *testing.T, rep map[string]any) omJob {
	t.Helper()
	data, _ := json.Marshal(rep)
	var r struct {
		Jobs []omJob `json:"jobs"`
	}
	if err := json.Unmarshal(data, &r); err != nil || len(r.Jobs) == 0 {
		t.Fatalf("report has no job: %v\n%s", err, data)
	}
	return r.Jobs[0]
}

func (j omJob) stage(name string) (status, reason string, result string) {
	for _, s := range j.Report.Stages {
		if s.Name == name {
			return s.Status, s.Reason, string(s.Result)
		}
	}
	return "", "", ""
}

// TestOmissionBlankDisk: a blank 1 GiB VMDK dropped as it is (the default
// pipeline, FIX on) fails with what to do; the same disk with FIX off
// converts as a data disk and says so. The old code completed the first
// with the reason only in report.json.
func TestOmissionBlankDisk(t *testing.T) {
	needRoot(t)
	b := omStart(t)
	ctx := relCtx(t, 10*time.Minute)
	b.MustExec(t, "qemu-img", "create", "-q", "-f", "vmdk", "/srv/src/blank.vmdk", "1G")

	b.omDropImage("/srv/src/blank.vmdk", "blank.vmdk")
	dir, rep := b.waitSettled(ctx, "blank.vmdk")
	const msg = "inspection found no operating system; set pipeline.fix.enabled=false to convert a data disk as it is"
	data, _ := json.Marshal(rep)
	if dir != "failed" || !strings.Contains(string(data), msg) {
		t.Fatalf("the blank disk with FIX on settled in %s, want failed/ with %q:\n%s", dir, msg, data)
	}
	if j := omFirstJob(t, rep); j.Status != "failed" {
		t.Errorf("job status %s", j.Status)
	}
	out, err := b.hyperctl(ctx, "", "show", "blank")
	if !strings.Contains(out, "failed") || !strings.Contains(out, msg) {
		t.Errorf("hyperctl show blank (%v) does not say why it failed:\n%s", err, out)
	}

	// A data disk: FIX off, the rest of the default pipeline.
	b.drop("", "data.json", `{"version":"1.0","name":"data","pipeline":{"load":{"source_type":"vmdk","source_path":"/srv/src/blank.vmdk"},"fix":{"enabled":false}}}`)
	dir, rep = b.waitSettled(ctx, "data.json")
	if dir != "processed" {
		t.Fatalf("the data disk with FIX off settled in %s:\n%v", dir, rep)
	}
	j := omFirstJob(t, rep)
	if st, reason, _ := j.stage("fix"); st != "skipped" || !strings.Contains(reason, "pipeline.fix.enabled") {
		t.Errorf("fix stage %s (%s)", st, reason)
	}
	if _, _, res := j.stage("inspect"); !strings.Contains(res, "data disk") {
		t.Errorf("inspect does not note the data disk: %s", res)
	}
	if _, _, res := j.stage("validate"); !strings.Contains(res, `"identical"`) {
		t.Errorf("validate did not compare the data disk with its source: %s", res)
	}
}

// TestOmissionWarningsShown: a job that completed with a warning shows it
// in hyperctl show (a Warnings section), on hyperctl watch's last line and
// in the REST job view, counted. The old code kept it in report.json only.
func TestOmissionWarningsShown(t *testing.T) {
	needRoot(t)
	b := omStart(t)
	ctx := relCtx(t, 10*time.Minute)
	b.WriteFile(t, "/etc/hyper2kvm/api.token", []byte(apiToken+"\n"), 0o640)
	b.MustExec(t, "systemctl", "start", "hyper2kvm-api.socket")
	b.MustExec(t, "qemu-img", "create", "-q", "-f", "vmdk", "/srv/src/blank.vmdk", "64M")
	// FIX on with operating-system detection off: FIX cannot run, the job
	// completes, and a warning says FIX was not applied.
	b.drop("", "warned.json", `{"version":"1.0","name":"warned","pipeline":{"load":{"source_type":"vmdk","source_path":"/srv/src/blank.vmdk"},"inspect":{"detect_os":false}}}`)
	dir, rep := b.waitSettled(ctx, "warned.json")
	j := omFirstJob(t, rep)
	if dir != "processed" || len(j.Report.Warnings) == 0 {
		t.Fatalf("settled in %s with warnings %q, want processed/ with a warning", dir, j.Report.Warnings)
	}
	want := j.Report.Warnings[0]

	out, err := b.hyperctl(ctx, "", "show", j.ID)
	if err != nil || !strings.Contains(out, "Warnings:") || !strings.Contains(out, want) {
		t.Errorf("hyperctl show %s (%v) lacks the warnings section with %q:\n%s", j.ID, err, want, out)
	}
	out, err = b.hyperctl(ctx, "", "watch", j.ID)
	if err != nil || !strings.Contains(out, "completed") || !strings.Contains(out, fmt.Sprintf("with %d warning", len(j.Report.Warnings))) {
		t.Errorf("hyperctl watch %s (%v) does not count the warnings:\n%s", j.ID, err, out)
	}

	sock := b.Path(apiSocket)
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://hyper2kvm/api/workflow/jobs/"+j.ID, nil)
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET job: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var v struct {
		Warnings     []string `json:"warnings"`
		WarningCount *int     `json:"warning_count"`
	}
	if err := json.Unmarshal(body, &v); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET job: %d %v %s", resp.StatusCode, err, body)
	}
	if v.WarningCount == nil || *v.WarningCount != len(j.Report.Warnings) || len(v.Warnings) == 0 || v.Warnings[0] != want {
		t.Errorf("REST job view: %s; want the report's %d warnings", body, len(j.Report.Warnings))
	}
}

// TestOmissionNothingToFix: a VHDX of a Linux guest with every fix switched
// off (fix.enabled left out) converts to the source's very bytes: FIX is
// skipped ("nothing to do"), VALIDATE compares, and qemu-img compare of the
// source and the output agrees. The old code ran FIX on an overlay mounted
// read-write, which changed the ext4 superblock, and skipped the compare.
func TestOmissionNothingToFix(t *testing.T) {
	needRoot(t)
	b := omStart(t)
	ctx := relCtx(t, 10*time.Minute)
	raw := fixture.LinuxDisk(t, t.TempDir(), fixture.Options{Name: "lin", SizeMB: 64})
	if out, err := exec.Command("qemu-img", "convert", "-O", "vhdx", raw, b.Path("/srv/src/lin.vhdx")).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert to vhdx: %v %s", err, out)
	}
	b.MustExec(t, "chmod", "0644", "/srv/src/lin.vhdx")
	b.drop("", "lin.json", `{"version":"1.0","name":"lin","pipeline":{"load":{"source_type":"vhdx","source_path":"/srv/src/lin.vhdx"},`+
		`"fix":{"fstab":{"enabled":false},"grub":{"enabled":false},"initramfs":{"enabled":false},"network":{"enabled":false}}}}`)
	dir, rep := b.waitSettled(ctx, "lin.json")
	j := omFirstJob(t, rep)
	if dir != "processed" {
		t.Fatalf("settled in %s: %s", dir, j.Error)
	}
	if st, reason, res := j.stage("fix"); st != "skipped" || reason != "nothing to do: every fix is disabled" {
		t.Errorf("fix stage %s (%s) %s, want skipped with nothing to do", st, reason, res)
	}
	if _, _, res := j.stage("validate"); !strings.Contains(res, `"identical"`) {
		t.Errorf("validate did not compare the output with its source: %s", res)
	}
	var disk string
	for _, o := range j.Outputs {
		if strings.HasSuffix(o, ".qcow2") {
			disk = o
		}
	}
	if disk == "" {
		t.Fatalf("no disk among the outputs %q", j.Outputs)
	}
	if out, stderr, err := b.Exec(ctx, "qemu-img", "compare", "-f", "vhdx", "-F", "qcow2", "/srv/src/lin.vhdx", disk); err != nil {
		t.Errorf("qemu-img compare of the source and %s: %v\n%s%s", disk, err, out, stderr)
	}
}

// TestOmissionDirtyJournalReported: a guest whose ext4 journal needs
// recovery, fixed with fstab only: FIX's read-write mount of the root
// replays the journal, and the report lists that as a change beside the
// fstab edit. The old code said nothing of it.
func TestOmissionDirtyJournalReported(t *testing.T) {
	engNeedTools(t)
	needRoot(t)
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Skip("debugfs not installed")
	}
	dir := t.TempDir()
	raw := fixture.LinuxDisk(t, dir, fixture.Options{SizeMB: 32})
	// The root filesystem, marked as needing journal recovery the way a
	// guest that was not shut down leaves it.
	part := filepath.Join(dir, "root.img")
	for _, c := range [][]string{
		{"dd", "if=" + raw, "of=" + part, "bs=1M", "skip=1", "status=none"},
		{"debugfs", "-w", "-R", "feature needs_recovery", part},
		{"dd", "if=" + part, "of=" + raw, "bs=1M", "seek=1", "conv=notrunc", "status=none"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	on, off := true, false
	m := &manifest.Manifest{Version: "1.0", Name: "dirty", Pipeline: &manifest.Pipeline{
		Load: manifest.Load{SourceType: "raw", SourcePath: raw},
		Fix: &manifest.Fix{Enabled: &on, Backend: "native", Grub: &manifest.Toggle{Enabled: &off},
			Initramfs: &manifest.InitramfsFix{Enabled: &off}, Network: &manifest.NetworkFix{Enabled: &off}},
	}}
	m.SetDefaults()
	rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: filepath.Join(t.TempDir(), "out")})
	if err != nil {
		t.Fatalf("Run: %v\nstages %+v", err, rep.Stages)
	}
	var fstab, replay bool
	for _, c := range rep.Changes {
		fstab = fstab || c.Fix == "fstab"
		replay = replay || c.Fix == "mount" && strings.Contains(c.Note, "journal")
	}
	if !fstab || !replay {
		t.Errorf("changes %+v: want the fstab edit and the journal replay", rep.Changes)
	}
}

// TestOmissionOnlyWrittenFilesystemsRW: a guest with a separate /boot,
// fixed with fstab only: FIX mounts /boot read-only, so the output's /boot
// partition holds the source's very bytes. The old code mounted it
// read-write, which rewrote its superblock.
func TestOmissionOnlyWrittenFilesystemsRW(t *testing.T) {
	engNeedTools(t)
	needRoot(t)
	dir := t.TempDir()
	write := func(p, s string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	root, boot := filepath.Join(dir, "root"), filepath.Join(dir, "boot")
	write(root+"/etc/os-release", "ID=debian\nVERSION_ID=12\n")
	write(root+"/etc/fstab", "/dev/sda1 / ext4 defaults 0 1\n/dev/sda2 /boot ext4 defaults 0 2\n")
	if err := os.MkdirAll(root+"/boot", 0o755); err != nil {
		t.Fatal(err)
	}
	write(boot+"/grub/grub.cfg", "linux /vmlinuz root=/dev/sda1 ro\n")
	const mib = 1 << 20
	disk := filepath.Join(dir, "twofs.raw")
	for _, c := range [][]string{
		{"truncate", "-s", "64M", disk},
		{"sh", "-c", "printf 'start=2048, size=65536, type=83\\nstart=67584, type=83\\n' | sfdisk -q " + disk},
		{"mkfs.ext4", "-q", "-F", "-d", root, filepath.Join(dir, "p1.img"), "32M"},
		{"mkfs.ext4", "-q", "-F", "-d", boot, filepath.Join(dir, "p2.img"), "30M"},
		{"dd", "if=" + filepath.Join(dir, "p1.img"), "of=" + disk, "bs=1M", "seek=1", "conv=notrunc", "status=none"},
		{"dd", "if=" + filepath.Join(dir, "p2.img"), "of=" + disk, "bs=1M", "seek=33", "conv=notrunc", "status=none"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	on, off := true, false
	m := &manifest.Manifest{Version: "1.0", Name: "twofs", Pipeline: &manifest.Pipeline{
		Load: manifest.Load{SourceType: "raw", SourcePath: disk},
		Fix: &manifest.Fix{Enabled: &on, Backend: "native", Grub: &manifest.Toggle{Enabled: &off},
			Initramfs: &manifest.InitramfsFix{Enabled: &off}, Network: &manifest.NetworkFix{Enabled: &off}},
		Convert: &manifest.Convert{OutputFormat: "raw"},
	}}
	m.SetDefaults()
	out := filepath.Join(t.TempDir(), "out")
	rep, err := engine.Run(context.Background(), m, engine.Options{OutputDir: out})
	if err != nil {
		t.Fatalf("Run: %v\nstages %+v", err, rep.Stages)
	}
	if len(rep.Changes) == 0 {
		t.Fatalf("FIX changed nothing: %+v", rep.Stages)
	}
	src, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := os.ReadFile(filepath.Join(out, "twofs.raw"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dst) != len(src) {
		t.Fatalf("output is %d bytes, source %d", len(dst), len(src))
	}
	if string(src[33*mib:]) != string(dst[33*mib:]) {
		t.Errorf("the /boot partition, which fstab-only FIX only reads, differs from the source")
	}
	if string(src[mib:33*mib]) == string(dst[mib:33*mib]) {
		t.Errorf("the root partition holds the source's bytes although FIX changed fstab: %+v", rep.Changes)
	}
}

// Package hooks runs a manifest's hooks at a job's stage boundaries, each
// in a transient unit of its own started with systemd-run: a script as
// the job's submitter, sandboxed like a job unit (nothing of the host
// writable, no network, the job's output directory bound read-only), an
// HTTP request from `hyper2kvmd hook-http` in a unit with network and a
// dynamic user. Their output comes back through systemd-run --pipe into
// the job's journal and report (docs/WORKFLOW.md). The worker calls it.
package hooks

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// OutputMount is where a script sees the job's output directory.
const OutputMount = "/run/hyper2kvm/hook-output"

// Limits on what a hook's output costs.
const (
	maxLines      = 1000    // lines logged to the journal per hook
	maxReportTail = 4 << 10 // bytes of output kept in the report
)

// Job is what a hook is told about its job.
type Job struct {
	ID, Name, SourcePath, OutputDir string
	// UID is the submitter: scripts run as this user, and only an
	// admin's job (0) may name a script outside manifest.HookDir.
	UID int64
}

// Runner runs the hooks of one job.
type Runner struct {
	Job Job
	// Self is hyper2kvmd, which makes the HTTP requests (hook-http).
	Self string
	// SystemdRun is the systemd-run binary ("" looks it up in PATH).
	SystemdRun string
	// Log receives every line a hook prints, and what happened.
	Log func(line string)
}

// Run runs the hooks of point in order. It returns the runs for the
// report and an error when a hook failed that does not continue on error
// (the later hooks of the point are then not run).
func (r *Runner) Run(ctx context.Context, point string, hooks []manifest.Hook) ([]report.HookRun, error) {
	var runs []report.HookRun
	for i, h := range hooks {
		run, err := r.one(ctx, point, i, h)
		runs = append(runs, run)
		if err != nil {
			if h.ContinueOnError && ctx.Err() == nil {
				r.log("hook %s[%d] %s failed, continuing (continue_on_error): %v", point, i, run.Target, err)
				continue
			}
			return runs, fmt.Errorf("hook %s[%d] (%s %s) failed: %w", point, i, h.Type, run.Target, err)
		}
	}
	return runs, nil
}

func (r *Runner) log(format string, a ...any) {
	if r.Log != nil {
		r.Log(fmt.Sprintf(format, a...))
	}
}

// Vars are the values of the {{ }} variables for point; a script sees
// the output directory where it is bound.
func (r *Runner) Vars(point string, script bool) map[string]string {
	out := r.Job.OutputDir
	if script && r.outputBound() {
		out = OutputMount
	}
	return map[string]string{"job_id": r.Job.ID, "vm_name": r.Job.Name, "source_path": r.Job.SourcePath, "output_dir": out, "point": point}
}

func (r *Runner) outputBound() bool {
	// BindReadOnlyPaths= separates source and target with ':', and has no
	// escape for one in a path.
	if r.Job.OutputDir == "" || strings.ContainsAny(r.Job.OutputDir, ": ") {
		return false
	}
	st, err := os.Stat(r.Job.OutputDir)
	return err == nil && st.IsDir()
}

func (r *Runner) one(ctx context.Context, point string, i int, h manifest.Hook) (run report.HookRun, err error) {
	run = report.HookRun{Point: point, Type: h.Type, Continue: h.ContinueOnError}
	start := time.Now()
	defer func() { run.Seconds = time.Since(start).Seconds() }()
	argv, stdin, err := r.Command(point, i, h)
	if h.Type == "script" {
		run.Target = h.Path
	} else {
		run.Target = manifest.Expand(h.URL, r.Vars(point, false))
	}
	if err != nil {
		run.Status, run.Error = "failed", err.Error()
		r.log("hook %s[%d] %s: %v", point, i, run.Target, err)
		return run, err
	}
	r.log("hook %s[%d]: running %s %s", point, i, h.Type, run.Target)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = stdin
	tail := &tailBuffer{max: maxReportTail}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 0, 64<<10), 64<<10)
		n := 0
		for sc.Scan() {
			line := sc.Text()
			tail.WriteString(line + "\n")
			if n++; n <= maxLines {
				r.log("hook %s[%d]: %s", point, i, line)
			} else if n == maxLines+1 {
				r.log("hook %s[%d]: more output not logged (only the end is in the report)", point, i)
			}
		}
		io.Copy(io.Discard, pr)
	}()
	err = cmd.Run()
	pw.Close()
	wg.Wait()
	run.Output = tail.String()
	if err != nil {
		var xe *exec.ExitError
		if errors.As(err, &xe) && xe.ExitCode() > 0 {
			err = fmt.Errorf("exit status %d", xe.ExitCode())
		}
		if ctx.Err() != nil {
			// systemd-run was killed, not the hook's unit: stop it too.
			stop := exec.Command("systemctl", "stop", r.unit(point, i))
			stop.Run()
			err = fmt.Errorf("stopped: %w", ctx.Err())
		}
		run.Status, run.Error = "failed", err.Error()
		return run, err
	}
	run.Status = "ok"
	return run, nil
}

// Command is the systemd-run command line of hook i at point, and what
// it gets on stdin. A script outside manifest.HookDir in a job that is
// not an admin's is refused here, before anything runs.
func (r *Runner) Command(point string, i int, h manifest.Hook) ([]string, io.Reader, error) {
	sdrun := r.SystemdRun
	if sdrun == "" {
		sdrun = "systemd-run"
	}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = manifest.DefaultHookTimeout
	}
	argv := []string{sdrun, "--quiet", "--wait", "--pipe", "--collect", "--unit=" + r.unit(point, i), "--slice=hyper2kvm.slice",
		"--description=hyper2kvm job " + r.Job.ID + " hook " + point,
		"-p", "RuntimeMaxSec=" + strconv.Itoa(timeout),
		"-p", "LogExtraFields=HYPER2KVM_JOB_ID=" + r.Job.ID,
		// Sandboxed like a job unit: nothing of the host writable.
		"-p", "ProtectSystem=strict", "-p", "ProtectHome=read-only", "-p", "PrivateTmp=yes",
		"-p", "PrivateDevices=yes", "-p", "NoNewPrivileges=yes", "-p", "ProtectKernelTunables=yes",
		"-p", "ProtectKernelModules=yes", "-p", "ProtectKernelLogs=yes", "-p", "ProtectControlGroups=yes",
		"-p", "RestrictSUIDSGID=yes", "-p", "LockPersonality=yes", "-p", "RestrictRealtime=yes",
		"-p", "WorkingDirectory=/",
	}
	switch h.Type {
	case "script":
		path := h.Path
		if r.Job.UID != 0 && !strings.HasPrefix(path, manifest.HookDir+"/") {
			return nil, nil, fmt.Errorf("%s: only an admin's job may run a script outside %s/; ask an admin to install it there", path, manifest.HookDir)
		}
		st, err := os.Stat(path)
		if err != nil {
			return nil, nil, fmt.Errorf("cannot run %s: %w", path, err)
		}
		if !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
			return nil, nil, fmt.Errorf("cannot run %s: not an executable file", path)
		}
		vars := r.Vars(point, true)
		argv = append(argv, "-p", "User="+strconv.FormatInt(r.Job.UID, 10), "-p", "PrivateNetwork=yes")
		if r.outputBound() {
			argv = append(argv, "-p", "BindReadOnlyPaths="+r.Job.OutputDir+":"+OutputMount)
		}
		env := []string{"HYPER2KVM_JOB_ID=" + vars["job_id"], "HYPER2KVM_VM_NAME=" + vars["vm_name"], "HYPER2KVM_POINT=" + point,
			"HYPER2KVM_SOURCE_PATH=" + vars["source_path"], "HYPER2KVM_OUTPUT_DIR=" + vars["output_dir"]}
		for _, e := range h.Env {
			env = append(env, manifest.Expand(e, vars))
		}
		for _, e := range env {
			argv = append(argv, "--setenv="+e)
		}
		argv = append(argv, "--", path)
		for _, a := range h.Args {
			argv = append(argv, manifest.Expand(a, vars))
		}
		return argv, nil, nil
	case "http":
		vars := r.Vars(point, false)
		method := h.Method
		if method == "" {
			method = "POST"
		}
		self := r.Self
		if self == "" {
			self = "/usr/bin/hyper2kvmd"
		}
		argv = append(argv, "-p", "DynamicUser=yes", "--", self, "hook-http", "--method", method,
			"--timeout", strconv.Itoa(timeout), "--url", manifest.Expand(h.URL, vars))
		for _, hd := range h.Headers {
			argv = append(argv, "--header", manifest.Expand(hd, vars))
		}
		body, err := json.Marshal(map[string]string{"job_id": vars["job_id"], "vm_name": vars["vm_name"], "point": point,
			"source_path": vars["source_path"], "output_dir": vars["output_dir"]})
		if err != nil {
			return nil, nil, fmt.Errorf("cannot encode the request body: %w", err)
		}
		return argv, bytes.NewReader(body), nil
	}
	return nil, nil, fmt.Errorf("unknown hook type %q", h.Type)
}

// unit is the name of hook i's unit at point.
func (r *Runner) unit(point string, i int) string {
	return fmt.Sprintf("hyper2kvm-hook-%s-%s-%d.service", r.Job.ID, strings.ReplaceAll(point, "_", "-"), i)
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	max int
	buf []byte
	cut bool
}

func (t *tailBuffer) WriteString(s string) {
	t.buf = append(t.buf, s...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
		t.cut = true
	}
}

func (t *tailBuffer) String() string {
	if t.cut {
		return "…" + string(t.buf)
	}
	return string(t.buf)
}

// Check is the pre-flight check of a manifest's hooks, run before LOAD:
// every script exists, is executable, and lies in manifest.HookDir unless
// the job is an admin's, so that a hook that cannot run fails the job
// before it converts anything rather than at its boundary.
func (r *Runner) Check(h *manifest.Hooks) report.Check {
	c := report.Check{Name: "hooks", Status: "ok", Message: "every script hook can run"}
	if h == nil {
		c.Status, c.Message = "skipped", "no hooks"
		return c
	}
	var bad []string
	for _, point := range manifest.HookPoints() {
		for i, hk := range h.At(point) {
			if hk.Type != "script" {
				continue
			}
			p := fmt.Sprintf("pipeline.hooks.%s[%d].path", point, i)
			if r.Job.UID != 0 && !strings.HasPrefix(hk.Path, manifest.HookDir+"/") {
				bad = append(bad, fmt.Sprintf("%s: %s is outside %s/, and only an admin's job may run a script from elsewhere", p, hk.Path, manifest.HookDir))
				continue
			}
			st, err := os.Stat(hk.Path)
			switch {
			case err != nil:
				bad = append(bad, fmt.Sprintf("%s: %v", p, err))
			case !st.Mode().IsRegular() || st.Mode()&0o111 == 0:
				bad = append(bad, fmt.Sprintf("%s: %s is not an executable file", p, hk.Path))
			}
		}
	}
	if len(bad) > 0 {
		c.Status, c.Message = "blocker", strings.Join(bad, "; ")
		c.Fix = "install the scripts in " + manifest.HookDir + "/ (root-owned, executable), or ask an admin to submit the job"
	}
	return c
}

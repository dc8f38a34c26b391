package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/hyper2kvm/hyper2kvm/agent/bounded"
	"github.com/hyper2kvm/hyper2kvm/agent/engine"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/progress"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

func newConvertCmd() *cobra.Command {
	var file, outDir, backend string
	var jobs, disks int
	cmd := &cobra.Command{
		Use:   "convert -f MANIFEST [-o DIR] [-j N] [--disk-parallelism N] [--backend auto|native|guestfs|virt-v2v]",
		Short: "Run a manifest's conversion in the foreground",
		Long: `Run every VM of MANIFEST through LOAD, INSPECT, FIX, CONVERT and VALIDATE in
the foreground, with the same engine the agent's job units run. Each VM's
disks, NAME.xml and NAME.report.json go to DIR/NAME/ (DIR defaults to the
current directory) unless the manifest sets convert.output_dir. Existing
files are never overwritten. A batch runs up to N VMs at once (-j N,
default 1); the disks of each VM convert up to --disk-parallelism at once
(default limits.disk_parallelism of /etc/hyper2kvm/agent.yaml, else one per
CPU).

Exit status: 0 when every VM converted, 1 when one failed, 2 on a usage
error or an invalid manifest.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return &exitErr{2, errors.New("convert: -f MANIFEST is required")}
			}
			if backend != "" && !slices.Contains(manifest.Backends(), backend) {
				return &exitErr{2, fmt.Errorf("convert: --backend %q: must be one of %s", backend, strings.Join(manifest.Backends(), ", "))}
			}
			if jobs < 1 {
				return &exitErr{2, fmt.Errorf("convert: -j %d: must be at least 1", jobs)}
			}
			if disks < 0 {
				return &exitErr{2, fmt.Errorf("convert: --disk-parallelism %d: must not be negative (0: one per CPU)", disks)}
			}
			if !cmd.Flags().Changed("disk-parallelism") {
				disks = diskParallelism()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runConvert(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), convertFlags{file: file, outDir: outDir, backend: backend, jobs: jobs, disks: disks})
		},
	}
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &exitErr{2, err} })
	cmd.Flags().StringVarP(&file, "file", "f", "", "manifest (JSON or YAML), single VM or batch")
	cmd.Flags().StringVarP(&outDir, "output", "o", ".", "directory for the outputs (one subdirectory per VM)")
	cmd.Flags().IntVarP(&jobs, "jobs", "j", 1, "VMs of a batch converted at once")
	cmd.Flags().IntVar(&disks, "disk-parallelism", 0, "disks of one VM converted at once (0: one per CPU; default limits.disk_parallelism)")
	cmd.Flags().StringVar(&backend, "backend", "", "guest-access backend when the manifest names none: auto, native, guestfs or virt-v2v (default auto)")
	return cmd
}

// convertFlags are the convert command's options.
type convertFlags struct {
	file, outDir, backend string
	jobs, disks           int
}

func runConvert(ctx context.Context, stdout, stderr io.Writer, f convertFlags) error {
	data, err := manifest.ReadFile(f.file)
	if err != nil {
		return &exitErr{2, fmt.Errorf("convert: %w", err)}
	}
	m, err := manifest.Parse(data)
	if err != nil {
		return &exitErr{2, fmt.Errorf("convert: invalid manifest %s:\n%w", f.file, err)}
	}
	vms := m.Split()
	var (
		mu     sync.Mutex // stdout, stderr and failed
		failed int
	)
	// agent.yaml's target defaults apply here too.
	target, _ := targetDefaults()
	bounded.Each(ctx, len(vms), f.jobs, func(i int) {
		vm := vms[i]
		// Several VMs at once share the terminal: plain progress lines
		// named by VM instead of one redrawn bar.
		var pb *bar
		if f.jobs > 1 && len(vms) > 1 {
			pb = &bar{w: lockedWriter{&mu, stderr}, lastPct: -1, prefix: "[" + vm.Name + "] "}
		} else {
			pb = newBar(stderr)
		}
		mu.Lock()
		if len(vms) > 1 {
			fmt.Fprintf(stdout, "[%d/%d] %s\n", i+1, len(vms), vm.Name)
		}
		mu.Unlock()
		rep, err := engine.Run(ctx, vm, engine.Options{
			JobID:     vm.Name + "-" + time.Now().Format("20060102T150405"),
			OutputDir: filepath.Join(f.outDir, vm.Name),
			Backend:   f.backend,
			Progress:  pb.update,
			// The same limits, target defaults and virtio-win as the
			// agent's jobs: the same VM as they would make.
			MaxVirtualSize:  maxVirtualSize(),
			DiskParallelism: f.disks,
			Target:          target,
			VirtioWin:       virtioWin(),
		})
		mu.Lock()
		defer mu.Unlock()
		pb.done()
		if f.jobs > 1 && len(vms) > 1 {
			fmt.Fprintf(stdout, "%s:\n", vm.Name)
		}
		printSummary(stdout, rep)
		if err != nil {
			failed++
			fmt.Fprintf(stderr, "hyper2kvmd: %s: %v\n", vm.Name, err)
		}
	})
	switch {
	case ctx.Err() != nil:
		return &exitErr{1, errors.New("convert: interrupted")}
	case failed > 0:
		// The error is already printed per VM.
		return &exitErr{1, fmt.Errorf("convert: %d of %d VMs failed", failed, len(vms))}
	}
	return nil
}

// lockedWriter serialises the progress lines of VMs converted at once.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// printSummary prints what a user checks first: each stage, the outputs
// and where the report is.
func printSummary(w io.Writer, rep *report.Report) {
	if rep == nil {
		return
	}
	for _, s := range rep.Stages {
		line := fmt.Sprintf("  %-9s %-8s %6.1fs", s.Name, s.Status, s.Seconds)
		switch {
		case s.Error != "":
			line += "  " + s.Error
		case s.Reason != "":
			line += "  " + s.Reason
		}
		fmt.Fprintln(w, line)
	}
	for _, a := range rep.Artifacts {
		fmt.Fprintf(w, "  %-10s %s (%s, %d bytes)\n", a.Kind, a.Path, a.Format, a.Size)
	}
	for _, warn := range rep.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", warn)
	}
	fmt.Fprintf(w, "%s: %s\n", rep.Name, rep.Status)
	if rep.ReportPath != "" {
		fmt.Fprintf(w, "report: %s\n", rep.ReportPath)
	} else {
		fmt.Fprintln(w, "report: not written (see the error above)")
	}
}

// bar draws progress: a redrawn bar on a terminal, plain lines (at each
// stage and every 10%) otherwise.
type bar struct {
	w        io.Writer
	tty      bool
	stage    string
	lastPct  int
	lastDraw time.Time
	drawn    bool
	prefix   string // before each plain line: the VM's name when several run
}

func newBar(w io.Writer) *bar {
	b := &bar{w: w, lastPct: -1}
	if f, ok := w.(*os.File); ok {
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		b.tty = err == nil
	}
	return b
}

func (b *bar) update(u progress.Update) {
	if !b.tty {
		if u.Stage != b.stage || u.Percent/10 > b.lastPct/10 {
			fmt.Fprintln(b.w, b.prefix+progress.Format(u))
		}
		b.stage, b.lastPct = u.Stage, u.Percent
		return
	}
	// Redraw at most 10 times a second, and on every stage change.
	if u.Stage == b.stage && u.Percent == b.lastPct && time.Since(b.lastDraw) < 100*time.Millisecond {
		return
	}
	b.stage, b.lastPct, b.lastDraw, b.drawn = u.Stage, u.Percent, time.Now(), true
	const width = 30
	pct := max(u.Percent, 0)
	fill := width * pct / 100
	text := u.Text
	if len(text) > 40 {
		text = "..." + text[len(text)-37:]
	}
	fmt.Fprintf(b.w, "\r\033[K[%s%s] %3d%% %-8s %s", strings.Repeat("#", fill), strings.Repeat(" ", width-fill), pct, u.Stage, text)
}

func (b *bar) done() {
	if b.tty && b.drawn {
		fmt.Fprint(b.w, "\r\033[K")
	}
}

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
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/hyper2kvm/hyper2kvm/agent/engine"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/progress"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

func newConvertCmd() *cobra.Command {
	var file, outDir, backend string
	cmd := &cobra.Command{
		Use:   "convert -f MANIFEST [-o DIR] [--backend auto|native|guestfs|virt-v2v]",
		Short: "Run a manifest's conversion in the foreground",
		Long: `Run every VM of MANIFEST through LOAD, INSPECT, FIX, CONVERT and VALIDATE in
the foreground, with the same engine the agent's job units run. Each VM's
disks, NAME.xml and NAME.report.json go to DIR/NAME/ (DIR defaults to the
current directory) unless the manifest sets convert.output_dir. Existing
files are never overwritten.

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
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runConvert(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), file, outDir, backend)
		},
	}
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &exitErr{2, err} })
	cmd.Flags().StringVarP(&file, "file", "f", "", "manifest (JSON or YAML), single VM or batch")
	cmd.Flags().StringVarP(&outDir, "output", "o", ".", "directory for the outputs (one subdirectory per VM)")
	cmd.Flags().StringVar(&backend, "backend", "", "guest-access backend when the manifest names none: auto, native, guestfs or virt-v2v (default auto)")
	return cmd
}

func runConvert(ctx context.Context, stdout, stderr io.Writer, file, outDir, backend string) error {
	data, err := manifest.ReadFile(file)
	if err != nil {
		return &exitErr{2, fmt.Errorf("convert: %w", err)}
	}
	m, err := manifest.Parse(data)
	if err != nil {
		return &exitErr{2, fmt.Errorf("convert: invalid manifest %s:\n%w", file, err)}
	}
	vms := m.Split()
	failed := 0
	for i, vm := range vms {
		if ctx.Err() != nil {
			break
		}
		if len(vms) > 1 {
			fmt.Fprintf(stdout, "[%d/%d] %s\n", i+1, len(vms), vm.Name)
		}
		bar := newBar(stderr)
		// agent.yaml's target defaults apply here too: the same VM as
		// the agent's jobs would make.
		target, _ := targetDefaults()
		rep, err := engine.Run(ctx, vm, engine.Options{
			JobID:     vm.Name + "-" + time.Now().Format("20060102T150405"),
			OutputDir: filepath.Join(outDir, vm.Name),
			Backend:   backend,
			Progress:  bar.update,
			// The same limit and virtio-win as the agent's jobs.
			MaxVirtualSize: maxVirtualSize(),
			Target:         target,
			VirtioWin:      virtioWin(),
		})
		bar.done()
		printSummary(stdout, rep)
		if err != nil {
			failed++
			fmt.Fprintf(stderr, "hyper2kvmd: %s: %v\n", vm.Name, err)
		}
	}
	switch {
	case ctx.Err() != nil:
		return &exitErr{1, errors.New("convert: interrupted")}
	case failed > 0:
		// The error is already printed per VM.
		return &exitErr{1, fmt.Errorf("convert: %d of %d VMs failed", failed, len(vms))}
	}
	return nil
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
			fmt.Fprintln(b.w, progress.Format(u))
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

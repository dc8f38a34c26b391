package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/spf13/cobra"
)

type generateOpts struct {
	name         string
	format       string // manifest file format: yaml | json
	outputFormat string
}

// generateCmd is "hyperctl manifest generate VM-PATH OUTPUT-DIR".
func (a *app) generateCmd() *cobra.Command {
	var o generateOpts
	cmd := &cobra.Command{
		Use:   "generate VM-PATH OUTPUT-DIR",
		Short: "Write a manifest for an image after looking at it",
		Long: `Look at the image at VM-PATH (its format from its bytes, the OVF descriptor
of an OVA/OVF: VM name, disks, guest type) and write OUTPUT-DIR/NAME.yaml, a
manifest that validates. An existing manifest is never overwritten.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.format != "yaml" && o.format != "json" {
				return usageError("--format must be yaml or json, not %q", o.format)
			}
			return a.runGenerate(args[0], args[1], o)
		},
	}
	cmd.Flags().StringVar(&o.name, "name", "", "the VM name (default: from the OVF or the file name)")
	cmd.Flags().StringVar(&o.format, "format", "yaml", "manifest file format: yaml or json")
	cmd.Flags().StringVar(&o.outputFormat, "output-format", manifest.DefaultOutputFormat,
		"output format ("+strings.Join(manifest.OutputFormats(), ", ")+")")
	return cmd
}

// imageFacts is what generate learned from the image.
type imageFacts struct {
	sourceType string
	name       string   // from the OVF, if any
	disks      []string // OVF disk ids, in order
	lines      []string // human description
}

func inspectImage(p string) (imageFacts, error) {
	format, err := imgfmt.Detect(p)
	if err != nil {
		return imageFacts{}, err
	}
	f := imageFacts{sourceType: sourceTypeOf(format)}
	describeOVF := func(d *imgfmt.OVFDescriptor) {
		f.name = d.Name
		for i, disk := range d.Disks {
			f.disks = append(f.disks, disk.ID)
			f.lines = append(f.lines, fmt.Sprintf("disk %d: %s (%s, %s)", i+1, disk.ID, disk.File, formatBytes(disk.Capacity)))
		}
		var guest []string
		if d.OSType != "" {
			guest = append(guest, "guest "+d.OSType)
		}
		if d.CPUs > 0 {
			guest = append(guest, fmt.Sprintf("%d CPU(s)", d.CPUs))
		}
		if d.MemoryMB > 0 {
			guest = append(guest, fmt.Sprintf("%d MiB memory", d.MemoryMB))
		}
		if d.Firmware != "" {
			guest = append(guest, d.Firmware+" firmware")
		}
		if len(guest) > 0 {
			f.lines = append(f.lines, strings.Join(guest, ", "))
		}
	}
	switch format {
	case imgfmt.OVA:
		arc, err := imgfmt.ReadOVA(p)
		if err != nil {
			return f, err
		}
		if arc.OVF != nil {
			describeOVF(arc.OVF)
		}
	case imgfmt.OVF:
		r, err := os.Open(p)
		if err != nil {
			return f, fmt.Errorf("cannot read ovf: %w", err)
		}
		d, err := imgfmt.ParseOVF(r)
		r.Close()
		if err != nil {
			return f, err
		}
		describeOVF(d)
	case imgfmt.VMDK:
		if d, err := imgfmt.ReadVMDKDescriptorFile(p); err == nil {
			f.lines = append(f.lines, fmt.Sprintf("vmdk %s, %d extent(s), %s", orDash(d.CreateType), len(d.Extents), formatBytes(d.Size())))
		}
	}
	return f, nil
}

func (a *app) runGenerate(vmPath, outDir string, o generateOpts) error {
	src, err := filepath.Abs(vmPath)
	if err != nil {
		return usageError("cannot resolve %s: %w", vmPath, err)
	}
	if _, err := os.Stat(src); err != nil {
		return usageError("cannot read image: %w", err)
	}
	facts, err := inspectImage(src)
	if err != nil {
		return fail(exitFailed, "cannot generate a manifest for %s: %w", vmPath, err)
	}
	name := o.name
	switch {
	case name != "":
	case facts.name != "":
		name = sanitiseName(facts.name)
	default:
		name = nameFromPath(src)
	}

	conv := &manifest.Convert{OutputFormat: o.outputFormat}
	conv.OutputPath = name + "." + manifest.FormatExt(conv.OutputFormat)
	// Each disk of a multi-disk OVA/OVF gets its own output by default
	// (Convert.OutputFor); say which so nobody is surprised.
	var outputs []string
	for i, id := range facts.disks {
		out, _ := conv.OutputFor(i, id)
		outputs = append(outputs, fmt.Sprintf("%s -> %s", id, out))
	}
	m := &manifest.Manifest{
		Version: manifest.Version,
		Name:    name,
		Pipeline: &manifest.Pipeline{
			Load:    manifest.Load{SourceType: facts.sourceType, SourcePath: src},
			Convert: conv,
		},
	}
	data, err := encodeManifest(m, o.format == "json")
	if err != nil {
		return fail(exitFailed, "cannot encode manifest: %w", err)
	}
	// Check the text that will be written, exactly as the agent will.
	parsed, err := manifest.Parse(data)
	if err == nil {
		if ps := manifest.CheckFiles(parsed); len(ps) > 0 {
			err = ps
		}
	}
	var ps manifest.Problems
	if errors.As(err, &ps) {
		fmt.Fprintln(a.env.stderr, "hyperctl: the generated manifest would not be valid:")
		for _, p := range ps {
			fmt.Fprintf(a.env.stderr, "  %s\n", p.String())
		}
		if o.name == "" && ps[0].Path == "name" {
			fmt.Fprintln(a.env.stderr, "  give a name with --name")
		}
		return silentExit(exitFailed)
	} else if err != nil {
		return fail(exitFailed, "cannot check the generated manifest: %w", err)
	}

	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return fail(exitFailed, "cannot create %s: %w", outDir, err)
	}
	file := filepath.Join(outDir, name+"."+o.format)
	if err := writeNew(file, data); err != nil {
		return fail(exitFailed, "%v", err)
	}
	w := a.env.stdout
	fmt.Fprintf(w, "Detected %s at %s\n", facts.sourceType, src)
	for _, l := range facts.lines {
		fmt.Fprintf(w, "  %s\n", l)
	}
	if len(outputs) > 1 {
		fmt.Fprintf(w, "Outputs: %s\n", strings.Join(outputs, ", "))
	}
	fmt.Fprintf(w, "Wrote %s (VM %s). Check it with: hyperctl validate --check-files %s\n", file, name, file)
	return nil
}

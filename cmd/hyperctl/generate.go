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
	// target
	maps                     []string // SOURCE=bridge:BR | SOURCE=network:NET
	pool, storageDir         string
	define, start, autostart bool
}

// generateCmd is "hyperctl manifest generate VM-PATH OUTPUT-DIR".
func (a *app) generateCmd() *cobra.Command {
	var o generateOpts
	cmd := &cobra.Command{
		Use:   "generate VM-PATH OUTPUT-DIR",
		Short: "Write a manifest for an image after looking at it",
		Long: `Look at the image at VM-PATH (its format from its bytes, the OVF descriptor
of an OVA/OVF: VM name, disks, guest type, NICs and their networks) and write
OUTPUT-DIR/NAME.yaml, a manifest that validates. An existing manifest is never
overwritten.

Every network the OVF's NICs are on gets an entry in pipeline.target.networks:
the one --map-network gives ("VM Network=bridge:br0", "Backup=network:isolated"),
else libvirt's network "default", to edit. --pool or --storage-dir say where the
disks go, --define defines the domain in libvirt (qemu:///system) when the job
completes, --start and --autostart start it.`,
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
	cmd.Flags().StringArrayVar(&o.maps, "map-network", nil, `a source network's place: "SOURCE=bridge:BR" or "SOURCE=network:NET" (repeatable)`)
	cmd.Flags().StringVar(&o.pool, "pool", "", "libvirt storage pool for the disks (implies --define's connection)")
	cmd.Flags().StringVar(&o.storageDir, "storage-dir", "", "directory for the disks (as convert.output_dir)")
	cmd.Flags().BoolVar(&o.define, "define", false, "define the domain in libvirt when the job completes")
	cmd.Flags().BoolVar(&o.start, "start", false, "start the domain once defined (implies --define)")
	cmd.Flags().BoolVar(&o.autostart, "autostart", false, "mark the domain autostart (implies --define)")
	return cmd
}

// imageFacts is what generate learned from the image.
type imageFacts struct {
	sourceType string
	name       string   // from the OVF, if any
	disks      []string // OVF disk ids, in order
	networks   []string // the OVF NICs' networks, each once, in order
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
		seen := map[string]bool{}
		for i, n := range d.NICs {
			mac := n.MAC
			if mac == "" {
				mac = "no MAC in the OVF"
			}
			f.lines = append(f.lines, fmt.Sprintf("nic %d: %s on %q (%s)", i+1, orDash(n.Model), n.Network, mac))
			if n.Network != "" && !seen[n.Network] {
				seen[n.Network] = true
				f.networks = append(f.networks, n.Network)
			}
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
	target, err := generateTarget(facts.networks, o)
	if err != nil {
		return err
	}
	m := &manifest.Manifest{
		Version: manifest.Version,
		Name:    name,
		Pipeline: &manifest.Pipeline{
			Load:    manifest.Load{SourceType: facts.sourceType, SourcePath: src},
			Convert: conv,
			Target:  target,
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
	if target != nil {
		for _, nm := range target.Networks {
			fmt.Fprintf(w, "Network %q -> %s\n", nm.Source, nm.Dest())
		}
	}
	fmt.Fprintf(w, "Wrote %s (VM %s). Check it with: hyperctl validate --check-files %s\n", file, name, file)
	return nil
}

// generateTarget is the manifest's target: every source network mapped
// (--map-network, else libvirt's "default"), storage and libvirt as the
// flags say; nil when there is nothing to say.
func generateTarget(networks []string, o generateOpts) (*manifest.Target, error) {
	given := map[string]manifest.NetworkDest{}
	var order []string
	for _, m := range o.maps {
		src, dest, ok := strings.Cut(m, "=")
		kind, val, ok2 := strings.Cut(dest, ":")
		if !ok || !ok2 || src == "" || val == "" || (kind != "bridge" && kind != "network") {
			return nil, usageError(`--map-network %q: want "SOURCE=bridge:BR" or "SOURCE=network:NET"`, m)
		}
		d := manifest.NetworkDest{Bridge: val}
		if kind == "network" {
			d = manifest.NetworkDest{Network: val}
		}
		if _, dup := given[src]; !dup {
			order = append(order, src)
		}
		given[src] = d
	}
	t := &manifest.Target{}
	for _, n := range networks {
		d, ok := given[n]
		if !ok {
			d = manifest.NetworkDest{Network: "default"}
		}
		t.Networks = append(t.Networks, manifest.NetworkMap{Source: n, Bridge: d.Bridge, Network: d.Network})
		delete(given, n)
	}
	for _, src := range order {
		if d, ok := given[src]; ok {
			return nil, usageError("--map-network %q: the image has no NIC on network %q (it has: %s)", src+"="+d.String(), src, strings.Join(networks, ", "))
		}
	}
	switch {
	case o.pool != "" && o.storageDir != "":
		return nil, usageError("give --pool or --storage-dir, not both")
	case o.pool != "":
		t.Storage = &manifest.Storage{Pool: o.pool}
	case o.storageDir != "":
		dir, err := filepath.Abs(o.storageDir)
		if err != nil {
			return nil, usageError("cannot resolve %s: %w", o.storageDir, err)
		}
		t.Storage = &manifest.Storage{Dir: dir}
	}
	if o.define || o.start || o.autostart || o.pool != "" {
		define := o.define || o.start || o.autostart
		t.Libvirt = &manifest.Libvirt{Define: &define, Start: o.start, Autostart: o.autostart}
	}
	if len(t.Networks) == 0 && t.Storage == nil && t.Libvirt == nil {
		return nil, nil
	}
	return t, nil
}

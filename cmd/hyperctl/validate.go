package main

import (
	"errors"
	"fmt"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/spf13/cobra"
)

// validateOpts are the flags of validate and manifest validate.
type validateOpts struct {
	file       string
	checkFiles bool
}

// validateCmd is "hyperctl validate FILE".
func (a *app) validateCmd() *cobra.Command {
	var o validateOpts
	cmd := &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a manifest locally (no agent needed)",
		Long: `Parse FILE (JSON or YAML) as a manifest v1.0 and check it the way the agent
will. Prints a summary and exits 0 when it is valid; lists every problem with
its field path and exits 1 when it is not; exits 2 when FILE cannot be read or
is not JSON/YAML. --check-files also checks that the source images exist, are
readable and are what source_type says.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if o.file != "" && o.file != args[0] {
					return usageError("give the manifest either as FILE or as --file, not both")
				}
				o.file = args[0]
			}
			return a.runValidate(o)
		},
	}
	addValidateFlags(cmd, &o)
	return cmd
}

func addValidateFlags(cmd *cobra.Command, o *validateOpts) {
	cmd.Flags().StringVarP(&o.file, "file", "f", "", "the manifest file (also -file F, -file=F)")
	cmd.Flags().BoolVar(&o.checkFiles, "check-files", false, "also check the source images on disk")
}

// vmSummary is one VM of a manifest as validate reports it.
type vmSummary struct {
	Name         string `json:"name"`
	SourceType   string `json:"source_type"`
	SourcePath   string `json:"source_path"`
	OutputFormat string `json:"output_format"`
	Compress     bool   `json:"compress"`
	OutputPath   string `json:"output_path"`
	OutputDir    string `json:"output_dir,omitempty"`
}

// problemJSON is one validation problem on the wire.
type problemJSON struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

// validateResult is the --output json shape of validate.
type validateResult struct {
	File   string        `json:"file"`
	Valid  bool          `json:"valid"`
	Batch  bool          `json:"batch"`
	Name   string        `json:"name,omitempty"`
	VMs    []vmSummary   `json:"vms"`
	Errors []problemJSON `json:"errors"`
}

func summarise(m *manifest.Manifest) []vmSummary {
	one := func(name string, p *manifest.Pipeline) vmSummary {
		s := vmSummary{Name: name}
		if p == nil {
			return s
		}
		s.SourceType, s.SourcePath = p.Load.SourceType, p.Load.SourcePath
		if c := p.Convert; c != nil {
			s.OutputFormat, s.Compress, s.OutputPath, s.OutputDir = c.OutputFormat, c.Compress, c.OutputPath, c.OutputDir
		}
		if s.OutputFormat == "" {
			s.OutputFormat = "qcow2"
		}
		if s.OutputPath == "" && name != "" {
			s.OutputPath = name + "." + s.OutputFormat
		}
		return s
	}
	if m.Batch {
		out := make([]vmSummary, 0, len(m.VMs))
		for _, vm := range m.VMs {
			out = append(out, one(vm.Name, vm.Pipeline))
		}
		return out
	}
	return []vmSummary{one(m.Name, m.Pipeline)}
}

func toProblemJSON(ps manifest.Problems) []problemJSON {
	out := make([]problemJSON, 0, len(ps))
	for _, p := range ps {
		out = append(out, problemJSON{Path: p.Path, Message: p.Message})
	}
	return out
}

func problemLine(p problemJSON) string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// readManifestFile reads path ("-" is stdin); failures are usage errors.
func (a *app) readManifestFile(path string) ([]byte, error) {
	if path == "" {
		return nil, usageError("no manifest given: use FILE or --file FILE")
	}
	// Both stop reading at manifest.MaxSize: a huge file is refused, not
	// read whole.
	var data []byte
	var err error
	if path == "-" {
		data, err = manifest.Read(a.env.stdin, "from standard input")
	} else {
		data, err = manifest.ReadFile(path)
	}
	if err != nil {
		return nil, usageError("%w", err)
	}
	return data, nil
}

// parseManifestFile reads and parses path. A file that cannot be read or is
// not JSON/YAML is exit 2; an invalid manifest is returned as Problems with
// a nil manifest.
func (a *app) parseManifestFile(path string) ([]byte, *manifest.Manifest, manifest.Problems, error) {
	data, err := a.readManifestFile(path)
	if err != nil {
		return nil, nil, nil, err
	}
	m, err := manifest.Parse(data)
	var syn *manifest.SyntaxError
	var probs manifest.Problems
	switch {
	case err == nil:
		return data, m, nil, nil
	case errors.As(err, &probs):
		return data, nil, probs, nil
	case errors.As(err, &syn):
		return data, nil, nil, usageError("cannot parse %s: not a JSON or YAML manifest: %w", path, err)
	default:
		return data, nil, nil, usageError("cannot parse %s: %w", path, err)
	}
}

func (a *app) runValidate(o validateOpts) error {
	_, m, probs, err := a.parseManifestFile(o.file)
	if err != nil {
		if a.jsonOutput() {
			var ee *exitError
			if errors.As(err, &ee) && ee.err != nil {
				_ = writeJSON(a.env.stdout, validateResult{File: o.file, VMs: []vmSummary{},
					Errors: []problemJSON{{Message: ee.err.Error()}}})
			}
		}
		return err
	}
	if m != nil {
		probs = append(probs, m.Validate()...)
		if o.checkFiles && len(probs) == 0 {
			probs = append(probs, manifest.CheckFiles(m)...)
			probs = append(probs, a.checkRemoteVMs(m)...)
		}
	}
	res := validateResult{File: o.file, Valid: len(probs) == 0, VMs: []vmSummary{}, Errors: toProblemJSON(probs)}
	if m != nil {
		res.Batch, res.Name, res.VMs = m.Batch, m.Name, summarise(m)
	}
	if a.jsonOutput() {
		if err := writeJSON(a.env.stdout, res); err != nil {
			return fail(exitFailed, "cannot write output: %w", err)
		}
	} else {
		a.printValidateResult(res)
	}
	if !res.Valid {
		return silentExit(exitFailed)
	}
	return nil
}

func (a *app) printValidateResult(r validateResult) {
	w := a.env.stdout
	if !r.Valid {
		fmt.Fprintf(w, "%s %s: %d problem(s)\n", a.paint(ansiRed+ansiBold, "invalid:"), r.File, len(r.Errors))
		for _, p := range r.Errors {
			fmt.Fprintf(w, "  %s\n", problemLine(p))
		}
		return
	}
	kind := "single VM"
	if r.Batch {
		kind = fmt.Sprintf("batch of %d VMs", len(r.VMs))
	}
	fmt.Fprintf(w, "%s %s (%s)\n", a.paint(ansiGreen+ansiBold, "valid:"), r.File, kind)
	if r.Name != "" {
		fmt.Fprintf(w, "name: %s\n", r.Name)
	}
	t := &table{}
	t.add("VM", "SOURCE", "TYPE", "FORMAT", "OUTPUT")
	for _, v := range r.VMs {
		format := v.OutputFormat
		if v.Compress {
			format += " (compressed)"
		}
		out := v.OutputPath
		if v.OutputDir != "" {
			out = v.OutputDir + "/" + out
		}
		t.add(v.Name, v.SourcePath, v.SourceType, format, out)
	}
	t.write(w)
}

package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/spf13/cobra"
)

// The four steps of the builder, as the original hyperctl had them.
var createSteps = []string{"Source", "Inspection", "Fixes", "Conversion"}

// question is one prompt of manifest create. Its key is also the name of the
// flag that answers it from a script.
type question struct {
	key     string
	step    int // index into createSteps
	prompt  string
	usage   string // flag help
	choices []string
	yesNo   bool
	// def is the default answer given what is answered so far.
	def func(ans map[string]string) string
	// skip says the question does not apply (e.g. fixes switched off).
	skip func(ans map[string]string) bool
	// norm turns an accepted answer into its stored form, or says why not.
	norm func(s string) (string, error)
	// paths are the manifest field paths whose problems this question answers.
	paths []string
}

func yes(ans map[string]string, key string) bool { return ans[key] == "yes" }

func constant(s string) func(map[string]string) string {
	return func(map[string]string) string { return s }
}

var nonNameChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// nameFromPath makes a manifest name from an image file name.
func nameFromPath(p string) string {
	base := filepath.Base(p)
	return sanitiseName(strings.TrimSuffix(base, filepath.Ext(base)))
}

// sanitiseName turns free text into a valid manifest name.
func sanitiseName(s string) string {
	s = strings.Trim(nonNameChars.ReplaceAllString(s, "-"), "-._")
	if len(s) > 64 {
		s = strings.TrimRight(s[:64], "-._")
	}
	if s == "" {
		return "vm"
	}
	return s
}

// sourceTypeOf maps an imgfmt format to a source_type.
func sourceTypeOf(format string) string {
	if format == imgfmt.VPC {
		return "vhd"
	}
	return format
}

// guessSourceType looks at the image when it is there, else at its suffix.
func guessSourceType(p string) string {
	if f, err := imgfmt.Detect(p); err == nil {
		return sourceTypeOf(f)
	}
	ext := strings.TrimPrefix(strings.ToLower(filepath.Ext(p)), ".")
	for _, t := range manifest.SourceTypes() {
		if ext == t {
			return t
		}
	}
	switch ext {
	case "img":
		return "raw"
	case "vpc":
		return "vhd"
	}
	return "vmdk"
}

func createQuestions() []question {
	fixOff := func(ans map[string]string) bool { return !yes(ans, "fix") }
	return []question{
		{key: "source-path", step: 0, prompt: "Source image (absolute path)", usage: "path of the VMDK/OVA/OVF/VHD/VHDX/raw/qcow2 image",
			def: constant(""), paths: []string{"pipeline.load.source_path"},
			norm: func(s string) (string, error) {
				if s == "" {
					return "", errors.New("a source image is required")
				}
				abs, err := filepath.Abs(s)
				if err != nil {
					return "", err
				}
				return abs, nil
			}},
		{key: "source-type", step: 0, prompt: "Source type", usage: "source_type (detected from the image when omitted)",
			choices: manifest.SourceTypes(), paths: []string{"pipeline.load.source_type"},
			def: func(ans map[string]string) string { return guessSourceType(ans["source-path"]) }},
		{key: "name", step: 0, prompt: "VM name", usage: "the VM's name (default: from the image file name)",
			paths: []string{"name"},
			def:   func(ans map[string]string) string { return nameFromPath(ans["source-path"]) }},

		{key: "inspect", step: 1, prompt: "Inspect the guest", usage: "run the INSPECT stage", yesNo: true, def: constant("yes"),
			paths: []string{"pipeline.inspect"}},
		{key: "detect-os", step: 1, prompt: "Detect the guest OS", usage: "detect the guest OS", yesNo: true, def: constant("yes"),
			skip: func(ans map[string]string) bool { return !yes(ans, "inspect") }},

		{key: "fix", step: 2, prompt: "Apply fixes for KVM", usage: "run the FIX stage", yesNo: true, def: constant("yes")},
		{key: "fstab-mode", step: 2, prompt: "fstab/crypttab device names", usage: "fstab mode", choices: manifest.FstabModes(),
			def: constant(manifest.DefaultFstabMode), skip: fixOff, paths: []string{"pipeline.fix.fstab.mode"}},
		{key: "regenerate-initramfs", step: 2, prompt: "Rebuild the initramfs with virtio drivers", usage: "regenerate the initramfs",
			yesNo: true, def: constant("yes"), skip: fixOff},
		{key: "fix-level", step: 2, prompt: "Network fix level", usage: "network fix level", choices: manifest.FixLevels(),
			def: constant(manifest.DefaultFixLevel), skip: fixOff, paths: []string{"pipeline.fix.network.fix_level"}},
		{key: "remove-vmware-tools", step: 2, prompt: "Remove VMware tools", usage: "remove VMware tools from the guest",
			yesNo: true, def: constant("no"), skip: fixOff},

		{key: "output-format", step: 3, prompt: "Output format", usage: "output format", choices: manifest.OutputFormats(),
			def: constant(manifest.DefaultOutputFormat), paths: []string{"pipeline.convert.output_format"}},
		{key: "compress", step: 3, prompt: "Compress the qcow2", usage: "compress the output (qcow2 only)", yesNo: true, def: constant("no"),
			skip: func(ans map[string]string) bool { return ans["output-format"] != "qcow2" }, paths: []string{"pipeline.convert.compress"}},
		{key: "output-path", step: 3, prompt: "Output file name", usage: "output file name (default NAME.FORMAT)",
			def: func(ans map[string]string) string {
				return ans["name"] + "." + manifest.FormatExt(ans["output-format"])
			},
			paths: []string{"pipeline.convert.output_path"}},
		{key: "boot-test", step: 3, prompt: "Boot-test the converted VM", usage: "boot the result under qemu to check it", yesNo: true, def: constant("no"),
			paths: []string{"pipeline.validate"}},
		{key: "out", step: 3, prompt: "Save the manifest as (.yaml or .json)", usage: "where to write the manifest (never overwritten)",
			def: func(ans map[string]string) string { return ans["name"] + ".yaml" },
			norm: func(s string) (string, error) {
				if _, err := os.Lstat(s); err == nil {
					return "", fmt.Errorf("%s already exists; choose another name (it is never overwritten)", s)
				}
				return s, nil
			}},
	}
}

// normalise checks an answer against the question and returns its stored form.
func (q *question) normalise(s string) (string, error) {
	s = strings.TrimSpace(s)
	switch {
	case q.yesNo:
		switch strings.ToLower(s) {
		case "y", "yes", "true", "1", "on":
			return "yes", nil
		case "n", "no", "false", "0", "off":
			return "no", nil
		}
		return "", fmt.Errorf("answer yes or no, not %q", s)
	case q.choices != nil:
		for _, c := range q.choices {
			if strings.EqualFold(s, c) {
				return c, nil
			}
		}
		return "", fmt.Errorf("%q is not one of: %s", s, strings.Join(q.choices, ", "))
	case q.norm != nil:
		return q.norm(s)
	}
	return s, nil
}

type createOpts struct {
	yes   bool
	flags map[string]*string // string answers by key
	bools map[string]*bool   // yes/no answers by key
}

// createCmd is "hyperctl manifest create": the 4-step builder.
func (a *app) createCmd() *cobra.Command {
	o := createOpts{flags: map[string]*string{}, bools: map[string]*bool{}}
	qs := createQuestions()
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Build a manifest step by step",
		Long: `Build a manifest in four steps (source, inspection, fixes, conversion).
Press Enter to take the [default]; type "back" to return to the previous
question. The manifest is validated before it is written, and an existing
file is never overwritten.

Every answer can be given as a flag; with --yes the remaining questions take
their defaults and nothing is asked, e.g.
  hyperctl manifest create --yes --source-path /srv/vm/web01.vmdk --out web01.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ans := map[string]string{}
			for _, q := range qs {
				if !cmd.Flags().Changed(q.key) {
					continue
				}
				raw := ""
				if q.yesNo {
					raw = map[bool]string{true: "yes", false: "no"}[*o.bools[q.key]]
				} else {
					raw = *o.flags[q.key]
				}
				v, err := q.normalise(raw)
				if err != nil {
					return usageError("--%s: %v", q.key, err)
				}
				ans[q.key] = v
			}
			b := &builder{a: a, qs: qs, ans: ans, given: map[string]bool{}, interactive: !o.yes}
			for k := range ans {
				b.given[k] = true
			}
			return b.run()
		},
	}
	for i := range qs {
		q := &qs[i]
		if q.yesNo {
			o.bools[q.key] = cmd.Flags().Bool(q.key, false, q.usage+" (asked when omitted; default "+q.def(map[string]string{})+")")
		} else {
			u := q.usage
			if q.choices != nil {
				u += " (" + strings.Join(q.choices, ", ") + ")"
			}
			o.flags[q.key] = cmd.Flags().String(q.key, "", u)
			if q.choices != nil {
				_ = cmd.RegisterFlagCompletionFunc(q.key, cobra.FixedCompletions(q.choices, cobra.ShellCompDirectiveNoFileComp))
			}
		}
	}
	cmd.Flags().BoolVarP(&o.yes, "yes", "y", false, "ask nothing: take defaults for every answer not given as a flag")
	cmd.Flags().BoolVar(&o.yes, "non-interactive", false, "same as --yes")
	return cmd
}

// errBack is the user typing "back".
var errBack = errors.New("back")

// builder runs the questions. ans holds the answers so far; given marks
// those that came from flags and are never asked.
type builder struct {
	a           *app
	qs          []question
	ans         map[string]string
	given       map[string]bool
	interactive bool
	in          *bufio.Reader
}

func (b *builder) out() io.Writer { return b.a.env.stdout }

// ask prompts for q and reads one answer; "back" returns errBack.
func (b *builder) ask(q *question) (string, error) {
	def := q.def(b.ans)
	if prev, ok := b.ans[q.key]; ok {
		def = prev // coming back: the earlier answer is the default
	}
	for {
		p := q.prompt
		if q.yesNo {
			p += " (yes/no)"
		} else if q.choices != nil {
			p += " (" + strings.Join(q.choices, ", ") + ")"
		}
		if def != "" {
			p += " [" + b.a.paint(ansiBold, def) + "]"
		}
		fmt.Fprint(b.out(), p+": ")
		line, err := b.in.ReadString('\n')
		if err != nil && (line == "" || !errors.Is(err, io.EOF)) {
			fmt.Fprintln(b.out())
			if errors.Is(err, io.EOF) {
				return "", usageError("cannot read an answer for %q: end of input", q.prompt)
			}
			return "", usageError("cannot read an answer: %w", err)
		}
		s := strings.TrimSpace(line)
		if strings.EqualFold(s, "back") {
			return "", errBack
		}
		if s == "" {
			s = def
		}
		v, nerr := q.normalise(s)
		if nerr == nil {
			nerr = b.check(q, v)
		}
		if nerr == nil {
			return v, nil
		}
		fmt.Fprintf(b.out(), "  %s\n", b.a.paint(ansiRed, nerr.Error()))
		if err != nil { // EOF after a bad answer: nothing more will come
			return "", usageError("cannot read an answer for %q: end of input", q.prompt)
		}
	}
}

// check validates answer v of q as part of the manifest, so a bad value is
// refused where it is typed rather than at the end.
func (b *builder) check(q *question, v string) error {
	if len(q.paths) == 0 {
		return nil
	}
	saved, had := b.ans[q.key]
	b.ans[q.key] = v
	probs := b.manifest().Validate()
	if had {
		b.ans[q.key] = saved
	} else {
		delete(b.ans, q.key)
	}
	for _, p := range probs {
		for _, qp := range q.paths {
			if p.Path == qp || strings.HasPrefix(p.Path, qp+".") {
				return errors.New(p.Message)
			}
		}
	}
	return nil
}

// applies says whether q is asked (or defaulted) given the answers so far.
func (b *builder) applies(q *question) bool { return q.skip == nil || !q.skip(b.ans) }

func (b *builder) run() error {
	b.in = bufio.NewReader(b.a.env.stdin)
	if b.interactive {
		fmt.Fprintln(b.out(), `Build a hyper2kvm manifest. Press Enter for the [default]; type "back" to go to the previous question.`)
	}
	i := 0
	var asked []int // indexes of questions asked, for "back"
	step := -1
	for {
		for i < len(b.qs) {
			q := &b.qs[i]
			if !b.applies(q) || b.given[q.key] {
				i++
				continue
			}
			if !b.interactive {
				v, err := q.normalise(q.def(b.ans))
				if err != nil {
					return usageError("--%s is needed with --yes: %v", q.key, err)
				}
				b.ans[q.key] = v
				i++
				continue
			}
			if q.step != step {
				step = q.step
				fmt.Fprintf(b.out(), "\n%s\n", b.a.paint(ansiBold, fmt.Sprintf("Step %d/%d: %s", step+1, len(createSteps), createSteps[step])))
			}
			v, err := b.ask(q)
			if errors.Is(err, errBack) {
				if len(asked) == 0 {
					fmt.Fprintln(b.out(), "  (this is the first question)")
					continue
				}
				i = b.backTo(&asked)
				if b.qs[i].step != step {
					step = -1 // print the header of the step we return to
				}
				continue
			}
			if err != nil {
				return err
			}
			b.ans[q.key] = v
			asked = append(asked, i)
			i++
		}

		m := b.manifest()
		probs := m.Validate()
		if len(probs) > 0 {
			fmt.Fprintf(b.out(), "%s\n", b.a.paint(ansiRed, "The manifest would not be valid:"))
			for _, p := range probs {
				fmt.Fprintf(b.out(), "  %s\n", p.String())
			}
			j := b.questionFor(probs[0].Path)
			if !b.interactive || j < 0 || b.given[b.qs[j].key] {
				return silentExit(exitFailed)
			}
			// Ask again from the question that answers the first problem.
			fmt.Fprintln(b.out(), "Please answer again.")
			for len(asked) > 0 && asked[len(asked)-1] >= j {
				asked = asked[:len(asked)-1]
			}
			i, step = j, -1
			continue
		}

		data, err := b.encode(m, b.ans["out"])
		if err != nil {
			return fail(exitFailed, "cannot encode manifest: %w", err)
		}
		if b.interactive {
			fmt.Fprintf(b.out(), "\n%s\n%s\n", b.a.paint(ansiBold, "Manifest:"), data)
			ok, err := b.confirm("Write " + b.ans["out"])
			if errors.Is(err, errBack) && len(asked) > 0 {
				i, step = b.backTo(&asked), -1
				continue
			}
			if errors.Is(err, errBack) {
				fmt.Fprintln(b.out(), "  (every answer was given as a flag)")
				continue
			}
			if err != nil {
				return err
			}
			if !ok {
				fmt.Fprintln(b.out(), "Nothing written.")
				return silentExit(exitFailed)
			}
		}
		if err := writeNew(b.ans["out"], data); err != nil {
			return fail(exitFailed, "%v", err)
		}
		fmt.Fprintf(b.out(), "Wrote %s. Submit it with: hyperctl submit %s\n", b.ans["out"], b.ans["out"])
		if probs := manifest.CheckFiles(m); len(probs) > 0 {
			fmt.Fprintln(b.a.env.stderr, "hyperctl: warning: the source does not check out on this machine:")
			for _, p := range probs {
				fmt.Fprintf(b.a.env.stderr, "  %s\n", p.String())
			}
		}
		return nil
	}
}

// backTo pops the last asked question and forgets the answers after it, so
// that their defaults follow the changed answer.
func (b *builder) backTo(asked *[]int) int {
	i := (*asked)[len(*asked)-1]
	*asked = (*asked)[:len(*asked)-1]
	for j := i + 1; j < len(b.qs); j++ {
		if !b.given[b.qs[j].key] {
			delete(b.ans, b.qs[j].key)
		}
	}
	return i
}

func (b *builder) confirm(prompt string) (bool, error) {
	q := &question{key: "confirm", prompt: prompt, yesNo: true, def: constant("yes")}
	v, err := b.ask(q)
	return v == "yes", err
}

// questionFor returns the index of the question answering field path p.
func (b *builder) questionFor(p string) int {
	for i, q := range b.qs {
		for _, qp := range q.paths {
			if p == qp || strings.HasPrefix(p, qp+".") {
				return i
			}
		}
	}
	return -1
}

// manifest builds the manifest the answers describe; every section is
// written out so the file shows what will happen.
func (b *builder) manifest() *manifest.Manifest {
	ans := b.ans
	t, f := true, false
	boolp := func(key string) *bool {
		if yes(ans, key) {
			return &t
		}
		return &f
	}
	p := &manifest.Pipeline{
		Load:    manifest.Load{SourceType: ans["source-type"], SourcePath: ans["source-path"]},
		Inspect: &manifest.Inspect{Enabled: boolp("inspect")},
		Fix:     &manifest.Fix{Enabled: boolp("fix")},
		Convert: &manifest.Convert{
			OutputFormat: ans["output-format"],
			Compress:     ans["output-format"] == "qcow2" && yes(ans, "compress"),
			OutputPath:   ans["output-path"],
		},
		Validate: &manifest.Validate{Enabled: &t, BootTest: yes(ans, "boot-test")},
	}
	if yes(ans, "inspect") {
		p.Inspect.DetectOS = boolp("detect-os")
	}
	if yes(ans, "fix") {
		p.Fix.Fstab = &manifest.FstabFix{Enabled: &t, Mode: ans["fstab-mode"]}
		p.Fix.Grub = &manifest.Toggle{Enabled: &t}
		p.Fix.Initramfs = &manifest.InitramfsFix{Enabled: &t, Regenerate: boolp("regenerate-initramfs")}
		level := ans["fix-level"]
		p.Fix.Network = &manifest.NetworkFix{Enabled: boolp("fix"), FixLevel: level}
		if level == "none" {
			p.Fix.Network.Enabled = &f
		}
		p.Fix.VMwareTools = &manifest.Toggle{Enabled: boolp("remove-vmware-tools")}
	}
	return &manifest.Manifest{Version: manifest.Version, Name: ans["name"], Pipeline: p}
}

// encode renders m as JSON for a .json file and YAML otherwise, keeping the
// model's field order and names (its JSON tags).
func (b *builder) encode(m *manifest.Manifest, file string) ([]byte, error) {
	return encodeManifest(m, strings.EqualFold(filepath.Ext(file), ".json"))
}

// writeNew writes data to a file that must not exist yet.
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("cannot write %s: it already exists (never overwritten)", path)
		}
		return fmt.Errorf("cannot write manifest: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	return nil
}

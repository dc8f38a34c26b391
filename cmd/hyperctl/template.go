package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/templates"
)

// templateCmd is "hyperctl template list|show NAME".
func (a *app) templateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "template list|show NAME",
		Short: "List and show manifest templates",
		Long: `Manifest templates are partial manifests with documented parameters:
shipped in /usr/share/hyper2kvm/templates/, the admin's in
/etc/hyper2kvm/templates/ (same name: the admin's wins). Use one with
hyperctl submit --template NAME --set KEY=VALUE ...

list exits 1 when a template does not validate, naming the file and field.`,
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the templates and whether each validates",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, args []string) error { return a.runTemplateList() },
	}
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a template: its parameters and partial manifest",
		Args:  cobra.ExactArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return a.runTemplateShow(args[0]) },
	}
	cmd.AddCommand(list, show)
	return cmd
}

// templateListJSON is the --output json shape of template list.
type templateListJSON struct {
	Templates []*templates.Template `json:"templates"`
}

func (a *app) runTemplateList() error {
	ts, err := a.env.templates.List()
	if err != nil {
		return fail(exitFailed, "%w", err)
	}
	bad := false
	for _, t := range ts {
		bad = bad || len(t.Problems) > 0
	}
	if a.jsonOutput() {
		if err := writeJSON(a.env.stdout, templateListJSON{Templates: ts}); err != nil {
			return fail(exitFailed, "cannot write output: %w", err)
		}
	} else {
		if len(ts) == 0 {
			fmt.Fprintf(a.env.stdout, "No templates in %s.\n", strings.Join(a.env.templates.Dirs, ", "))
		}
		t := &table{}
		t.add("NAME", "STATE", "DESCRIPTION")
		for _, tp := range ts {
			state := "ok"
			switch {
			case len(tp.Problems) > 0:
				state = a.paint(ansiRed, "invalid")
			case tp.Unavailable != "":
				state = "unavailable"
			}
			desc, _, _ := strings.Cut(tp.Description, ". ")
			t.add(tp.Name, state, desc)
		}
		if len(ts) > 0 {
			t.write(a.env.stdout)
		}
		for _, tp := range ts {
			if tp.Unavailable != "" {
				fmt.Fprintf(a.env.stdout, "%s: %s\n", tp.Name, tp.Unavailable)
			}
			for _, p := range tp.Problems {
				fmt.Fprintf(a.env.stderr, "hyperctl: template %s (%s) does not validate: %s\n", tp.Name, tp.Path, p)
			}
		}
	}
	if bad {
		return silentExit(exitFailed)
	}
	return nil
}

func (a *app) runTemplateShow(name string) error {
	t, err := a.env.templates.Get(name)
	if err != nil {
		if errors.Is(err, templates.ErrNotFound) {
			return fail(exitFailed, "%w", err)
		}
		return usageError("%w", err)
	}
	if a.jsonOutput() {
		return writeJSON(a.env.stdout, t)
	}
	w := a.env.stdout
	fmt.Fprintf(w, "%s (%s)\n%s\n", t.Name, t.Path, t.Description)
	if t.Unavailable != "" {
		fmt.Fprintf(w, "unavailable: %s\n", t.Unavailable)
	}
	for _, p := range t.Problems {
		fmt.Fprintf(w, "%s %s\n", a.paint(ansiRed, "does not validate:"), p)
	}
	fmt.Fprintln(w, "\nParameters (--set NAME=VALUE):")
	tb := &table{}
	tb.add("NAME", "REQUIRED", "DESCRIPTION")
	for _, p := range t.Parameters {
		req := ""
		if p.Required {
			req = "yes"
		}
		tb.add(p.Name, req, p.Description)
	}
	tb.write(w)
	fmt.Fprintln(w, "\nManifest:")
	return writeJSON(w, t.Manifest)
}

// fromTemplate makes a manifest from a template and --set values; the
// problems name the fields like validate's.
func (a *app) fromTemplate(name string, sets []string) ([]byte, manifest.Problems, error) {
	t, err := a.env.templates.Get(name)
	if err != nil {
		if errors.Is(err, templates.ErrNotFound) {
			return nil, nil, fail(exitFailed, "%w", err)
		}
		return nil, nil, usageError("%w", err)
	}
	set := map[string]string{}
	for _, kv := range sets {
		k, v, err := templates.ParseSet(kv)
		if err != nil {
			return nil, nil, usageError("%w", err)
		}
		set[k] = v
	}
	data, err := t.Apply(set)
	var ps manifest.Problems
	switch {
	case err == nil:
		return data, nil, nil
	case errors.As(err, &ps):
		return nil, ps, nil
	case strings.HasPrefix(err.Error(), "--set"):
		return nil, nil, usageError("%w", err)
	}
	return nil, nil, fail(exitFailed, "%w", err)
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/polkit"
)

// sourceClient is the part of the agent's client that reads sources
// (dbusapi.Client has it).
type sourceClient interface {
	ListSources(ctx context.Context, interactive bool) ([]apitype.Source, error)
	BrowseSource(ctx context.Context, name, path string, interactive bool) ([]apitype.InventoryEntry, error)
}

func sourcesClient(c agentClient) (sourceClient, error) {
	sc, ok := c.(sourceClient)
	if !ok {
		return nil, fmt.Errorf("this client cannot read sources")
	}
	return sc, nil
}

// sourcesCmd is "hyperctl sources".
func (a *app) sourcesCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "sources",
		Short: "List the vCenter and ESXi sources the agent can read VMs from",
		Long: `List the sources an administrator defined in /etc/hyper2kvm/sources.d
(docs/SOURCES.md), whether their password is set, and the problem of any
invalid source file. Needs the polkit action io.hyper2kvm.agent.submit.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			sc, err := sourcesClient(c)
			if err != nil {
				return err
			}
			list, err := sc.ListSources(ctx, a.interactive())
			if err != nil {
				return a.apiError(err, actionSubmit)
			}
			if a.jsonOutput() {
				return writeJSON(a.env.stdout, map[string]any{"sources": list})
			}
			if len(list) == 0 {
				fmt.Fprintln(a.env.stdout, "No sources. An administrator adds one in /etc/hyper2kvm/sources.d (see docs/SOURCES.md).")
				return nil
			}
			tw := tabwriter.NewWriter(a.env.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tTYPE\tURL\tUSER\tPASSWORD")
			for _, s := range list {
				if s.Error != "" {
					fmt.Fprintf(tw, "%s\tinvalid\t%s\t\t\n", s.Name, s.Error)
					continue
				}
				pw := "set"
				if !s.PasswordSet {
					pw = "missing (hyper2kvmd source set-password " + s.Name + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, s.Type, s.URL, s.Username, pw)
			}
			return tw.Flush()
		},
	}
}

// vmsCmd is "hyperctl vms SOURCE [PATH] [--filter REGEX]".
func (a *app) vmsCmd() *cobra.Command {
	var filter string
	var recursive bool
	cmd := &cobra.Command{
		Use:   "vms SOURCE [PATH]",
		Short: "Browse a source's inventory: folders and VMs at PATH (the root by default)",
		Long: `List the folders and VMs at an inventory path of a source, with each VM's
power state, guest OS, CPUs, memory and disks. The PATH column is what a
manifest's load.vm takes. --recursive walks the folders below PATH.
Needs the polkit action io.hyper2kvm.agent.use-source for SOURCE.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := "/"
			if len(args) == 2 {
				p = args[1]
			}
			var re *regexp.Regexp
			if filter != "" {
				var err error
				if re, err = regexp.Compile(filter); err != nil {
					return usageError("--filter: %v", err)
				}
			}
			ctx := cmd.Context()
			c, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			sc, err := sourcesClient(c)
			if err != nil {
				return err
			}
			var all []apitype.InventoryEntry
			var walk func(p string, depth int) error
			walk = func(p string, depth int) error {
				es, err := sc.BrowseSource(ctx, args[0], p, a.interactive())
				if err != nil {
					return err
				}
				for _, e := range es {
					isVM := e.Kind == "vm"
					if isVM && (re == nil || re.MatchString(e.Name) || re.MatchString(e.Path)) || !isVM && !recursive && re == nil {
						all = append(all, e)
					}
					if recursive && !isVM && depth < 32 {
						if err := walk(e.Path, depth+1); err != nil {
							return err
						}
					}
				}
				return nil
			}
			if err := walk(p, 0); err != nil {
				return a.apiError(err, polkit.ActionUseSource)
			}
			if a.jsonOutput() {
				if all == nil {
					all = []apitype.InventoryEntry{}
				}
				return writeJSON(a.env.stdout, map[string]any{"source": args[0], "path": p, "entries": all})
			}
			tw := tabwriter.NewWriter(a.env.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KIND\tPATH\tPOWER\tGUEST\tCPUS\tMEMORY\tDISKS")
			for _, e := range all {
				if e.Kind != "vm" {
					fmt.Fprintf(tw, "%s\t%s/\t\t\t\t\t\n", e.Kind, e.Path)
					continue
				}
				var disks []string
				for _, d := range e.Disks {
					disks = append(disks, formatBytes(d.Bytes))
				}
				fmt.Fprintf(tw, "vm\t%s\t%s\t%s\t%d\t%d MiB\t%s\n", e.Path, e.PowerState, e.GuestOS, e.CPUs, e.MemoryMB, strings.Join(disks, " + "))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&filter, "filter", "", "list only the VMs whose name or path matches this regular expression")
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "walk the folders below PATH")
	return cmd
}

// importCmd is "hyperctl import SOURCE VM... [--snapshot] [--batch]".
func (a *app) importCmd() *cobra.Command {
	var snapshot, batch bool
	var template string
	cmd := &cobra.Command{
		Use:   "import SOURCE VM...",
		Short: "Convert VMs straight from a source: one job per VM (inventory paths, or vm-NN morefs)",
		Long: `Write and submit a manifest that reads each VM from SOURCE: a single-VM
manifest per VM, or with --batch one batch manifest for all. VM is an
inventory path ("/DC0/vm/web01", as hyperctl vms prints it) or a moref
("vm-42"). --template FILE takes the pipeline (fix, convert, validate) from
a manifest file; --snapshot exports running VMs from a snapshot.
Needs io.hyper2kvm.agent.submit and io.hyper2kvm.agent.use-source.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var tmpl *manifest.Pipeline
			var o submitOpts
			if template != "" {
				_, m, probs, err := a.parseManifestFile(template)
				if err != nil {
					return err
				}
				if len(probs) > 0 {
					a.printValidateResult(validateResult{File: template, Errors: toProblemJSON(probs)})
					return silentExit(exitFailed)
				}
				if m.Pipeline != nil {
					tmpl = m.Pipeline
				} else if len(m.VMs) > 0 {
					tmpl = m.VMs[0].Pipeline
				}
			}
			docs, err := importManifests(args[0], args[1:], snapshot, batch, tmpl)
			if err != nil {
				return err
			}
			return a.submitDocs(cmd.Context(), docs, o)
		},
	}
	cmd.Flags().BoolVar(&snapshot, "snapshot", false, "export running VMs from a snapshot (taken, exported, removed)")
	cmd.Flags().BoolVar(&batch, "batch", false, "submit one batch manifest for all the VMs")
	cmd.Flags().StringVar(&template, "template", "", "a manifest file whose pipeline (fix, convert, validate) the new manifests take")
	return cmd
}

var morefRE = regexp.MustCompile(`^vm-[0-9]+$`)

// importManifests writes the manifests of an import: one per VM, or one
// batch.
func importManifests(source string, vms []string, snapshot, batch bool, tmpl *manifest.Pipeline) ([][]byte, error) {
	pipeline := func(vm string) (*manifest.Pipeline, string) {
		p := &manifest.Pipeline{}
		if tmpl != nil {
			cp := *tmpl
			p = &cp
		}
		p.Load = manifest.Load{SourceType: manifest.SourceVSphere, Source: source, Snapshot: snapshot}
		name := path.Base(vm)
		if morefRE.MatchString(vm) {
			p.Load.VMMoref = vm
		} else {
			p.Load.VM = vm
		}
		return p, name
	}
	var docs [][]byte
	if batch {
		m := manifest.Manifest{Version: manifest.Version, Batch: true, Name: source + "-import"}
		for _, vm := range vms {
			p, name := pipeline(vm)
			m.VMs = append(m.VMs, manifest.VM{Name: name, Pipeline: p})
		}
		b, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		return [][]byte{b}, nil
	}
	for _, vm := range vms {
		p, name := pipeline(vm)
		b, err := json.Marshal(manifest.Manifest{Version: manifest.Version, Name: name, Pipeline: p})
		if err != nil {
			return nil, err
		}
		docs = append(docs, b)
	}
	return docs, nil
}

// submitDocs validates and submits generated manifests.
func (a *app) submitDocs(ctx context.Context, docs [][]byte, o submitOpts) error {
	for _, d := range docs {
		if _, err := manifest.Parse(d); err != nil {
			return fmt.Errorf("cannot make a manifest: %w", err)
		}
	}
	c, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	var all []jobJSON
	for _, d := range docs {
		submitted, err := c.Submit(ctx, d, apitype.SubmitOptions{}, a.interactive())
		if err != nil {
			return a.apiError(err, actionSubmit)
		}
		all = append(all, viewsOf(submitted)...)
		if !a.jsonOutput() {
			for _, j := range submitted {
				fmt.Fprintf(a.env.stdout, "Submitted %s as job %s.\n", j.Name, j.ID)
			}
		}
	}
	if a.jsonOutput() {
		return writeJSON(a.env.stdout, submitResult{Jobs: all})
	}
	return nil
}

// checkRemoteVMs is --check-files for loads that name a source: the agent
// looks the VM up (BrowseSource of its inventory path). VMs named by moref
// or UUID are looked up when the job runs.
func (a *app) checkRemoteVMs(m *manifest.Manifest) manifest.Problems {
	type item struct {
		path string
		load manifest.Load
	}
	var items []item
	if m.Pipeline != nil && m.Pipeline.Load.IsRemote() && m.Pipeline.Load.VM != "" {
		items = append(items, item{"pipeline.load.vm", m.Pipeline.Load})
	}
	for i, vm := range m.VMs {
		if vm.Pipeline != nil && vm.Pipeline.Load.IsRemote() && vm.Pipeline.Load.VM != "" {
			items = append(items, item{fmt.Sprintf("vms[%d].pipeline.load.vm", i), vm.Pipeline.Load})
		}
	}
	if len(items) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := a.connect(ctx)
	if err != nil {
		return manifest.Problems{{Path: items[0].path, Message: "cannot ask the agent whether the VM exists: " + err.Error()}}
	}
	defer c.Close()
	sc, err := sourcesClient(c)
	if err != nil {
		return manifest.Problems{{Path: items[0].path, Message: err.Error()}}
	}
	var probs manifest.Problems
	for _, it := range items {
		es, err := sc.BrowseSource(ctx, it.load.Source, it.load.VM, a.interactive())
		switch {
		case err != nil:
			probs = append(probs, manifest.Problem{Path: it.path, Message: err.Error()})
		case len(es) != 1 || es[0].Kind != "vm":
			probs = append(probs, manifest.Problem{Path: it.path, Message: fmt.Sprintf("%s in source %s is a folder, not a VM", it.load.VM, it.load.Source)})
		}
	}
	return probs
}

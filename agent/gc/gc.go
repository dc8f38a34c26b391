// Package gc is the housekeeping of files: what retention (agent.yaml's
// retain section) lets go from processed/ and failed/ (settled manifests,
// their reports, dropped images) and, only when retain.outputs says so,
// from the output directory. Plan lists, Remove deletes and reports each
// deletion; a dry run is Plan alone. Nothing outside those directories
// is ever looked at, and a manifest's own output_dir never. The agent
// runs it at start (the periodic sweep comes with the River job store);
// `hyperctl gc [--dry-run]` asks the agent (docs/WORKFLOW.md).
package gc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
)

// Retain is agent.yaml's retain section, as written.
type Retain struct {
	// Processed is how long settled files stay in processed/ and failed/
	// ("30d", "12h", "never"); default 30d.
	Processed string `yaml:"processed"`
	// DroppedImages: "keep" (default) or "delete-on-success": a disk image
	// dropped into the queue is removed from processed/ once its job
	// completed (its report stays until Processed).
	DroppedImages string `yaml:"dropped_images"`
	// Outputs is how long converted outputs stay in the agent's output
	// directory: "never" (default: they are never removed) or an age.
	Outputs string `yaml:"outputs"`
}

// Default values of Retain.
const (
	DefaultProcessed = "30d"
	KeepImages       = "keep"
	DeleteOnSuccess  = "delete-on-success"
	Never            = "never"
)

// Policy is Retain parsed; a zero duration keeps for ever.
type Policy struct {
	Processed       time.Duration
	DeleteDropped   bool
	Outputs         time.Duration
	ProcessedString string
	OutputsString   string
}

// Policy parses r, naming the key of a bad value.
func (r Retain) Policy() (Policy, error) {
	var p Policy
	var errs []error
	proc := r.Processed
	if proc == "" {
		proc = DefaultProcessed
	}
	d, err := ParseAge(proc)
	if err != nil {
		errs = append(errs, fmt.Errorf("retain.processed: %w", err))
	}
	p.Processed, p.ProcessedString = d, proc
	switch r.DroppedImages {
	case "", KeepImages:
	case DeleteOnSuccess:
		p.DeleteDropped = true
	default:
		errs = append(errs, fmt.Errorf("retain.dropped_images: must be %s or %s, not %q", KeepImages, DeleteOnSuccess, r.DroppedImages))
	}
	out := r.Outputs
	if out == "" {
		out = Never
	}
	d, err = ParseAge(out)
	if err != nil {
		errs = append(errs, fmt.Errorf("retain.outputs: %w", err))
	}
	p.Outputs, p.OutputsString = d, out
	return p, errors.Join(errs...)
}

// ParseAge reads "30d", "2w", a Go duration ("36h") or "never" (0).
func ParseAge(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == Never {
		return 0, nil
	}
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			v, err := strconv.Atoi(n)
			if err != nil || v < 1 {
				return 0, fmt.Errorf("cannot parse %q: want a number of days like 30d, a duration like 36h, or never", s)
			}
			return time.Duration(v) * unit, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Hour {
		return 0, fmt.Errorf("cannot parse %q: want a number of days like 30d, a duration of at least 1h, or never", s)
	}
	return d, nil
}

// Dirs are the directories housekeeping works in.
type Dirs struct {
	Workflow string // manifest-workflow: its processed/ and failed/
	Output   string // the agent's output_dir: <date>/<job id>/
}

// Plan lists what p lets go at now, oldest first. A day directory's age
// is its name (the day its files settled or its jobs ran), not a file's
// mtime, which a move keeps.
func Plan(d Dirs, p Policy, now time.Time) ([]apitype.GCItem, error) {
	var out []apitype.GCItem
	for _, top := range []string{queue.Processed, queue.Failed} {
		root := filepath.Join(d.Workflow, top)
		days, err := readDays(root)
		if err != nil {
			return nil, err
		}
		for _, day := range days {
			dir := filepath.Join(root, day.name)
			old := p.Processed > 0 && now.Sub(day.t.Add(24*time.Hour)) >= p.Processed
			ents, err := os.ReadDir(dir)
			if err != nil {
				return nil, fmt.Errorf("cannot read %s: %w", dir, err)
			}
			left := len(ents)
			for _, e := range ents {
				path := filepath.Join(dir, e.Name())
				switch {
				case old:
					out = append(out, item(path, "settled-file", fmt.Sprintf("settled on %s, older than retain.processed %s", day.name, p.ProcessedString)))
					left--
				case p.DeleteDropped && top == queue.Processed && droppedImageDone(dir, e):
					out = append(out, item(path, "dropped-image", "its job completed (retain.dropped_images: delete-on-success)"))
				}
			}
			// Only an old day: today's may be empty for a moment between
			// the settle making it and moving a file into it.
			if left == 0 && old {
				out = append(out, item(dir, "empty-day", "nothing left in it"))
			}
		}
	}
	if p.Outputs > 0 && d.Output != "" {
		days, err := readDays(d.Output)
		if err != nil {
			return nil, err
		}
		for _, day := range days {
			if now.Sub(day.t.Add(24*time.Hour)) < p.Outputs {
				continue
			}
			dir := filepath.Join(d.Output, day.name)
			ents, err := os.ReadDir(dir)
			if err != nil {
				return nil, fmt.Errorf("cannot read %s: %w", dir, err)
			}
			for _, e := range ents {
				if e.IsDir() {
					out = append(out, item(filepath.Join(dir, e.Name()), "output-dir", fmt.Sprintf("converted on %s, older than retain.outputs %s", day.name, p.OutputsString)))
				}
			}
			out = append(out, item(dir, "empty-day", "its outputs are removed"))
		}
	}
	return out, nil
}

type day struct {
	name string
	t    time.Time
}

// readDays lists the YYYY-MM-DD directories of root, oldest first; a
// missing root has none.
func readDays(root string) ([]day, error) {
	ents, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", root, err)
	}
	var out []day
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		t, err := time.ParseInLocation(queue.DateLayout, e.Name(), time.Local)
		if err != nil {
			continue
		}
		out = append(out, day{e.Name(), t})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// droppedImageDone says e is a dropped image whose settlement beside it
// says its job completed.
func droppedImageDone(dir string, e fs.DirEntry) bool {
	if !e.Type().IsRegular() {
		return false
	}
	if k, ok := queue.KindOf(e.Name()); !ok || k != queue.Image {
		return false
	}
	data, err := os.ReadFile(filepath.Join(dir, e.Name()+queue.ReportSuffix))
	if err != nil {
		return false
	}
	var s struct {
		Status string `json:"status"`
	}
	return json.Unmarshal(data, &s) == nil && s.Status == "completed"
}

func item(path, kind, reason string) apitype.GCItem {
	return apitype.GCItem{Path: path, Kind: kind, Reason: reason, Size: sizeOf(path)}
}

func sizeOf(path string) int64 {
	var n int64
	filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// Remove deletes the items in order (a day directory only once empty),
// calling logf for each deletion and each failure, and returns them
// marked.
func Remove(items []apitype.GCItem, logf func(it apitype.GCItem)) []apitype.GCItem {
	out := make([]apitype.GCItem, len(items))
	for i, it := range items {
		var err error
		switch it.Kind {
		case "empty-day":
			err = os.Remove(it.Path) // fails, as it should, when something was added meanwhile
		case "output-dir":
			err = os.RemoveAll(it.Path)
		default:
			err = os.RemoveAll(it.Path)
		}
		if err != nil {
			it.Error = err.Error()
		} else {
			it.Deleted = true
		}
		out[i] = it
		if logf != nil {
			logf(it)
		}
	}
	return out
}

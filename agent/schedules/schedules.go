// Package schedules reads the admin's recurring work:
// /etc/hyper2kvm/schedules.d/*.yaml, each naming a manifest (an absolute
// path) or a template with its --set values, and a cron expression. The
// agent turns each into a River periodic job whose firing submits the
// manifest as an ordinary job (docs/WORKFLOW.md "Schedules"). The package
// only parses and validates; it imports no agent code.
package schedules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"
)

// Dir is where the admin keeps schedules.
const Dir = "/etc/hyper2kvm/schedules.d"

// maxFile bounds a schedule file: it is a few lines.
const maxFile = 64 << 10

// parser reads the standard five fields (minute hour day month weekday)
// and the @daily/@hourly/@every descriptors, as crontab(5) does.
var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Schedule is one file of schedules.d.
type Schedule struct {
	Name     string            `yaml:"-"` // the file's name without .yaml
	File     string            `yaml:"-"`
	Cron     string            `yaml:"cron"`
	Manifest string            `yaml:"manifest"`
	Template string            `yaml:"template"`
	Set      map[string]string `yaml:"set"`

	sched cron.Schedule
}

// Next is the first firing strictly after t.
func (s *Schedule) Next(t time.Time) time.Time { return s.sched.Next(t) }

// Parse reads one schedule; a problem names the file and the field.
func Parse(file string, data []byte) (*Schedule, error) {
	s := &Schedule{File: file, Name: strings.TrimSuffix(strings.TrimSuffix(filepath.Base(file), ".yaml"), ".yml")}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(s); err != nil {
		return nil, fmt.Errorf("%s: %v (fields: cron, manifest or template with set)", file, err)
	}
	if strings.TrimSpace(s.Cron) == "" {
		return nil, fmt.Errorf(`%s: cron: required, a cron expression such as "0 2 * * *" (minute hour day month weekday) or "@daily"`, file)
	}
	sched, err := parser.Parse(s.Cron)
	if err != nil {
		return nil, fmt.Errorf("%s: cron: %q: %v (five fields: minute hour day month weekday, or @daily, @hourly, @every 1h)", file, s.Cron, err)
	}
	s.sched = sched
	switch {
	case s.Manifest == "" && s.Template == "":
		return nil, fmt.Errorf("%s: manifest or template: one is required (manifest: an absolute path; template: a name from hyperctl template list)", file)
	case s.Manifest != "" && s.Template != "":
		return nil, fmt.Errorf("%s: manifest and template: give one, not both", file)
	case s.Manifest != "" && !filepath.IsAbs(s.Manifest):
		return nil, fmt.Errorf("%s: manifest: %q must be an absolute path", file, s.Manifest)
	case s.Manifest != "" && len(s.Set) > 0:
		return nil, fmt.Errorf("%s: set: only with template", file)
	}
	return s, nil
}

// Load reads every *.yaml and *.yml of dir, in name order. A directory
// that does not exist holds no schedules. Files that do not parse are
// returned as errors beside the good ones, so that one bad file does not
// stop the others.
func Load(dir string) ([]*Schedule, []error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, []error{fmt.Errorf("cannot read schedules: %w", err)}
	}
	var out []*Schedule
	var errs []error
	names := map[string]string{}
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() || strings.HasPrefix(n, ".") || !(strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
			continue
		}
		p := filepath.Join(dir, n)
		data, err := readBounded(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s, err := Parse(p, data)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if other, dup := names[s.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: name %q is also %s: rename one", p, s.Name, other))
			continue
		}
		names[s.Name] = p
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, errs
}

func readBounded(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("cannot read schedule: %w", err)
	}
	defer f.Close()
	var b bytes.Buffer
	if n, err := b.ReadFrom(io.LimitReader(f, maxFile+1)); err != nil {
		return nil, fmt.Errorf("cannot read schedule %s: %w", p, err)
	} else if n > maxFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", p, maxFile)
	}
	return b.Bytes(), nil
}

// Owed is the firing of s a run at now owes when the last firing was at
// last: the latest firing in (last, now], zero when none. A zero last
// owes nothing (a new schedule first fires at its next time). Firings
// missed while no agent ran collapse into one.
func (s *Schedule) Owed(last, now time.Time) time.Time {
	if last.IsZero() {
		return time.Time{}
	}
	var owed time.Time
	for t := s.Next(last); !t.After(now); t = s.Next(t) {
		owed = t
		if t.IsZero() {
			break
		}
	}
	return owed
}

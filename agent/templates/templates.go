// Package templates is the manifest templates library: partial manifests
// with documented parameters, shipped in /usr/share/hyper2kvm/templates/
// and written by the admin in /etc/hyper2kvm/templates/ (same name: the
// admin's wins). hyperctl, the REST bridge and the agent all read it from
// disk; applying a template is filling its parameters (--set) and
// validating the result as any manifest. It imports only agent/manifest,
// so the clients may link it (docs/WORKFLOW.md).
package templates

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

// Directories read by Default, in order: a template in a later one
// replaces one of the same name in an earlier one.
const (
	SharedDir      = "/usr/share/hyper2kvm/templates"
	LocalSharedDir = "/usr/local/share/hyper2kvm/templates" // make install's default PREFIX
	AdminDir       = "/etc/hyper2kvm/templates"
)

// MaxFile is the largest template file read; a template is a few lines.
const MaxFile = 64 << 10

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Library is a set of template directories, later ones overriding
// earlier ones by name.
type Library struct {
	Dirs []string
}

// Default is the library every front end reads.
func Default() Library {
	return Library{Dirs: []string{SharedDir, LocalSharedDir, AdminDir}}
}

// Parameter is one value a template expects from its user.
type Parameter struct {
	// Name is the manifest field it fills, as --set takes it:
	// "load.source_path" (pipeline. may be left out), "name", "priority".
	Name        string `json:"name" yaml:"name"`
	Description string `json:"description" yaml:"description"`
	Required    bool   `json:"required,omitempty" yaml:"required"`
	// Example is a value that makes the template valid; the library's
	// own check applies the examples of the required parameters.
	Example string `json:"example,omitempty" yaml:"example"`
}

// Template is one file of the library.
type Template struct {
	Name        string      `json:"name"`
	Path        string      `json:"path"`
	Description string      `json:"description"`
	Parameters  []Parameter `json:"parameters"`
	// Manifest is the partial manifest as written (JSON-shaped).
	Manifest map[string]any `json:"manifest"`
	// NeedsBackend is a fix backend the template uses that this build
	// may not have yet (e.g. virt-v2v): while manifest.Backends() lacks
	// it the template is Unavailable rather than invalid.
	NeedsBackend string `json:"needs_backend,omitempty"`
	// Problems is why the template does not validate (with its required
	// parameters at their examples), field by field; empty when it does.
	Problems []manifest.Problem `json:"problems,omitempty"`
	// Unavailable says why the template cannot be used by this build.
	Unavailable string `json:"unavailable,omitempty"`
}

// Valid says whether the template can be used.
func (t *Template) Valid() bool { return len(t.Problems) == 0 && t.Unavailable == "" }

// file is the on-disk shape.
type file struct {
	Description  string         `yaml:"description"`
	Parameters   []Parameter    `yaml:"parameters"`
	NeedsBackend string         `yaml:"needs_backend"`
	Manifest     map[string]any `yaml:"manifest"`
}

// ErrNotFound is returned by Get for a name no directory has.
var ErrNotFound = errors.New("no such template")

// List reads every template, sorted by name. A file that cannot be read
// or parsed is still listed, with the problem; a directory that does not
// exist is skipped.
func (l Library) List() ([]*Template, error) {
	byName := map[string]*Template{}
	for _, dir := range l.Dirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("cannot read template directory %s: %w", dir, err)
		}
		for _, e := range ents {
			name, ok := templateName(e.Name())
			if !ok || e.IsDir() {
				continue
			}
			byName[name] = Load(filepath.Join(dir, e.Name()))
		}
	}
	out := make([]*Template, 0, len(byName))
	for _, t := range byName {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Get reads the template called name (the last directory having it).
func (l Library) Get(name string) (*Template, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("cannot read template %q: a template name is 1 to 64 letters, digits, '.', '_' or '-'", name)
	}
	for i := len(l.Dirs) - 1; i >= 0; i-- {
		for _, ext := range []string{".yaml", ".yml", ".json"} {
			p := filepath.Join(l.Dirs[i], name+ext)
			if _, err := os.Lstat(p); err == nil {
				return Load(p), nil
			}
		}
	}
	return nil, fmt.Errorf("template %q: %w (see hyperctl template list)", name, ErrNotFound)
}

func templateName(file string) (string, bool) {
	for _, ext := range []string{".yaml", ".yml", ".json"} {
		if name, ok := strings.CutSuffix(file, ext); ok && nameRE.MatchString(name) {
			return name, true
		}
	}
	return "", false
}

// Load reads one template file and checks it; problems reading or
// checking it are in the result, never an error.
func Load(path string) *Template {
	name, _ := templateName(filepath.Base(path))
	t := &Template{Name: name, Path: path, Parameters: []Parameter{}}
	data, err := readBounded(path)
	if err != nil {
		t.Problems = []manifest.Problem{{Message: err.Error()}}
		return t
	}
	var f file
	if err := yaml.Unmarshal(data, &f); err != nil {
		t.Problems = []manifest.Problem{{Message: fmt.Sprintf("cannot parse %s: %v", path, err)}}
		return t
	}
	t.Description, t.NeedsBackend, t.Manifest = f.Description, f.NeedsBackend, f.Manifest
	if f.Parameters != nil {
		t.Parameters = f.Parameters
	}
	if t.Manifest == nil {
		t.Problems = []manifest.Problem{{Path: "manifest", Message: "is required: the partial manifest the template fills in"}}
		return t
	}
	if t.NeedsBackend != "" && !slices.Contains(manifest.Backends(), t.NeedsBackend) {
		t.Unavailable = fmt.Sprintf("needs the fix backend %q, which this build does not have (it has %s)", t.NeedsBackend, strings.Join(manifest.Backends(), ", "))
		return t
	}
	set := map[string]string{}
	for i, p := range t.Parameters {
		if _, err := fieldType(p.Name); err != nil {
			t.Problems = append(t.Problems, manifest.Problem{Path: fmt.Sprintf("parameters[%d].name", i), Message: err.Error()})
			continue
		}
		if p.Required {
			if p.Example == "" {
				t.Problems = append(t.Problems, manifest.Problem{Path: fmt.Sprintf("parameters[%d].example", i), Message: "a required parameter needs an example (the check fills it in)"})
				continue
			}
			set[p.Name] = p.Example
		}
	}
	if len(t.Problems) > 0 {
		return t
	}
	if _, err := t.apply(set); err != nil {
		var ps manifest.Problems
		if errors.As(err, &ps) {
			t.Problems = ps
		} else {
			t.Problems = []manifest.Problem{{Message: err.Error()}}
		}
	}
	return t
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read template: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFile+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read template %s: %w", path, err)
	}
	if len(data) > MaxFile {
		return nil, fmt.Errorf("cannot read template %s: larger than %d bytes", path, MaxFile)
	}
	return data, nil
}

// ParseSet splits "key=value" as --set takes it.
func ParseSet(kv string) (string, string, error) {
	k, v, ok := strings.Cut(kv, "=")
	if !ok || strings.TrimSpace(k) == "" {
		return "", "", fmt.Errorf("--set %q: write KEY=VALUE, e.g. load.source_path=/srv/import/web01.vmdk", kv)
	}
	return strings.TrimSpace(k), v, nil
}

// Apply fills the template with set (field path -> value as text) and
// returns the manifest as JSON, validated: the problems (manifest.Problems)
// name the fields, and a required parameter left out is named with the
// --set that would give it.
func (t *Template) Apply(set map[string]string) ([]byte, error) {
	if t.Unavailable != "" {
		return nil, fmt.Errorf("template %s: %s", t.Name, t.Unavailable)
	}
	given := map[string]bool{}
	for k := range set {
		if _, err := fieldType(k); err != nil {
			return nil, fmt.Errorf("--set %w", err)
		}
		given[canonical(k)] = true
	}
	var missing manifest.Problems
	for _, p := range t.Parameters {
		if !given[canonical(p.Name)] && p.Required {
			missing = append(missing, manifest.Problem{Path: canonical(p.Name), Message: fmt.Sprintf("is required by template %s: add --set %s=... (%s)", t.Name, p.Name, p.Description)})
		}
	}
	if len(missing) > 0 {
		return nil, missing
	}
	return t.apply(set)
}

func (t *Template) apply(set map[string]string) ([]byte, error) {
	tree, err := deepCopy(t.Manifest)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", t.Name, err)
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := setPath(tree, k, set[k]); err != nil {
			return nil, err
		}
	}
	if _, ok := tree["version"]; !ok {
		tree["version"] = manifest.Version
	}
	data, err := json.Marshal(tree)
	if err != nil {
		return nil, fmt.Errorf("template %s: cannot encode the manifest: %w", t.Name, err)
	}
	m, err := manifest.Parse(data)
	if err != nil {
		return nil, err
	}
	if m.Batch {
		return nil, manifest.Problems{{Path: "batch", Message: "a template makes one VM's manifest; write a batch by hand"}}
	}
	return json.MarshalIndent(tree, "", "  ")
}

// deepCopy copies a JSON-shaped tree through JSON, which also turns
// YAML's map[string]any-with-any-keys into plain JSON objects.
func deepCopy(m map[string]any) (map[string]any, error) {
	data, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("cannot read the partial manifest: %w", err)
	}
	var out map[string]any
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("cannot read the partial manifest: %w", err)
	}
	return out, nil
}

// canonical is key with the pipeline. prefix a short form leaves out:
// "load.source_path" is "pipeline.load.source_path", "name" stays.
func canonical(key string) string {
	first, _, _ := strings.Cut(key, ".")
	t := reflect.TypeFor[manifest.Manifest]()
	for i := range t.NumField() {
		if n, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); n == first {
			return key
		}
	}
	return "pipeline." + key
}

// fieldType is the Go type of the manifest field key names (a short or
// full path), refusing what one --set cannot give: objects, lists of
// objects, batch fields.
func fieldType(key string) (reflect.Type, error) {
	full := canonical(key)
	t := reflect.TypeFor[manifest.Manifest]()
	for _, part := range strings.Split(full, ".") {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return nil, fmt.Errorf("%s: %s is not a section", key, part)
		}
		var found *reflect.StructField
		for i := range t.NumField() {
			f := t.Field(i)
			if n, _, _ := strings.Cut(f.Tag.Get("json"), ","); n == part {
				found = &f
				break
			}
		}
		if found == nil {
			return nil, fmt.Errorf("%s: no such manifest field (see docs/MANIFEST.md)", key)
		}
		t = found.Type
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String, reflect.Int, reflect.Bool:
		return t, nil
	case reflect.Slice:
		if t.Elem().Kind() == reflect.String {
			return t, nil
		}
	}
	return nil, fmt.Errorf("%s: is a section or a list of sections, not a value one --set can give", key)
}

// setPath sets key (short or full path) in tree to value, typed as the
// manifest's field is: a number for an integer field, true/false for a
// flag, a comma-separated list for a list of paths.
func setPath(tree map[string]any, key, value string) error {
	t, err := fieldType(key)
	if err != nil {
		return fmt.Errorf("--set %s", err)
	}
	var v any
	switch t.Kind() {
	case reflect.Int:
		n, err := strconv.Atoi(strings.TrimSpace(value))
		if err != nil {
			return fmt.Errorf("--set %s=%q: must be a whole number", key, value)
		}
		v = n
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(value))
		if err != nil {
			return fmt.Errorf("--set %s=%q: must be true or false", key, value)
		}
		v = b
	case reflect.Slice:
		var list []any
		for _, s := range strings.Split(value, ",") {
			if s = strings.TrimSpace(s); s != "" {
				list = append(list, s)
			}
		}
		v = list
	default:
		v = value
	}
	parts := strings.Split(canonical(key), ".")
	node := tree
	for i, p := range parts[:len(parts)-1] {
		next, ok := node[p].(map[string]any)
		if !ok {
			if node[p] != nil {
				return fmt.Errorf("--set %s: %s is not a section in the template", key, strings.Join(parts[:i+1], "."))
			}
			next = map[string]any{}
			node[p] = next
		}
		node = next
	}
	node[parts[len(parts)-1]] = v
	return nil
}

// Check lists the templates that cannot be used, one line each naming
// the file and the field, for the agent's start and `hyperctl template
// list`.
func (l Library) Check() ([]string, error) {
	ts, err := l.List()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, t := range ts {
		for _, p := range t.Problems {
			out = append(out, fmt.Sprintf("template %s (%s) does not validate: %s", t.Name, t.Path, p))
		}
	}
	return out, nil
}

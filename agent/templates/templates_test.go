package templates_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/templates"
)

// shipped is the library as the package installs it.
func shipped() templates.Library {
	return templates.Library{Dirs: []string{"../../packaging/templates"}}
}

func TestShippedTemplatesValidate(t *testing.T) {
	ts, err := shipped().List()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"compress-for-archive", "linux-default", "quick-no-fix", "rhel-lvm", "windows-v2v"}
	var names []string
	for _, tp := range ts {
		names = append(names, tp.Name)
		if len(tp.Problems) > 0 {
			t.Errorf("%s: %v", tp.Name, tp.Problems)
		}
		if tp.Description == "" {
			t.Errorf("%s: no description", tp.Name)
		}
		for _, p := range tp.Parameters {
			if p.Description == "" {
				t.Errorf("%s: parameter %s undocumented", tp.Name, p.Name)
			}
		}
	}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("templates %v, want %v", names, want)
	}
}

func TestWindowsTemplateWaitsForItsBackend(t *testing.T) {
	tp, err := shipped().Get("windows-v2v")
	if err != nil {
		t.Fatal(err)
	}
	has := false
	for _, b := range manifest.Backends() {
		has = has || b == "virt-v2v"
	}
	if has == (tp.Unavailable != "") {
		t.Fatalf("virt-v2v in this build: %v, template unavailable: %q", has, tp.Unavailable)
	}
	if !has && !strings.Contains(tp.Unavailable, "virt-v2v") {
		t.Errorf("unavailable reason %q does not name the backend", tp.Unavailable)
	}
}

func TestApply(t *testing.T) {
	tp, err := shipped().Get("compress-for-archive")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		set  map[string]string
		want map[string]any // dotted path -> value in the result
		err  string
	}{
		{"minimal", map[string]string{"load.source_path": "/srv/a/web01.vmdk"},
			map[string]any{"pipeline.load.source_path": "/srv/a/web01.vmdk", "pipeline.convert.compress": true, "priority": float64(-50)}, ""},
		{"full paths and types", map[string]string{"pipeline.load.source_path": "/srv/a/b.vhdx", "load.source_type": "vhdx", "name": "007", "priority": "5", "validate.boot_test": "true", "load.allow_references": "/srv/x.vmdk, /srv/y.vmdk"},
			map[string]any{"name": "007", "priority": float64(5), "pipeline.validate.boot_test": true, "pipeline.load.source_type": "vhdx"}, ""},
		{"required left out", map[string]string{"name": "web01"}, nil, "pipeline.load.source_path: is required by template compress-for-archive: add --set load.source_path="},
		{"unknown field", map[string]string{"load.source_path": "/srv/a.vmdk", "load.sauce": "x"}, nil, "load.sauce: no such manifest field"},
		{"section", map[string]string{"load.source_path": "/srv/a.vmdk", "fix": "x"}, nil, "is a section"},
		{"bad number", map[string]string{"load.source_path": "/srv/a.vmdk", "priority": "high"}, nil, "must be a whole number"},
		{"invalid value names the field", map[string]string{"load.source_path": "relative.vmdk"}, nil, "pipeline.load.source_path"},
		{"bad enum", map[string]string{"load.source_path": "/srv/a.vmdk", "convert.output_format": "vmdk"}, nil, "pipeline.convert.output_format"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, err := tp.Apply(tc.set)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want it to contain %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := manifest.Parse(data); err != nil {
				t.Fatalf("result does not parse: %v\n%s", err, data)
			}
			var tree map[string]any
			json.Unmarshal(data, &tree)
			for path, want := range tc.want {
				var v any = tree
				for _, p := range strings.Split(path, ".") {
					v = v.(map[string]any)[p]
				}
				if v != want {
					t.Errorf("%s = %#v, want %#v", path, v, want)
				}
			}
		})
	}
}

func write(t *testing.T, dir, name, text string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestAdminTemplatesAndProblems(t *testing.T) {
	shared, admin := t.TempDir(), t.TempDir()
	lib := templates.Library{Dirs: []string{shared, admin}}
	write(t, shared, "site.yaml", "description: shipped\nmanifest:\n  pipeline:\n    load: {source_type: vmdk}\nparameters:\n  - {name: load.source_path, description: src, required: true, example: /a/b.vmdk}\n")
	write(t, admin, "site.yaml", "description: the admin's\nmanifest:\n  pipeline:\n    load: {source_type: vhdx}\nparameters:\n  - {name: load.source_path, description: src, required: true, example: /a/b.vhdx}\n")
	// A field renamed since the template was written: named in the problem.
	write(t, admin, "stale.yaml", "description: old\nmanifest:\n  pipeline:\n    load: {source_type: vmdk}\n    fix: {fstab: {mode: stabilise-all}}\nparameters:\n  - {name: load.source_path, description: src, required: true, example: /a/b.vmdk}\n")
	write(t, admin, "broken.yaml", "description: [unclosed\n")
	write(t, admin, "noexample.yaml", "description: x\nmanifest: {pipeline: {load: {source_type: vmdk}}}\nparameters:\n  - {name: load.source_path, description: src, required: true}\n")
	write(t, admin, "README", "not a template")

	ts, err := lib.List()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*templates.Template{}
	for _, tp := range ts {
		got[tp.Name] = tp
	}
	if len(got) != 4 {
		t.Fatalf("templates %v, want broken, noexample, site, stale", got)
	}
	if got["site"].Description != "the admin's" || !got["site"].Valid() {
		t.Errorf("site: %+v, want the admin's, valid", got["site"])
	}
	tests := []struct{ name, want string }{
		{"stale", "pipeline.fix.fstab.mode: unknown value"},
		{"broken", "cannot parse"},
		{"noexample", "parameters[0].example"},
	}
	lines, err := lib.Check()
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(lines, "\n")
	for _, tc := range tests {
		if got[tc.name].Valid() {
			t.Errorf("%s valid, want a problem", tc.name)
		}
		if !strings.Contains(all, "template "+tc.name+" (") || !strings.Contains(all, tc.want) {
			t.Errorf("Check() = %s\nwant a line for %s with %q", all, tc.name, tc.want)
		}
	}
	if _, err := lib.Get("nope"); !errors.Is(err, templates.ErrNotFound) {
		t.Errorf("Get(nope) = %v, want ErrNotFound", err)
	}
	if _, err := lib.Get("../etc/passwd"); err == nil {
		t.Error("Get(../etc/passwd) succeeded")
	}
}

func TestParseSet(t *testing.T) {
	for _, tc := range []struct {
		in, k, v string
		ok       bool
	}{
		{"name=web01", "name", "web01", true},
		{"load.source_path=/a=b", "load.source_path", "/a=b", true},
		{"name", "", "", false},
		{"=x", "", "", false},
	} {
		k, v, err := templates.ParseSet(tc.in)
		if (err == nil) != tc.ok || k != tc.k || v != tc.v {
			t.Errorf("ParseSet(%q) = %q, %q, %v", tc.in, k, v, err)
		}
	}
}

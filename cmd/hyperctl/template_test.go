package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/templates"
)

func TestTemplateVerbs(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		code     int
		out, err string // substrings
	}{
		{"list", []string{"template", "list"}, exitOK, "linux-default", ""},
		{"list the windows template once its backend exists", []string{"template", "list"}, exitOK, "windows-v2v           ok", ""},
		{"show", []string{"template", "show", "rhel-lvm"}, exitOK, "load.source_path", ""},
		{"show json", []string{"-o", "json", "template", "show", "quick-no-fix"}, exitOK, `"parameters"`, ""},
		{"show missing", []string{"template", "show", "nope"}, exitFailed, "", "no such template"},
		{"show bad name", []string{"template", "show", "../x"}, exitUsage, "", "template name"},
		{"submit without required", []string{"submit", "--template", "linux-default", "--set", "name=web01"}, exitFailed, "pipeline.load.source_path: is required by template linux-default", ""},
		{"submit bad set", []string{"submit", "--template", "linux-default", "--set", "load.sauce=x"}, exitUsage, "", "no such manifest field"},
		{"set without template", []string{"submit", "--set", "name=x", "f.json"}, exitUsage, "", "give --template NAME too"},
		{"file and template", []string{"submit", "--template", "linux-default", "f.json"}, exitUsage, "", "not both"},
		{"invalid value", []string{"submit", "--template", "linux-default", "--set", "load.source_path=rel.vmdk"}, exitFailed, "pipeline.load.source_path", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, &fakeClient{}, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stdout, tc.out) || !strings.Contains(r.stderr, tc.err) {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tc.code, r.stdout, r.stderr)
			}
		})
	}
}

func TestSubmitTemplateSendsTheFilledManifest(t *testing.T) {
	fake := &fakeClient{}
	r := runCLI(t, fake, "submit", "--template", "compress-for-archive", "--set", "load.source_path=/srv/import/web01.vmdk", "--set", "name=web01")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	if len(fake.submitted) != 1 {
		t.Fatalf("submitted %d manifests", len(fake.submitted))
	}
	m, err := manifest.Parse(fake.submitted[0])
	if err != nil {
		t.Fatalf("submitted manifest: %v", err)
	}
	if m.Name != "web01" || m.Pipeline.Load.SourcePath != "/srv/import/web01.vmdk" || !m.Pipeline.Convert.Compress || manifest.Bool(m.Pipeline.Fix.Enabled) {
		t.Errorf("submitted %s", fake.submitted[0])
	}
}

func TestTemplateListReportsAnInvalidTemplate(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "old.yaml", "description: old\nmanifest:\n  pipeline:\n    load: {source_type: vmdk}\n    convert: {output_fromat: qcow2}\nparameters:\n  - {name: load.source_path, description: src, required: true, example: /a/b.vmdk}\n")
	e, _, _ := testEnv(nil, nil)
	e.templates = templates.Library{Dirs: []string{"../../packaging/templates", dir}}
	r := runWith(t, e, "template", "list")
	if r.code != exitFailed || !strings.Contains(r.stderr, "template old (") || !strings.Contains(r.stderr, "pipeline.convert.output_fromat") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	e, _, _ = testEnv(nil, nil)
	e.templates = templates.Library{Dirs: []string{dir}}
	r = runWith(t, e, "-o", "json", "template", "list")
	var got templateListJSON
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got.Templates) != 1 || len(got.Templates[0].Problems) == 0 {
		t.Fatalf("json %s: %v", r.stdout, err)
	}
}

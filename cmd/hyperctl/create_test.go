package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

// answers joins scripted answers into stdin lines.
func answers(lines ...string) *strings.Reader {
	return strings.NewReader(strings.Join(lines, "\n") + "\n")
}

func parseFile(t *testing.T, path string) *manifest.Manifest {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("manifest not written: %v", err)
	}
	m, err := manifest.Parse(data)
	if err != nil {
		t.Fatalf("written manifest does not parse: %v\n%s", err, data)
	}
	return m
}

func TestCreateInteractiveWithBack(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "web01.yaml")
	in := answers(
		"/srv/vms/web 01.vmdk", // step 1: source path
		"",                     // source type: default (from the suffix)
		"back",                 // at the name: back to the source type...
		"back",                 // ...and back to the source path
		"/srv/vms/web01.vmdk",  // to change it
		"",                     // source type
		"",                     // name: default web01
		"no",                   // step 2: inspect? no (detect-os is then skipped)
		"back",                 // step 3's first question: back to step 2
		"yes",                  // inspect after all
		"",                     // detect os
		"",                     // step 3: fixes yes
		"bypath-only",          // fstab mode
		"",                     // initramfs
		"sideways",             // fix level: not allowed, asked again
		"full",                 // fix level
		"yes",                  // remove VMware tools
		"",                     // step 4: qcow2
		"yes",                  // compress
		"",                     // output path default
		"",                     // boot test no
		out,                    // save as
		"",                     // write? yes
	)
	e, _, _ := testEnv(in, nil)
	r := runWith(t, e, "manifest", "create")
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"Step 1/4: Source", "Step 2/4: Inspection", "Step 3/4: Fixes", "Step 4/4: Conversion",
		"[stabilize-all]", "[basic]", "[qcow2]", `"sideways" is not one of`, "Wrote " + out} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// Step 2's header comes again after "back" from step 3.
	if strings.Count(r.stdout, "Step 2/4: Inspection") != 2 {
		t.Errorf("going back into step 2 did not show its header again:\n%s", r.stdout)
	}
	m := parseFile(t, out)
	p := m.Pipeline
	if m.Name != "web01" || p.Load.SourcePath != "/srv/vms/web01.vmdk" || p.Load.SourceType != "vmdk" {
		t.Errorf("source step: %+v name %q", p.Load, m.Name)
	}
	if !manifest.Bool(p.Inspect.Enabled) || !manifest.Bool(p.Inspect.DetectOS) {
		t.Errorf("inspection: %+v", p.Inspect)
	}
	if p.Fix.Fstab.Mode != "bypath-only" || p.Fix.Network.FixLevel != "full" || !manifest.Bool(p.Fix.VMwareTools.Enabled) {
		t.Errorf("fixes: fstab %+v network %+v vmware %+v", p.Fix.Fstab, p.Fix.Network, p.Fix.VMwareTools)
	}
	if p.Convert.OutputFormat != "qcow2" || !p.Convert.Compress || p.Convert.OutputPath != "web01.qcow2" || p.Validate.BootTest {
		t.Errorf("conversion: %+v %+v", p.Convert, p.Validate)
	}
}

func TestCreateBackAtFirstQuestion(t *testing.T) {
	out := filepath.Join(t.TempDir(), "m.json")
	in := answers("back", "/a/b.raw", "", "", "", "", "no", "raw", "", "", out, "yes")
	e, _, _ := testEnv(in, nil)
	r := runWith(t, e, "manifest", "create")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "first question") {
		t.Errorf("no hint that there is nothing to go back to:\n%s", r.stdout)
	}
	m := parseFile(t, out)
	if m.Pipeline.Load.SourceType != "raw" || m.Name != "b" || manifest.Bool(m.Pipeline.Fix.Enabled) || m.Pipeline.Convert.OutputFormat != "raw" {
		t.Errorf("got %+v fix %+v convert %+v", m.Pipeline.Load, m.Pipeline.Fix, m.Pipeline.Convert)
	}
	data, _ := os.ReadFile(out)
	if !strings.HasPrefix(string(data), "{") {
		t.Errorf(".json file not written as JSON:\n%s", data)
	}
}

func TestCreateFromFlags(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "db01.yaml")
	r := runCLI(t, nil, "manifest", "create", "--yes",
		"--source-path", "/srv/db01.vhdx", "--name", "db01", "--fstab-mode", "noop", "--fix-level", "moderate",
		"--output-format", "qcow2", "--compress", "--boot-test", "--out", out)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout, "Step 1/4") {
		t.Errorf("--yes still asked:\n%s", r.stdout)
	}
	m := parseFile(t, out)
	p := m.Pipeline
	if m.Name != "db01" || p.Load.SourceType != "vhdx" || p.Fix.Fstab.Mode != "noop" || p.Fix.Network.FixLevel != "moderate" ||
		!p.Convert.Compress || !p.Validate.BootTest {
		t.Errorf("got name %q %+v %+v %+v %+v", m.Name, p.Load, p.Fix.Fstab, p.Convert, p.Validate)
	}

	// Flags given are not asked; the rest is.
	out2 := filepath.Join(dir, "x.yaml")
	e, _, _ := testEnv(answers("", "", "", "", "", "", "", "", "", "", "", ""), nil)
	r = runWith(t, e, "manifest", "create", "--source-path", "/srv/x.raw", "--name", "x", "--out", out2, "--inspect=false")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout, "Source image") || strings.Contains(r.stdout, "Inspect the guest") {
		t.Errorf("asked a question answered by a flag:\n%s", r.stdout)
	}
	if m := parseFile(t, out2); manifest.Bool(m.Pipeline.Inspect.Enabled) {
		t.Errorf("--inspect=false ignored")
	}
}

func TestCreateRefusals(t *testing.T) {
	dir := t.TempDir()
	existing := writeFile(t, dir, "old.yaml", "keep me")
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"existing file", []string{"--yes", "--source-path", "/a.vmdk", "--out", existing}, 2, "already exists"},
		{"no source with --yes", []string{"--yes", "--out", filepath.Join(dir, "n.yaml")}, 2, "--source-path"},
		{"bad enum flag", []string{"--yes", "--source-path", "/a.vmdk", "--fix-level", "max"}, 2, "--fix-level"},
		{"invalid name", []string{"--yes", "--source-path", "/a.vmdk", "--name", "-bad name", "--out", filepath.Join(dir, "b.yaml")}, 1, "name:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, nil, append([]string{"manifest", "create"}, tt.args...)...)
			if r.code != tt.code || !strings.Contains(r.stdout+r.stderr, tt.want) {
				t.Fatalf("exit %d (want %d), output lacks %q:\n%s%s", r.code, tt.code, tt.want, r.stdout, r.stderr)
			}
		})
	}
	if data, _ := os.ReadFile(existing); string(data) != "keep me" {
		t.Errorf("existing file changed: %q", data)
	}
	if _, err := os.Stat(filepath.Join(dir, "b.yaml")); err == nil {
		t.Errorf("an invalid manifest was written")
	}

	// Interactive: an existing file is refused and asked again; a bad name
	// found by validation sends the user back to the name question.
	out := filepath.Join(dir, "new.yaml")
	e, _, _ := testEnv(answers("/a.vmdk", "", "bad name!", "good", "", "", "", "", "", "", "", "", "", "", "", existing, out, "y"), nil)
	r := runWith(t, e, "manifest", "create")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "already exists") {
		t.Errorf("existing file not refused:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "is not a valid name") {
		t.Errorf("bad name not refused where it was typed:\n%s", r.stdout)
	}
	if m := parseFile(t, out); m.Name != "good" {
		t.Errorf("name %q, want good", m.Name)
	}
}

func TestCreateEndOfInputIsUsage(t *testing.T) {
	e, _, _ := testEnv(answers("/a.vmdk"), nil)
	r := runWith(t, e, "manifest", "create")
	if r.code != 2 || !strings.Contains(r.stderr, "end of input") {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
}

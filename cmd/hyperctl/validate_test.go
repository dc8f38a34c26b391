package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
)

const goodYAML = `version: "1.0"
name: web01
pipeline:
  load:
    source_type: vmdk
    source_path: /data/vms/web01/web01.vmdk
  convert:
    output_format: qcow2
    compress: true
`

const goodJSON = `{"version": "1.0", "name": "web01",
 "pipeline": {"load": {"source_type": "vmdk", "source_path": "/data/vms/web01/web01.vmdk"},
              "convert": {"output_format": "qcow2", "compress": true}}}`

const goodBatch = `version: "1.0"
batch: true
vms:
  - name: web01
    pipeline:
      load: {source_type: vmdk, source_path: /data/web01.vmdk}
  - name: db01
    pipeline:
      load: {source_type: vhdx, source_path: /data/db01.vhdx}
      convert: {output_format: raw}
`

func TestValidateFlagForms(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"yaml": writeFile(t, dir, "web01.yaml", goodYAML),
		"json": writeFile(t, dir, "web01.json", goodJSON),
	}
	forms := []struct {
		name string
		args func(f string) []string
	}{
		{"manifest validate -file F", func(f string) []string { return []string{"manifest", "validate", "-file", f} }},
		{"manifest validate --file F", func(f string) []string { return []string{"manifest", "validate", "--file", f} }},
		{"manifest validate -file=F", func(f string) []string { return []string{"manifest", "validate", "-file=" + f} }},
		{"manifest validate --file=F", func(f string) []string { return []string{"manifest", "validate", "--file=" + f} }},
		{"manifest validate -f F", func(f string) []string { return []string{"manifest", "validate", "-f", f} }},
		{"manifest validate F", func(f string) []string { return []string{"manifest", "validate", f} }},
		{"validate F", func(f string) []string { return []string{"validate", f} }},
		{"validate -file F", func(f string) []string { return []string{"validate", "-file", f} }},
		{"flag before verb", func(f string) []string { return []string{"manifest", "-o", "text", "validate", "-file", f} }},
	}
	for kind, f := range files {
		for _, form := range forms {
			t.Run(kind+"/"+form.name, func(t *testing.T) {
				r := runCLI(t, nil, form.args(f)...)
				if r.code != 0 {
					t.Fatalf("exit %d, want 0\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
				}
				for _, want := range []string{"valid:", f, "web01", "/data/vms/web01/web01.vmdk", "vmdk", "qcow2 (compressed)", "web01.qcow2"} {
					if !strings.Contains(r.stdout, want) {
						t.Errorf("summary lacks %q:\n%s", want, r.stdout)
					}
				}
			})
		}
	}
}

func TestValidateBatchSummary(t *testing.T) {
	f := writeFile(t, t.TempDir(), "batch.yaml", goodBatch)
	r := runCLI(t, nil, "validate", f)
	if r.code != 0 {
		t.Fatalf("exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"batch of 2 VMs", "web01", "/data/web01.vmdk", "db01", "/data/db01.vhdx", "vhdx", "db01.raw"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, r.stdout)
		}
	}
}

func TestValidateInvalidListsEveryProblem(t *testing.T) {
	tests := []struct {
		name      string
		file      string
		content   string
		wantPaths []string
	}{
		{"original messages", "a.json", `{"version":"1.0","name":"x","pipeline":{"load":{}}}`,
			[]string{"pipeline.load.source_type", "pipeline.load.source_path"}},
		{"several at once", "b.json", `{"version":"2.0","name":"web01","pipeline":{"load":{"source_type":"vmdkx","source_path":"rel/x.vmdk"},"fix":{"fstab":{"mode":"bad"}},"convert":{"ouput_format":"qcow2"}}}`,
			[]string{"version", "pipeline.load.source_type", "pipeline.load.source_path", "pipeline.fix.fstab.mode", "pipeline.convert.ouput_format"}},
		{"yaml batch", "c.yaml", "version: \"1.0\"\nbatch: true\nvms:\n  - name: a\n    pipeline: {load: {source_type: vmdk, source_path: /a.vmdk}}\n  - name: a\n    pipeline: {load: {source_type: raw, source_path: b.img}}\n",
			[]string{"vms[1].pipeline.load.source_path", "vms[1].name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := writeFile(t, t.TempDir(), tt.file, tt.content)
			r := runCLI(t, nil, "manifest", "validate", "-file", f)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stdout, "invalid:") {
				t.Errorf("no verdict:\n%s", r.stdout)
			}
			for _, p := range tt.wantPaths {
				if !strings.Contains(r.stdout, "  "+p+": ") {
					t.Errorf("problem for %s not listed:\n%s", p, r.stdout)
				}
			}
		})
	}
	// The original's wording is kept.
	f := writeFile(t, t.TempDir(), "m.json", `{"version":"1.0","name":"x","pipeline":{"load":{"source_path":"/a.vmdk"}}}`)
	if r := runCLI(t, nil, "validate", f); !strings.Contains(r.stdout, "pipeline.load.source_type") || !strings.Contains(r.stdout, "required") {
		t.Errorf("missing source_type not reported as required:\n%s", r.stdout)
	}
}

func TestValidateUnreadableIsExit2(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		path string
		want string
	}{
		{"missing file", filepath.Join(dir, "nope.yaml"), "cannot read manifest"},
		{"directory", dir, "cannot read manifest"},
		{"not json", writeFile(t, dir, "junk.json", "{not json: ["), "not a JSON or YAML manifest"},
		{"not yaml", writeFile(t, dir, "junk.yaml", "version: [1.0\n  name: : :\n\t- x"), "not a JSON or YAML manifest"},
		{"binary", writeFile(t, dir, "junk.bin", "\x00\x01\xff\xfeQFI\xfb"), "not a JSON or YAML manifest"},
		{"empty", writeFile(t, dir, "empty.yaml", ""), "not a JSON or YAML manifest"},
		{"scalar", writeFile(t, dir, "scalar.yaml", "just a string\n"), "not a JSON or YAML manifest"},
		{"200 MiB", sparseFile(t, dir, "huge.yaml", 200<<20), "huge.yaml: manifest is larger than the limit of 1048576 bytes (1 MiB)"},
		{"anchors", writeFile(t, dir, "anchors.yaml", "version: '1.0'\nname: a\npipeline: &p {load: {source_type: raw, source_path: /a}}\nx: *p\n"),
			"line 3: YAML anchors and aliases are not allowed in a manifest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, args := range [][]string{{"manifest", "validate", "-file", tt.path}, {"validate", tt.path}} {
				r := runCLI(t, nil, args...)
				if r.code != 2 {
					t.Fatalf("%v: exit %d, want 2\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
				}
				if !strings.Contains(r.stderr, tt.want) {
					t.Errorf("%v: stderr %q lacks %q", args, r.stderr, tt.want)
				}
			}
		})
	}
}

// sparseFile makes a file of size bytes that takes no space.
func sparseFile(t *testing.T, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidateNoFileIsUsage(t *testing.T) {
	for _, args := range [][]string{{"validate"}, {"manifest", "validate"}, {"validate", "a", "b"}, {"manifest", "validate", "-file"}} {
		if r := runCLI(t, nil, args...); r.code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", args, r.code, r.stderr)
		}
	}
}

func TestValidateCheckFiles(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed (packaging/deps.txt: qemu-utils)")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "web01.vmdk")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "vmdk", img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	if _, err := imgfmt.Detect(img); err != nil && strings.Contains(err.Error(), "not implemented") {
		t.Skip("agent/imgfmt.Detect is not implemented yet")
	}
	manifestFor := func(typ, path string) string {
		return writeFile(t, t.TempDir(), "m.yaml", "version: \"1.0\"\nname: web01\npipeline:\n  load:\n    source_type: "+typ+"\n    source_path: "+path+"\n")
	}
	tests := []struct {
		name     string
		file     string
		wantCode int
		want     string
	}{
		{"present and right type", manifestFor("vmdk", img), 0, "valid:"},
		{"missing source", manifestFor("vmdk", filepath.Join(dir, "gone.vmdk")), 1, "pipeline.load.source_path"},
		{"type does not match content", manifestFor("vhdx", img), 1, "pipeline.load.source_type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, nil, "manifest", "validate", "--check-files", "-file", tt.file)
			if r.code != tt.wantCode || !strings.Contains(r.stdout, tt.want) {
				t.Fatalf("exit %d (want %d), stdout lacks %q?\n%s%s", r.code, tt.wantCode, tt.want, r.stdout, r.stderr)
			}
			// Without --check-files the files are not looked at.
			if r := runCLI(t, nil, "validate", tt.file); r.code != 0 {
				t.Errorf("without --check-files: exit %d: %s", r.code, r.stdout)
			}
		})
	}
}

func TestValidateJSONOutput(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", goodYAML)
	bad := writeFile(t, dir, "bad.json", `{"version":"1.0","name":"x","pipeline":{"load":{"source_type":"nope","source_path":"/a"}}}`)

	r := runCLI(t, nil, "validate", "--output", "json", good)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, r.stdout)
	}
	keys := []string{}
	for k := range got {
		keys = append(keys, k)
	}
	for _, k := range []string{"file", "valid", "batch", "name", "vms", "errors"} {
		if _, ok := got[k]; !ok {
			t.Errorf("missing key %q in %v", k, keys)
		}
	}
	var res validateResult
	_ = json.Unmarshal([]byte(r.stdout), &res)
	want := []vmSummary{{Name: "web01", SourceType: "vmdk", SourcePath: "/data/vms/web01/web01.vmdk", OutputFormat: "qcow2", Compress: true, OutputPath: "web01.qcow2"}}
	if !res.Valid || !reflect.DeepEqual(res.VMs, want) || len(res.Errors) != 0 {
		t.Errorf("got %+v", res)
	}

	r = runCLI(t, nil, "validate", "-o", "json", bad)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1", r.code)
	}
	res = validateResult{}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, r.stdout)
	}
	if res.Valid || len(res.Errors) != 1 || res.Errors[0].Path != "pipeline.load.source_type" || res.Errors[0].Message == "" {
		t.Errorf("got %+v", res)
	}
}

func TestValidateStdin(t *testing.T) {
	e, _, _ := testEnv(strings.NewReader(goodJSON), nil)
	if r := runWith(t, e, "validate", "-"); r.code != 0 || !strings.Contains(r.stdout, "web01") {
		t.Fatalf("exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
}

func TestValidateNeedsNoAgent(t *testing.T) {
	// The test env has no bus; validate must not try to reach one.
	f := writeFile(t, t.TempDir(), "m.yaml", goodYAML)
	if r := runCLI(t, nil, "validate", f); r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	_ = os.Remove(f)
}

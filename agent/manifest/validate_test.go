package manifest_test

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

// doc is a manifest as generic JSON, edited by the table entries.
type doc = map[string]any

func singleDoc() doc {
	return doc{
		"version": "1.0",
		"name":    "web01",
		"pipeline": doc{
			"load": doc{"source_type": "vmdk", "source_path": "/data/vms/web01/web01.vmdk"},
		},
	}
}

func batchDoc() doc {
	vm := func(name string) doc {
		return doc{"name": name, "pipeline": doc{
			"load": doc{"source_type": "vmdk", "source_path": "/data/" + name + ".vmdk"},
		}}
	}
	return doc{"version": "1.0", "batch": true, "vms": []any{vm("web01"), vm("db01"), vm("app01")}}
}

// set puts val at a dotted path ("pipeline.load.source_type", "vms.2.name"),
// creating objects on the way; a nil val deletes the key.
func set(d doc, path string, val any) doc {
	parts := strings.Split(path, ".")
	var cur any = d
	for i, p := range parts {
		last := i == len(parts)-1
		switch c := cur.(type) {
		case doc:
			if last {
				if val == nil {
					delete(c, p)
				} else {
					c[p] = val
				}
				return d
			}
			if _, ok := c[p]; !ok {
				c[p] = doc{}
			}
			cur = c[p]
		case []any:
			n, _ := strconv.Atoi(p)
			if last {
				c[n] = val
				return d
			}
			cur = c[n]
		}
	}
	return d
}

type edit struct {
	path string
	val  any
}

type ruleCase struct {
	name  string
	base  func() doc
	edits []edit
	want  []string // each "path: message substring"; nil means valid
}

func runRules(t *testing.T, cases []ruleCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.base()
			for _, e := range tc.edits {
				set(d, e.path, e.val)
			}
			data, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			m, err := manifest.Parse(data)
			checkProblems(t, m, err, tc.want)
		})
	}
}

func checkProblems(t *testing.T, m *manifest.Manifest, err error, want []string) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("valid manifest refused:\n%v", err)
		}
		if m == nil {
			t.Fatal("no manifest returned")
		}
		return
	}
	var ps manifest.Problems
	if !errors.As(err, &ps) {
		t.Fatalf("want Problems %q, got %T %v", want, err, err)
	}
	if m != nil {
		t.Errorf("invalid manifest returned a manifest")
	}
	got := ps.Strings()
	if len(got) != len(want) {
		t.Errorf("got %d problems, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for _, w := range want {
		path, sub, _ := strings.Cut(w, ": ")
		found := false
		for _, p := range ps {
			if p.Path == path && strings.Contains(p.Message, sub) {
				found = true
			}
		}
		if !found {
			t.Errorf("no problem %q in:\n%s", w, strings.Join(got, "\n"))
		}
	}
}

func TestRequiredFields(t *testing.T) {
	runRules(t, []ruleCase{
		{"complete", singleDoc, nil, nil},
		{"no version", singleDoc, []edit{{"version", nil}}, []string{`version: is required ("1.0")`}},
		{"no name, taken from the source file", singleDoc, []edit{{"name", nil}}, nil},
		{"no name and no usable file name", singleDoc, []edit{{"name", nil}, {"pipeline.load.source_path", "/data/my vm.vmdk"}},
			[]string{"name: is required"}},
		{"no pipeline", singleDoc, []edit{{"pipeline", nil}}, []string{"pipeline: is required"}},
		{"no source type", singleDoc, []edit{{"pipeline.load.source_type", nil}},
			[]string{"pipeline.load.source_type: is required"}},
		{"empty source type", singleDoc, []edit{{"pipeline.load.source_type", ""}},
			[]string{"pipeline.load.source_type: is required"}},
		{"null source path", singleDoc, []edit{{"pipeline.load.source_path", nil}},
			[]string{"pipeline.load.source_path: is required"}},
		{"no load", singleDoc, []edit{{"pipeline.load", nil}},
			[]string{"pipeline.load.source_type: is required", "pipeline.load.source_path: is required"}},
		{"all at once", singleDoc, []edit{{"version", nil}, {"name", nil}, {"pipeline.load", doc{}}},
			[]string{"version: is required", "name: is required",
				"pipeline.load.source_type: is required", "pipeline.load.source_path: is required"}},
		{"batch vm name", batchDoc, []edit{{"vms.1.name", nil}}, []string{"vms[1].name: is required"}},
		{"batch vm source path", batchDoc, []edit{{"vms.2.pipeline.load.source_path", ""}},
			[]string{"vms[2].pipeline.load.source_path: is required"}},
		{"batch vm pipeline", batchDoc, []edit{{"vms.0.pipeline", nil}}, []string{"vms[0].pipeline: is required"}},
	})
}

// The original product's wording, which scripts may grep for, survives as
// "path: is required".
func TestRequiredWording(t *testing.T) {
	d := set(singleDoc(), "pipeline.load.source_type", nil)
	data, _ := json.Marshal(d)
	_, err := manifest.Parse(data)
	if err == nil || err.Error() != "pipeline.load.source_type: is required" {
		t.Fatalf("got %v", err)
	}
}

func TestWrongTypes(t *testing.T) {
	runRules(t, []ruleCase{
		{"version number is accepted as text", singleDoc, []edit{{"version", json.Number("1.0")}}, nil},
		{"name bool", singleDoc, []edit{{"name", true}}, []string{"name: must be text, not true"}},
		{"pipeline string", singleDoc, []edit{{"pipeline", "x"}}, []string{`pipeline: must be an object, not the text "x"`}},
		{"load list", singleDoc, []edit{{"pipeline.load", []any{}}}, []string{"pipeline.load: must be an object, not a list"}},
		{"priority text", singleDoc, []edit{{"priority", "5"}}, []string{`priority: must be a whole number, not the text "5" (write it without quotes)`}},
		{"priority fraction", singleDoc, []edit{{"priority", 1.5}}, []string{"priority: must be a whole number, not the number 1.5"}},
		{"enabled text", singleDoc, []edit{{"pipeline.inspect.enabled", "yes"}}, []string{`pipeline.inspect.enabled: must be true or false, not the text "yes"`}},
		{"compress number", singleDoc, []edit{{"pipeline.convert.compress", 1}}, []string{"pipeline.convert.compress: must be true or false, not the number 1"}},
		{"batch text", batchDoc, []edit{{"batch", "true"}}, []string{`batch: must be true or false`, `vms: is only allowed in a batch manifest`, "name: is required", "pipeline: is required"}},
		{"vms object", batchDoc, []edit{{"vms", doc{}}}, []string{"vms: must be a list, not an object"}},
		{"vm null", batchDoc, []edit{{"vms.1", nil}}, []string{"vms[1]: must be an object, not null"}},
		{"null is absent", singleDoc, []edit{{"pipeline.fix", nil}, {"priority", nil}}, nil},
		{"several", singleDoc, []edit{{"pipeline.validate.boot_timeout", "300"}, {"pipeline.fix.grub.enabled", 0}},
			[]string{"pipeline.validate.boot_timeout: must be a whole number", "pipeline.fix.grub.enabled: must be true or false"}},
	})
}

func TestEnums(t *testing.T) {
	cases := []ruleCase{
		{"ami", singleDoc, []edit{{"pipeline.load.source_type", "ami"}},
			[]string{`pipeline.load.source_type: "ami" is an AWS image id, not a disk image, and is out of scope`}},
		{"typo source type", singleDoc, []edit{{"pipeline.load.source_type", "vmdx"}},
			[]string{`pipeline.load.source_type: unknown value "vmdx"; allowed: vmdk, ova, ovf, vhd, vhdx, raw, qcow2, vsphere (did you mean "vmdk"?)`}},
		{"upper case", singleDoc, []edit{{"pipeline.load.source_type", "QCOW2"}},
			[]string{`pipeline.load.source_type: unknown value "QCOW2"; allowed: vmdk, ova, ovf, vhd, vhdx, raw, qcow2, vsphere (did you mean "qcow2"?)`}},
		{"fstab mode", singleDoc, []edit{{"pipeline.fix.fstab.mode", "stabilise-all"}},
			[]string{`pipeline.fix.fstab.mode: unknown value "stabilise-all"; allowed: stabilize-all, bypath-only, noop (did you mean "stabilize-all"?)`}},
		{"fix level", singleDoc, []edit{{"pipeline.fix.network.fix_level", "maximum"}},
			[]string{`pipeline.fix.network.fix_level: unknown value "maximum"; allowed: none, basic, moderate, full, aggressive`}},
		{"output vmdk", singleDoc, []edit{{"pipeline.convert.output_format", "vmdk"}},
			[]string{`pipeline.convert.output_format: "vmdk" is not an output format: the agent writes qcow2, raw or vdi`}},
		{"output vhd", singleDoc, []edit{{"pipeline.convert.output_format", "vhd"}},
			[]string{`pipeline.convert.output_format: unknown value "vhd"; allowed: qcow2, raw, vdi`}},
		{"compression", singleDoc, []edit{{"pipeline.convert.compress", true}, {"pipeline.convert.compression", "gzip"}},
			[]string{`pipeline.convert.compression: unknown value "gzip"; allowed: zstd, zlib`}},
		{"backend", singleDoc, []edit{{"pipeline.fix.backend", "libguestfs"}},
			[]string{`pipeline.fix.backend: unknown value "libguestfs"; allowed: auto, native, guestfs`}},
		{"compress raw", singleDoc, []edit{{"pipeline.convert.output_format", "raw"}, {"pipeline.convert.compress", true}},
			[]string{`pipeline.convert.compress: only qcow2 output can be compressed, and output_format is "raw"`}},
		{"preallocation", singleDoc, []edit{{"pipeline.convert.preallocation", "full"}},
			[]string{`pipeline.convert.preallocation: unknown value "full"; allowed: off, metadata, falloc`}},
		{"preallocation compress", singleDoc, []edit{{"pipeline.convert.compress", true}, {"pipeline.convert.preallocation", "metadata"}},
			[]string{`pipeline.convert.preallocation: "metadata" cannot be combined with compress`}},
		{"preallocation metadata raw", singleDoc, []edit{{"pipeline.convert.output_format", "raw"}, {"pipeline.convert.preallocation", "metadata"}},
			[]string{`pipeline.convert.preallocation: "metadata" is for qcow2 output only, and output_format is "raw"`}},
		{"preallocation falloc raw", singleDoc, []edit{{"pipeline.convert.output_format", "raw"}, {"pipeline.convert.preallocation", "falloc"}}, nil},
		{"preallocation off compress", singleDoc, []edit{{"pipeline.convert.compress", true}, {"pipeline.convert.preallocation", "off"}}, nil},
	}
	for _, v := range manifest.Preallocations() {
		cases = append(cases, ruleCase{"preallocation " + v, singleDoc, []edit{{"pipeline.convert.preallocation", v}}, nil})
	}
	for _, st := range manifest.SourceTypes() {
		if st == manifest.SourceVSphere {
			continue // TestRemoteLoad
		}
		cases = append(cases, ruleCase{"source " + st, singleDoc, []edit{{"pipeline.load.source_type", st}}, nil})
	}
	for _, v := range manifest.FstabModes() {
		cases = append(cases, ruleCase{"fstab " + v, singleDoc, []edit{{"pipeline.fix.fstab.mode", v}}, nil})
	}
	for _, v := range manifest.FixLevels() {
		cases = append(cases, ruleCase{"level " + v, singleDoc, []edit{{"pipeline.fix.network.fix_level", v}}, nil})
	}
	for _, v := range manifest.OutputFormats() {
		cases = append(cases, ruleCase{"format " + v, singleDoc, []edit{{"pipeline.convert.output_format", v}}, nil})
	}
	for _, v := range manifest.Compressions() {
		cases = append(cases, ruleCase{"compression " + v, singleDoc, []edit{{"pipeline.convert.compress", true}, {"pipeline.convert.compression", v}}, nil})
	}
	for _, v := range manifest.Backends() {
		cases = append(cases, ruleCase{"backend " + v, singleDoc, []edit{{"pipeline.fix.backend", v}}, nil})
	}
	runRules(t, cases)
}

func TestUnknownFields(t *testing.T) {
	runRules(t, []ruleCase{
		{"typo", singleDoc, []edit{{"pipeline.fix.netwrk", doc{}}}, []string{`pipeline.fix.netwrk: unknown field; did you mean "network"?`}},
		{"case", singleDoc, []edit{{"pipeline.load.Source_Type", "vmdk"}}, []string{`pipeline.load.Source_Type: unknown field; did you mean "source_type"?`}},
		{"part of a name", singleDoc, []edit{{"pipeline.convert.format", "raw"}}, []string{`pipeline.convert.format: unknown field; did you mean "output_format"?`}},
		{"wrong section", singleDoc, []edit{{"pipeline.compress", true}}, []string{`pipeline.compress: unknown field here; "compress" belongs in pipeline.convert`}},
		{"top level", singleDoc, []edit{{"source_path", "/x"}}, []string{`source_path: unknown field here; "source_path" belongs in pipeline.load`}},
		{"nonsense", singleDoc, []edit{{"pipeline.inspect.xyzzy", 1}}, []string{`pipeline.inspect.xyzzy: unknown field; allowed here: enabled, detect_os`}},
		{"in a vm", batchDoc, []edit{{"vms.1.priorty", 3}}, []string{`vms[1].priorty: unknown field; did you mean "priority"?`}},
		{"several", singleDoc, []edit{{"colour", 1}, {"pipeline.validate.boot_tst", true}},
			[]string{"colour: unknown field", `pipeline.validate.boot_tst: unknown field; did you mean "boot_test"?`}},
	})
}

func TestPaths(t *testing.T) {
	runRules(t, []ruleCase{
		{"relative source", singleDoc, []edit{{"pipeline.load.source_path", "vms/web01.vmdk"}},
			[]string{`pipeline.load.source_path: "vms/web01.vmdk" is not an absolute path`}},
		{"dot dot", singleDoc, []edit{{"pipeline.load.source_path", "/data/../etc/shadow"}},
			[]string{`pipeline.load.source_path: "/data/../etc/shadow" is not a normalised path; write "/etc/shadow"`}},
		{"double slash", singleDoc, []edit{{"pipeline.load.source_path", "/data//web01.vmdk"}},
			[]string{`pipeline.load.source_path: "/data//web01.vmdk" is not a normalised path; write "/data/web01.vmdk"`}},
		{"trailing slash dir", singleDoc, []edit{{"pipeline.convert.output_dir", "/srv/kvm/"}},
			[]string{`pipeline.convert.output_dir: "/srv/kvm/" is not a normalised path; write "/srv/kvm"`}},
		{"relative dir", singleDoc, []edit{{"pipeline.convert.output_dir", "out"}},
			[]string{`pipeline.convert.output_dir: "out" is not an absolute path`}},
		{"good dir", singleDoc, []edit{{"pipeline.convert.output_dir", "/srv/kvm"}}, nil},
		{"nul", singleDoc, []edit{{"pipeline.load.source_path", "/data/a\x00b"}},
			[]string{"pipeline.load.source_path: must not contain a NUL character"}},
		{"output path dir", singleDoc, []edit{{"pipeline.convert.output_path", "out/web01.qcow2"}},
			[]string{`pipeline.convert.output_path: "out/web01.qcow2" is not a plain file name`}},
		{"output path abs", singleDoc, []edit{{"pipeline.convert.output_path", "/srv/web01.qcow2"}},
			[]string{`pipeline.convert.output_path: "/srv/web01.qcow2" is not a plain file name`}},
		{"output path dotdot", singleDoc, []edit{{"pipeline.convert.output_path", ".."}},
			[]string{`pipeline.convert.output_path: ".." is not a plain file name`}},
		{"output path long", singleDoc, []edit{{"pipeline.convert.output_path", strings.Repeat("a", 256)}},
			[]string{"pipeline.convert.output_path: is longer than 255 bytes"}},
		{"output path ok", singleDoc, []edit{{"pipeline.convert.output_path", "web01-final.qcow2"}}, nil},
		{"batch path", batchDoc, []edit{{"vms.2.pipeline.load.source_path", "app01.vmdk"}},
			[]string{`vms[2].pipeline.load.source_path: "app01.vmdk" is not an absolute path`}},
	})
}

func TestNames(t *testing.T) {
	cases := []ruleCase{
		{"space", singleDoc, []edit{{"name", "web 01"}}, []string{`name: "web 01" is not a valid name: must be 1 to 64 letters`}},
		{"slash", singleDoc, []edit{{"name", "../etc"}}, []string{`name: "../etc" is not a valid name`}},
		{"leading dot", singleDoc, []edit{{"name", ".hidden"}}, []string{`name: ".hidden" is not a valid name`}},
		{"leading dash", singleDoc, []edit{{"name", "-rf"}}, []string{`name: "-rf" is not a valid name`}},
		{"too long", singleDoc, []edit{{"name", strings.Repeat("a", 65)}}, []string{"name: " + strconv.Quote(strings.Repeat("a", 65)) + " is not a valid name"}},
		{"64 long", singleDoc, []edit{{"name", strings.Repeat("a", 64)}}, nil},
		{"unicode", singleDoc, []edit{{"name", "wéb"}}, []string{`name: "wéb" is not a valid name`}},
		{"dots and dashes", singleDoc, []edit{{"name", "Web_01.prod-2"}}, nil},
		{"one char", singleDoc, []edit{{"name", "7"}}, nil},
		{"batch vm", batchDoc, []edit{{"vms.0.name", "a b"}}, []string{`vms[0].name: "a b" is not a valid name`}},
		{"batch name optional", batchDoc, nil, nil},
		{"batch name checked", batchDoc, []edit{{"name", "wave 1"}}, []string{`name: "wave 1" is not a valid name`}},
		{"duplicate", batchDoc, []edit{{"vms.2.name", "web01"}},
			[]string{`vms[2].name: "web01" is already the name of vms[0]; names in a batch must be unique`}},
	}
	runRules(t, cases)
}

func TestVersion(t *testing.T) {
	runRules(t, []ruleCase{
		{"2.0", singleDoc, []edit{{"version", "2.0"}}, []string{`version: unsupported version "2.0"; the only manifest version is "1.0"`}},
		{"1", singleDoc, []edit{{"version", json.Number("1")}}, []string{`version: unsupported version "1"`}},
		{"1.0.0", singleDoc, []edit{{"version", "1.0.0"}}, []string{`version: unsupported version "1.0.0"`}},
		{"batch", batchDoc, []edit{{"version", "0.9"}}, []string{`version: unsupported version "0.9"`}},
	})
}

func TestSHA256(t *testing.T) {
	good := strings.Repeat("ab", 32)
	runRules(t, []ruleCase{
		{"good", singleDoc, []edit{{"pipeline.load.sha256", good}}, nil},
		{"upper", singleDoc, []edit{{"pipeline.load.sha256", strings.ToUpper(good)}}, nil},
		{"short", singleDoc, []edit{{"pipeline.load.sha256", good[:63]}}, []string{"pipeline.load.sha256: must be 64 hexadecimal digits"}},
		{"not hex", singleDoc, []edit{{"pipeline.load.sha256", strings.Repeat("g", 64)}}, []string{"pipeline.load.sha256: must be 64 hexadecimal digits"}},
		{"prefix", singleDoc, []edit{{"pipeline.load.sha256", "sha256:" + good}}, []string{`pipeline.load.sha256: must be 64 hexadecimal digits (as printed by sha256sum), without the "sha256:" prefix`}},
		{"allow_references", singleDoc, []edit{{"pipeline.load.allow_references", []any{"/srv/base/parent.qcow2"}}}, nil},
		{"allow_references relative", singleDoc, []edit{{"pipeline.load.allow_references", []any{"parent.qcow2"}}}, []string{"pipeline.load.allow_references[0]: \"parent.qcow2\" is not an absolute path"}},
		{"allow_references dotdot", singleDoc, []edit{{"pipeline.load.allow_references", []any{"/srv/../etc/shadow"}}}, []string{"pipeline.load.allow_references[0]: \"/srv/../etc/shadow\" is not a normalised path"}},
		{"allow_references twice", singleDoc, []edit{{"pipeline.load.allow_references", []any{"/a", "/a"}}}, []string{"pipeline.load.allow_references[1]: \"/a\" is listed twice"}},
		{"allow_references empty", singleDoc, []edit{{"pipeline.load.allow_references", []any{""}}}, []string{"pipeline.load.allow_references[0]: must not be empty"}},
	})
}

func TestResources(t *testing.T) {
	cases := []ruleCase{
		{"all set", singleDoc, []edit{{"resources", doc{"memory_max": "4G", "cpu_quota": "200%", "io_weight": 500, "tasks_max": 64, "runtime_max_sec": 7200}}}, nil},
		{"memory infinity", singleDoc, []edit{{"resources.memory_max", "infinity"}}, nil},
		{"memory bytes", singleDoc, []edit{{"resources.memory_max", "1073741824"}}, nil},
		{"memory fraction", singleDoc, []edit{{"resources.memory_max", "1.5G"}}, nil},
		{"memory percent", singleDoc, []edit{{"resources.memory_max", "50%"}}, nil},
		{"memory lower case", singleDoc, []edit{{"resources.memory_max", "4g"}}, []string{`resources.memory_max: "4g" is not a size; use a size like "512M"`}},
		{"memory GiB", singleDoc, []edit{{"resources.memory_max", "4GiB"}}, []string{`resources.memory_max: "4GiB" is not a size`}},
		{"memory zero", singleDoc, []edit{{"resources.memory_max", "0"}}, []string{`resources.memory_max: "0" is too small`}},
		{"memory percent over", singleDoc, []edit{{"resources.memory_max", "150%"}}, []string{`resources.memory_max: "150%" is not a percentage between 0 and 100`}},
		{"memory huge", singleDoc, []edit{{"resources.memory_max", "99999999E"}}, []string{`resources.memory_max: "99999999E" is too large`}},
		{"cpu no percent", singleDoc, []edit{{"resources.cpu_quota", "2"}}, []string{`resources.cpu_quota: "2" is not a percentage; use a percentage of one CPU`}},
		{"cpu zero", singleDoc, []edit{{"resources.cpu_quota", "0%"}}, []string{`resources.cpu_quota: "0%" must be more than 0%`}},
		{"cpu fraction", singleDoc, []edit{{"resources.cpu_quota", "12.5%"}}, nil},
		{"io weight high", singleDoc, []edit{{"resources.io_weight", 10001}}, []string{"resources.io_weight: must be between 1 and 10000"}},
		{"io weight negative", singleDoc, []edit{{"resources.io_weight", -1}}, []string{"resources.io_weight: must be between 1 and 10000"}},
		{"io weight edges", singleDoc, []edit{{"resources.io_weight", 10000}}, nil},
		{"tasks negative", singleDoc, []edit{{"resources.tasks_max", -5}}, []string{"resources.tasks_max: must be 1 or more, not -5"}},
		{"tasks one", singleDoc, []edit{{"resources.tasks_max", 1}}, nil},
		{"runtime negative", singleDoc, []edit{{"resources.runtime_max_sec", -1}}, []string{"resources.runtime_max_sec: must be 0 (no limit) or a number of seconds, not -1"}},
		{"runtime zero", singleDoc, []edit{{"resources.runtime_max_sec", 0}}, nil},
		{"in a vm", batchDoc, []edit{{"vms.1.resources", doc{"memory_max": "lots"}}}, []string{`vms[1].resources.memory_max: "lots" is not a size`}},
		{"batch level", batchDoc, []edit{{"resources", doc{"cpu_quota": "x%"}}}, []string{`resources.cpu_quota: "x%" is not a percentage`}},
	}
	runRules(t, cases)
}

func TestPriority(t *testing.T) {
	runRules(t, []ruleCase{
		{"min", singleDoc, []edit{{"priority", -100}}, nil},
		{"max", singleDoc, []edit{{"priority", 100}}, nil},
		{"under", singleDoc, []edit{{"priority", -101}}, []string{"priority: must be between -100 and 100 (higher runs first), not -101"}},
		{"over", singleDoc, []edit{{"priority", 1000}}, []string{"priority: must be between -100 and 100 (higher runs first), not 1000"}},
		{"vm", batchDoc, []edit{{"vms.2.priority", 101}}, []string{"vms[2].priority: must be between -100 and 100"}},
		{"huge", singleDoc, []edit{{"priority", json.Number("99999999999999999999")}}, []string{"priority: must be a whole number, not the number 99999999999999999999"}},
	})
}

func TestShape(t *testing.T) {
	runRules(t, []ruleCase{
		{"batch", batchDoc, nil, nil},
		{"batch no vms", batchDoc, []edit{{"vms", nil}}, []string{"vms: is required: a batch manifest lists at least one VM"}},
		{"batch empty vms", batchDoc, []edit{{"vms", []any{}}}, []string{"vms: is required: a batch manifest lists at least one VM"}},
		{"batch with pipeline", batchDoc, []edit{{"pipeline", doc{"load": doc{}}}},
			[]string{"pipeline: is not allowed in a batch manifest; give each entry of vms its own pipeline"}},
		{"single with vms", singleDoc, []edit{{"vms", batchDoc()["vms"]}},
			[]string{`vms: is only allowed in a batch manifest ("batch": true)`}},
		{"batch false with vms", batchDoc, []edit{{"batch", false}},
			[]string{`vms: is only allowed in a batch manifest ("batch": true)`, "name: is required", "pipeline: is required"}},
		{"concurrency", batchDoc, []edit{{"concurrency", 2}}, nil},
		{"concurrency negative", batchDoc, []edit{{"concurrency", -1}}, []string{"concurrency: must be 0 (the agent's max_concurrent_jobs) or more"}},
		{"concurrency single", singleDoc, []edit{{"concurrency", 2}}, []string{`concurrency: is only allowed in a batch manifest`}},
		{"same output file", batchDoc, []edit{
			{"vms.0.pipeline.convert", doc{"output_dir": "/srv/kvm", "output_path": "disk.qcow2"}},
			{"vms.2.pipeline.convert", doc{"output_dir": "/srv/kvm", "output_path": "disk.qcow2"}}},
			[]string{"vms[2].pipeline.convert: app01 would write disk.qcow2 into /srv/kvm, as vms[0] (web01) does"}},
		// Two VMs share a directory: NAME.qcow2, NAME.xml, NAME.report.json.
		{"same dir distinct names", batchDoc, []edit{
			{"vms.0.pipeline.convert", doc{"output_dir": "/srv/kvm"}},
			{"vms.1.pipeline.convert", doc{"output_dir": "/srv/kvm"}}}, nil},
		{"disk named like another VM's", batchDoc, []edit{
			{"vms.0.pipeline.convert", doc{"output_dir": "/srv/kvm"}},
			{"vms.1.pipeline.convert", doc{"output_dir": "/srv/kvm", "output_path": "web01.qcow2"}}},
			[]string{"vms[1].pipeline.convert: db01 would write web01.qcow2 into /srv/kvm, as vms[0] (web01) does"}},
		{"distinct dirs", batchDoc, []edit{
			{"vms.0.pipeline.convert", doc{"output_dir": "/srv/kvm/a"}},
			{"vms.1.pipeline.convert", doc{"output_dir": "/srv/kvm/b"}}}, nil},
	})
}

func TestStageOptions(t *testing.T) {
	runRules(t, []ruleCase{
		{"compare with fix", singleDoc, []edit{{"pipeline.validate.compare", true}},
			[]string{"pipeline.validate.compare: cannot compare the output with the source while fix is enabled"}},
		{"compare without fix", singleDoc, []edit{{"pipeline.validate.compare", true}, {"pipeline.fix.enabled", false}}, nil},
		{"boot timeout negative", singleDoc, []edit{{"pipeline.validate.boot_timeout", -1}},
			[]string{"pipeline.validate.boot_timeout: must be between 1 and 86400 seconds"}},
		{"boot timeout day", singleDoc, []edit{{"pipeline.validate.boot_timeout", 86401}},
			[]string{"pipeline.validate.boot_timeout: must be between 1 and 86400 seconds"}},
		{"boot test", singleDoc, []edit{{"pipeline.validate", doc{"boot_test": true, "boot_timeout": 120, "boot_marker": "Welcome"}}}, nil},
		{"the original's example", singleDoc, []edit{{"pipeline", doc{
			"load":    doc{"source_type": "vmdk", "source_path": "/data/vms/web01/web01.vmdk"},
			"inspect": doc{"enabled": true, "detect_os": true},
			"fix": doc{
				"fstab":     doc{"enabled": true, "mode": "stabilize-all"},
				"grub":      doc{"enabled": true},
				"initramfs": doc{"enabled": true, "regenerate": true},
				"network":   doc{"enabled": true, "fix_level": "full"},
			},
			"convert":  doc{"output_format": "qcow2", "compress": true, "output_path": "web01.qcow2"},
			"validate": doc{"enabled": true, "boot_test": false},
		}}}, nil},
	})
}

func TestDisks(t *testing.T) {
	ova := func() doc {
		d := singleDoc()
		set(d, "pipeline.load", doc{"source_type": "ova", "source_path": "/data/app.ova"})
		return d
	}
	runRules(t, []ruleCase{
		{"good", ova, []edit{{"pipeline.convert.disks", []any{
			doc{"id": "vmdisk1"}, doc{"id": "vmdisk2", "output_path": "web01-data.qcow2"}, doc{"id": "vmdisk3", "skip": true}}}}, nil},
		{"not an ova", singleDoc, []edit{{"pipeline.convert.disks", []any{doc{"id": "vmdisk1"}}}},
			[]string{`pipeline.convert.disks: is only allowed for ova and ovf sources (which can hold several disks), and source_type is "vmdk"`}},
		{"no id", ova, []edit{{"pipeline.convert.disks", []any{doc{"output_path": "x.qcow2"}}}},
			[]string{"pipeline.convert.disks[0].id: is required"}},
		{"bad id", ova, []edit{{"pipeline.convert.disks", []any{doc{"id": "a/b"}}}},
			[]string{`pipeline.convert.disks[0].id: "a/b" is not a valid disk id`}},
		{"duplicate id", ova, []edit{{"pipeline.convert.disks", []any{doc{"id": "d1"}, doc{"id": "d1"}}}},
			[]string{`pipeline.convert.disks[1].id: "d1" is already listed in disks[0]`}},
		{"output clash", ova, []edit{{"pipeline.convert.disks", []any{doc{"id": "d2", "output_path": "web01.qcow2"}}}},
			[]string{`pipeline.convert.disks[0].output_path: "web01.qcow2" is already the output of pipeline.convert.output_path`}},
		{"output clash between disks", ova, []edit{{"pipeline.convert.disks", []any{doc{"id": "d2", "output_path": "x.qcow2"}, doc{"id": "d3", "output_path": "x.qcow2"}}}},
			[]string{`pipeline.convert.disks[1].output_path: "x.qcow2" is already the output of pipeline.convert.disks[0]`}},
		{"output not plain", ova, []edit{{"pipeline.convert.disks", []any{doc{"id": "d2", "output_path": "a/x.qcow2"}}}},
			[]string{`pipeline.convert.disks[0].output_path: "a/x.qcow2" is not a plain file name`}},
		{"skip with output", ova, []edit{{"pipeline.convert.disks", []any{doc{"id": "d2", "output_path": "x.qcow2", "skip": true}}}},
			[]string{"pipeline.convert.disks[0].output_path: has no use on a skipped disk"}},
		{"unknown field", ova, []edit{{"pipeline.convert.disks", []any{doc{"id": "d2", "skipp": true}}}},
			[]string{`pipeline.convert.disks[0].skipp: unknown field; did you mean "skip"?`}},
	})
}

// Validate works on manifests built in Go, without Parse.
func TestValidateTyped(t *testing.T) {
	yes := true
	prio := 500
	cases := []struct {
		name string
		m    *manifest.Manifest
		want []string
	}{
		{"nil", nil, []string{": manifest is empty"}},
		{"empty", &manifest.Manifest{}, []string{"version: is required", "name: is required", "pipeline: is required"}},
		{"minimal", &manifest.Manifest{Version: "1.0", Name: "a", Pipeline: &manifest.Pipeline{
			Load: manifest.Load{SourceType: "raw", SourcePath: "/a.img"}}}, nil},
		{"several", &manifest.Manifest{Version: "1.0", Name: "a", Priority: &prio, Pipeline: &manifest.Pipeline{
			Load:     manifest.Load{SourceType: "ami", SourcePath: "a.img"},
			Fix:      &manifest.Fix{Network: &manifest.NetworkFix{FixLevel: "max"}},
			Validate: &manifest.Validate{Compare: &yes}}},
			[]string{"priority: must be between -100 and 100", `pipeline.load.source_type: "ami" is an AWS image id`,
				`pipeline.load.source_path: "a.img" is not an absolute path`, `pipeline.fix.network.fix_level: unknown value "max"`,
				"pipeline.validate.compare: cannot compare"}},
		{"batch", &manifest.Manifest{Version: "1.0", Batch: true, VMs: []manifest.VM{{Name: "a"}, {Name: "a"}}},
			[]string{"vms[0].pipeline: is required", `vms[1].name: "a" is already the name of vms[0]`, "vms[1].pipeline: is required"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ps := tc.m.Validate()
			if tc.want == nil {
				if ps != nil || ps.Err() != nil {
					t.Fatalf("valid manifest refused:\n%v", ps)
				}
				return
			}
			checkProblems(t, nil, ps.Err(), tc.want)
		})
	}
}

func TestProblemsError(t *testing.T) {
	ps := manifest.Problems{{Path: "a.b", Message: "is required"}, {Path: "", Message: "manifest is empty"}}
	if got, want := ps.Error(), "a.b: is required\nmanifest is empty"; got != want {
		t.Fatalf("got %q want %q", got, want)
	}
	var none manifest.Problems
	if none.Err() != nil {
		t.Fatal("empty Problems must be a nil error")
	}
}

func TestPlacementRules(t *testing.T) {
	runRules(t, []ruleCase{
		{"host and label", singleDoc, []edit{{"placement", []any{"kvm01", "datastore=ds01"}}}, nil},
		{"empty value", singleDoc, []edit{{"placement", []any{"datastore="}}}, []string{`placement[0]: label datastore: value "": want a non-empty value without '=', ',' or spaces (datastore=ds01)`}},
		{"bad key", singleDoc, []edit{{"placement", []any{"data store=ds01"}}}, []string{`placement[0]: label key "data store": want letters, digits, '.', '_', '-' or '/' (at most 63)`}},
		{"bad host", singleDoc, []edit{{"placement", []any{"kvm 01"}}}, []string{`placement[0]: "kvm 01": want a host name (host.name of a fleet host) or a label key=value like datastore=ds01`}},
	})
}

package manifest_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

const singleJSON = `{
  "version": "1.0",
  "name": "web01",
  "priority": 10,
  "pipeline": {
    "load":    { "source_type": "vmdk", "source_path": "/data/vms/web01/web01.vmdk" },
    "fix":     { "network": { "fix_level": "full" } },
    "convert": { "compress": true }
  },
  "resources": { "memory_max": "4G" }
}`

const singleYAML = `# the same manifest as YAML
version: 1.0
name: web01
priority: 10
pipeline:
  load:
    source_type: vmdk
    source_path: /data/vms/web01/web01.vmdk
  fix:
    network: {fix_level: full}
  convert:
    compress: yes_is_not_a_bool_but_true_is
resources:
  memory_max: 4G
`

// JSON and YAML describe the same model.
func TestJSONAndYAMLAgree(t *testing.T) {
	j, err := manifest.Parse([]byte(singleJSON))
	if err != nil {
		t.Fatal(err)
	}
	y, err := manifest.Parse([]byte(strings.Replace(singleYAML, "yes_is_not_a_bool_but_true_is", "true", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(j, y) {
		t.Fatalf("JSON and YAML differ:\n%+v\n%+v", j, y)
	}
	if j.Name != "web01" || *j.Priority != 10 || j.Pipeline.Fix.Network.FixLevel != "full" ||
		j.Pipeline.Convert.Compression != "zstd" || j.Resources.MemoryMax != "4G" {
		t.Fatalf("fields lost: %+v", j)
	}
	// A YAML boolean must be true or false, not yes.
	_, err = manifest.Parse([]byte(singleYAML))
	checkProblems(t, nil, err, []string{`pipeline.convert.compress: must be true or false, not the text "yes_is_not_a_bool_but_true_is"`})
}

func TestYAMLFeatures(t *testing.T) {
	cases := []struct {
		name, in string
		want     []string // nil: valid
	}{
		{"flow style starting with a brace", `{version: "1.0", name: a, pipeline: {load: {source_type: raw, source_path: /a}}}`, nil},
		{"number where text is expected keeps its spelling", "version: 1.0\nname: 0042\npipeline: {load: {source_type: raw, source_path: /a}}\n", nil},
		{"hex int", "version: '1.0'\nname: a\npriority: 0x10\npipeline: {load: {source_type: raw, source_path: /a}}\n", nil},
		{"duplicate key", "version: '1.0'\nname: a\nname: b\npipeline: {load: {source_type: raw, source_path: /a}}\n",
			[]string{"name: is given more than once (lines 2 and 3)"}},
		{"unknown nested", "version: '1.0'\nname: a\npipeline:\n  load: {source_type: raw, source_path: /a}\n  fix:\n    fstab:\n      mod: noop\n",
			[]string{`pipeline.fix.fstab.mod: unknown field; did you mean "mode"?`}},
		{"null section", "version: '1.0'\nname: a\npipeline:\n  load: {source_type: raw, source_path: /a}\n  fix:\n", nil},
		{"float for int", "version: '1.0'\nname: a\npriority: 1.5\npipeline: {load: {source_type: raw, source_path: /a}}\n",
			[]string{"priority: must be a whole number, not the number 1.5"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := manifest.Parse([]byte(tc.in))
			checkProblems(t, m, err, tc.want)
		})
	}
	m, err := manifest.Parse([]byte(cases[1].in))
	if err != nil || m.Version != "1.0" || m.Name != "0042" {
		t.Fatalf("got %+v, %v", m, err)
	}
}

func TestJSONDuplicateKeys(t *testing.T) {
	in := "{\"version\": \"1.0\", \"name\": \"a\",\n\"pipeline\": {\"load\": {\"source_type\": \"raw\",\n\"source_type\": \"vmdk\", \"source_path\": \"/a\"}}}"
	_, err := manifest.Parse([]byte(in))
	checkProblems(t, nil, err, []string{"pipeline.load.source_type: is given more than once (lines 2 and 3)"})
}

func TestSyntaxErrors(t *testing.T) {
	cases := []struct {
		name, in string
		format   string
		line     int
		msg      string // substring of Error()
	}{
		{"empty", "", "", 0, "manifest is empty"},
		{"blank", " \n\t\n", "", 0, "manifest is empty"},
		{"comment only", "# nothing\n", "", 0, "manifest is empty"},
		{"broken JSON", "{\n  \"version\": \"1.0\",\n  \"name\": \"a\"\n  \"pipeline\": {}\n}", "JSON", 4, "cannot parse manifest as JSON: line 4: invalid character"},
		{"truncated JSON", "{\n  \"version\": \"1.0\",\n", "JSON", 2, "unexpected end of input"},
		{"trailing JSON", `{"version": "1.0"} {"a": 1}`, "JSON", 1, "cannot parse manifest as JSON"},
		{"broken YAML", "version: '1.0'\nname: a\n  pipeline: x\n", "YAML", 3, "cannot parse manifest as YAML: line 3:"},
		{"YAML one line", "a: b: c", "YAML", 1, "mapping values are not allowed"},
		{"tab indent", "version: '1.0'\npipeline:\n\tload: {}\n", "YAML", 3, "indent with spaces, not tabs"},
		{"two documents", "version: '1.0'\n---\nversion: '1.0'\n", "YAML", 2, "more than one YAML document"},
		{"list", "[1, 2]", "", 0, "must be a JSON object or YAML mapping (with version, name and pipeline), not a list"},
		{"YAML list", "- a\n- b\n", "", 0, "not a list"},
		{"text", "hello world", "", 0, `not the text "hello world"`},
		{"number", "42", "", 0, "not the number 42"},
		{"null", "null", "", 0, "not null"},
		{"binary", "\x00\x01\x02", "YAML", 1, "control characters are not allowed"},
		{"bad utf8", "version: '1.0'\nname: \xff\n", "", 2, "not valid UTF-8"},
		{"complex key", "? [a, b]\n: c\n", "YAML", 1, "a mapping key must be a plain name"},
		{"unknown anchor", "a: *nope\n", "YAML", 1, "unknown anchor"},
		{"deep JSON", strings.Repeat("[", 100) + strings.Repeat("]", 100), "JSON", 1, "nested too deeply"},
		{"too large", "{" + strings.Repeat(" ", manifest.MaxSize) + "}", "", 0, "larger than the limit of 1048576 bytes"},
		{"anchor", "version: '1.0'\nname: a\npipeline: &p {load: {source_type: raw, source_path: /a}}\n", "YAML", 3,
			"line 3: YAML anchors and aliases are not allowed in a manifest"},
		{"anchor on a key", "version: '1.0'\n&k name: a\n", "YAML", 2, "YAML anchors and aliases are not allowed"},
		{"merge key", "version: '1.0'\nname: a\npipeline:\n  <<: {load: {source_type: raw, source_path: /a}}\n", "YAML", 4,
			"YAML merge keys (<<) are not allowed in a manifest"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := manifest.Parse([]byte(tc.in))
			var se *manifest.SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("want *SyntaxError, got %T %v (manifest %v)", err, err, m)
			}
			if se.Format != tc.format || se.Line != tc.line || !strings.Contains(se.Error(), tc.msg) {
				t.Fatalf("got format %q line %d %q; want %q %d containing %q", se.Format, se.Line, se.Error(), tc.format, tc.line, tc.msg)
			}
		})
	}
}

func TestBOM(t *testing.T) {
	if _, err := manifest.Parse([]byte("\xef\xbb\xbf" + singleJSON)); err != nil {
		t.Fatal(err)
	}
}

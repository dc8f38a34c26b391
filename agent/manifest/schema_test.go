package manifest_test

import (
	"encoding/json"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

type schemaNode = map[string]any

func loadSchema(t *testing.T) schemaNode {
	t.Helper()
	var s schemaNode
	if err := json.Unmarshal(manifest.Schema(), &s); err != nil {
		t.Fatalf("schema.json is not JSON: %v", err)
	}
	return s
}

// resolve follows a local "$ref" ("#/$defs/x").
func resolve(root, n schemaNode) schemaNode {
	for {
		ref, ok := n["$ref"].(string)
		if !ok {
			return n
		}
		name := strings.TrimPrefix(ref, "#/$defs/")
		n = root["$defs"].(schemaNode)[name].(schemaNode)
	}
}

// The schema describes exactly the Go model: every JSON field of every
// struct, with the same JSON type, no extra properties, and the enums of
// the validator.
func TestSchemaMatchesModel(t *testing.T) {
	root := loadSchema(t)
	if root["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$schema = %v", root["$schema"])
	}
	enums := map[string][]string{
		"Load.source_type":      manifest.SourceTypes(),
		"FstabFix.mode":         manifest.FstabModes(),
		"NetworkFix.fix_level":  manifest.FixLevels(),
		"Convert.output_format": manifest.OutputFormats(),
		"Convert.compression":   manifest.Compressions(),
		"Convert.preallocation": manifest.Preallocations(),
		"Fix.backend":           manifest.Backends(),
		"Target.graphics":       manifest.GraphicsTypes(),
		"Hook.type":             manifest.HookTypes(),
		"Hook.method":           manifest.HookMethods(),
		"Retry.backoff":         manifest.Backoffs(),
	}
	seenEnums := map[string]bool{}
	var check func(typ reflect.Type, n schemaNode, where string)
	check = func(typ reflect.Type, n schemaNode, where string) {
		n = resolve(root, n)
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		want, known := map[reflect.Kind]string{reflect.String: "string", reflect.Int: "integer", reflect.Bool: "boolean",
			reflect.Struct: "object", reflect.Slice: "array"}[typ.Kind()]
		if !known {
			t.Errorf("%s: Go type %s has no JSON Schema type in this test", where, typ)
		} else if n["type"] != want {
			t.Errorf("%s: schema type %v, Go %s wants %q", where, n["type"], typ, want)
		}
		switch typ.Kind() {
		case reflect.Slice:
			items, ok := n["items"].(schemaNode)
			if !ok {
				t.Errorf("%s: array without items", where)
				return
			}
			check(typ.Elem(), items, where+"[]")
		case reflect.Struct:
			if n["additionalProperties"] != false {
				t.Errorf("%s: additionalProperties must be false", where)
			}
			props, _ := n["properties"].(schemaNode)
			var goNames, schemaNames []string
			for i := range typ.NumField() {
				f := typ.Field(i)
				name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
				if name == "" || name == "-" {
					continue
				}
				goNames = append(goNames, name)
				p, ok := props[name].(schemaNode)
				if !ok {
					t.Errorf("%s.%s: in the Go model (%s.%s) but not in the schema", where, name, typ.Name(), f.Name)
					continue
				}
				key := typ.Name() + "." + name
				if vals, ok := enums[key]; ok {
					seenEnums[key] = true
					got := toStrings(resolve(root, p)["enum"])
					if !slices.Equal(got, vals) {
						t.Errorf("%s.%s: schema enum %v, validator allows %v", where, name, got, vals)
					}
				} else if _, ok := resolve(root, p)["enum"]; ok {
					t.Errorf("%s.%s: schema has an enum the validator does not check", where, name)
				}
				check(f.Type, p, where+"."+name)
			}
			for name := range props {
				schemaNames = append(schemaNames, name)
			}
			sort.Strings(goNames)
			sort.Strings(schemaNames)
			if !slices.Equal(goNames, schemaNames) {
				t.Errorf("%s: schema properties %v, Go fields %v", where, schemaNames, goNames)
			}
		}
	}
	check(reflect.TypeFor[manifest.Manifest](), root, "manifest")
	for key := range enums {
		if !seenEnums[key] {
			t.Errorf("enum %s not found in the model", key)
		}
	}
	version := root["properties"].(schemaNode)["version"].(schemaNode)
	if version["const"] != manifest.Version {
		t.Errorf("version const %v, want %q", version["const"], manifest.Version)
	}
}

func toStrings(v any) []string {
	list, _ := v.([]any)
	var out []string
	for _, e := range list {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

// schemaValid is a small validator for the keywords schema.json uses, so
// that the test can show the schema and Parse agree on examples.
func schemaValid(root, n schemaNode, v any) bool {
	n = resolve(root, n)
	if typ, ok := n["type"].(string); ok && !hasType(typ, v) {
		return false
	}
	if c, ok := n["const"]; ok && !reflect.DeepEqual(c, v) {
		return false
	}
	if e, ok := n["enum"].([]any); ok && !slices.ContainsFunc(e, func(x any) bool { return reflect.DeepEqual(x, v) }) {
		return false
	}
	if s, ok := v.(string); ok {
		if p, ok := n["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(s) {
			return false
		}
		if m, ok := n["minLength"].(float64); ok && float64(len([]rune(s))) < m {
			return false
		}
		if m, ok := n["maxLength"].(float64); ok && float64(len([]rune(s))) > m {
			return false
		}
	}
	if f, ok := v.(float64); ok {
		if m, ok := n["minimum"].(float64); ok && f < m {
			return false
		}
		if m, ok := n["maximum"].(float64); ok && f > m {
			return false
		}
	}
	if o, ok := v.(map[string]any); ok {
		props, _ := n["properties"].(schemaNode)
		for k, pv := range o {
			p, ok := props[k].(schemaNode)
			if !ok {
				if n["additionalProperties"] == false {
					return false
				}
				continue
			}
			if !schemaValid(root, p, pv) {
				return false
			}
		}
		for _, r := range toStrings(n["required"]) {
			if _, ok := o[r]; !ok {
				return false
			}
		}
	}
	if l, ok := v.([]any); ok {
		if m, ok := n["minItems"].(float64); ok && float64(len(l)) < m {
			return false
		}
		if items, ok := n["items"].(schemaNode); ok {
			for _, e := range l {
				if !schemaValid(root, items, e) {
					return false
				}
			}
		}
	}
	if not, ok := n["not"].(schemaNode); ok && schemaValid(root, not, v) {
		return false
	}
	if all, ok := n["allOf"].([]any); ok {
		for _, s := range all {
			if !schemaValid(root, s.(schemaNode), v) {
				return false
			}
		}
	}
	if cond, ok := n["if"].(schemaNode); ok {
		branch := "else"
		if schemaValid(root, cond, v) {
			branch = "then"
		}
		if b, ok := n[branch].(schemaNode); ok && !schemaValid(root, b, v) {
			return false
		}
	}
	return true
}

func hasType(typ string, v any) bool {
	switch typ {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "integer":
		f, ok := v.(float64)
		return ok && f == float64(int64(f))
	}
	return false
}

// The schema accepts what Parse accepts and refuses what Parse refuses, on
// the rules it can express.
func TestSchemaAgreesWithParse(t *testing.T) {
	root := loadSchema(t)
	ova := func() doc {
		return set(singleDoc(), "pipeline.load", doc{"source_type": "ova", "source_path": "/data/app.ova"})
	}
	cases := []struct {
		name  string
		d     doc
		valid bool
	}{
		{"single", singleDoc(), true},
		{"batch", batchDoc(), true},
		{"full", set(set(set(singleDoc(), "resources", doc{"memory_max": "4G", "cpu_quota": "150%", "io_weight": 200, "tasks_max": 10, "runtime_max_sec": 60}),
			"pipeline.convert", doc{"output_format": "qcow2", "compress": true, "compression": "zlib", "output_path": "x.qcow2", "output_dir": "/srv"}),
			"pipeline.fix", doc{"backend": "guestfs", "fstab": doc{"mode": "noop"}, "network": doc{"fix_level": "aggressive"}, "vmware_tools": doc{"enabled": true}}), true},
		{"ova disks", set(ova(), "pipeline.convert.disks", []any{doc{"id": "vmdisk2", "output_path": "b.qcow2"}}), true},
		{"disks on vmdk", set(singleDoc(), "pipeline.convert.disks", []any{doc{"id": "vmdisk2"}}), false},
		{"no version", set(singleDoc(), "version", nil), false},
		{"version 2", set(singleDoc(), "version", "2.0"), false},
		{"unknown field", set(singleDoc(), "pipeline.load.colour", "red"), false},
		{"ami", set(singleDoc(), "pipeline.load.source_type", "ami"), false},
		{"relative", set(singleDoc(), "pipeline.load.source_path", "a/b"), false},
		{"dot dot", set(singleDoc(), "pipeline.load.source_path", "/a/../b"), false},
		{"trailing slash", set(singleDoc(), "pipeline.convert.output_dir", "/srv/"), false},
		{"double slash", set(singleDoc(), "pipeline.convert.output_dir", "/srv//x"), false},
		{"root dir", set(singleDoc(), "pipeline.convert.output_dir", "/"), true},
		{"dotfile dir", set(singleDoc(), "pipeline.convert.output_dir", "/srv/.cache"), true},
		{"output path dir", set(singleDoc(), "pipeline.convert.output_path", "a/b"), false},
		{"output path dotdot", set(singleDoc(), "pipeline.convert.output_path", ".."), false},
		{"bad name", set(singleDoc(), "name", "a b"), false},
		{"no name", set(singleDoc(), "name", nil), true},
		{"priority", set(singleDoc(), "priority", 101), false},
		{"memory", set(singleDoc(), "resources.memory_max", "4GB"), false},
		{"cpu", set(singleDoc(), "resources.cpu_quota", "2"), false},
		{"io weight", set(singleDoc(), "resources.io_weight", 10001), false},
		{"sha", set(singleDoc(), "pipeline.load.sha256", "abc"), false},
		{"compress raw", set(set(singleDoc(), "pipeline.convert.output_format", "raw"), "pipeline.convert.compress", true), false},
		{"vmdk output", set(singleDoc(), "pipeline.convert.output_format", "vmdk"), false},
		{"batch with pipeline", set(batchDoc(), "pipeline", singleDoc()["pipeline"]), false},
		{"batch without vms", set(batchDoc(), "vms", []any{}), false},
		{"single with vms", set(singleDoc(), "vms", batchDoc()["vms"]), false},
		{"concurrency in single", set(singleDoc(), "concurrency", 2), false},
		{"boot timeout", set(singleDoc(), "pipeline.validate.boot_timeout", -1), false},
		{"wrong type", set(singleDoc(), "pipeline.fix.enabled", "yes"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data, _ := json.Marshal(tc.d)
			_, perr := manifest.Parse(data)
			if (perr == nil) != tc.valid {
				t.Fatalf("Parse: valid=%v, want %v (%v)", perr == nil, tc.valid, perr)
			}
			var generic any
			if err := json.Unmarshal(data, &generic); err != nil {
				t.Fatal(err)
			}
			if got := schemaValid(root, root, generic); got != tc.valid {
				t.Fatalf("schema: valid=%v, want %v for %s", got, tc.valid, data)
			}
		})
	}
}

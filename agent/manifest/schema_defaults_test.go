package manifest_test

import (
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

// schemaDefault is the "default" the schema gives the pipeline field at
// path (dot-separated, relative to pipeline), the way the manifest builder
// reads it: the field's own default, else its value in the default of an
// enclosing object (fix.grub's {"enabled": true}). $ref siblings count.
func schemaDefault(root schemaNode, path string) (any, bool) {
	defs := root["$defs"].(schemaNode)
	node := func(n schemaNode) schemaNode {
		for n != nil {
			ref, ok := n["$ref"].(string)
			if !ok {
				return n
			}
			m := schemaNode{}
			for k, v := range defs[strings.TrimPrefix(ref, "#/$defs/")].(schemaNode) {
				m[k] = v
			}
			for k, v := range n {
				if k != "$ref" {
					m[k] = v
				}
			}
			n = m
		}
		return schemaNode{}
	}
	n := node(schemaNode{"$ref": "#/$defs/pipeline"})
	var def any
	has := false
	for _, k := range strings.Split(path, ".") {
		if obj, ok := def.(map[string]any); ok {
			def, has = obj[k]
		} else {
			def, has = nil, false
		}
		props, _ := n["properties"].(schemaNode)
		child, _ := props[k].(schemaNode)
		n = node(child)
		if d, ok := n["default"]; ok {
			def, has = d, true
		}
	}
	return def, has
}

// leaves flattens a JSON object into dot paths of its non-object values.
func leaves(prefix string, v any, out map[string]any) {
	obj, ok := v.(map[string]any)
	if !ok {
		out[prefix] = v
		return
	}
	for k, e := range obj {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		leaves(p, e, out)
	}
}

// defaulted is the pipeline SetDefaults makes of a manifest that sets only
// what it must (and compress, when compressOn), as JSON values.
func defaulted(t *testing.T, compressOn bool) map[string]any {
	t.Helper()
	p := `{"load":{"source_type":"vmdk","source_path":"/data/x.vmdk"}}`
	if compressOn {
		p = `{"load":{"source_type":"vmdk","source_path":"/data/x.vmdk"},"convert":{"compress":true}}`
	}
	m, err := manifest.Parse([]byte(`{"version":"1.0","name":"x","pipeline":` + p + `}`))
	if err != nil {
		t.Fatal(err)
	}
	m.SetDefaults()
	data, err := json.Marshal(m.Pipeline)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	leaves("", v, out)
	return out
}

// TestSchemaDefaultsAreSetDefaults keeps the schema's "default"s (which
// the web builder shows, reading /api/workflow/schema) equal to what
// SetDefaults fills in: every default the schema states is SetDefaults'
// value, and every value SetDefaults fills in on its own is a default the
// schema states.
func TestSchemaDefaultsAreSetDefaults(t *testing.T) {
	root := loadSchema(t)
	plain, compressed := defaulted(t, false), defaulted(t, true)
	// Values SetDefaults derives from other fields, which no constant
	// default can state: the output file name (from the name and format)
	// and compare (true exactly when fix is off). load is the input.
	derived := map[string]bool{"convert.output_path": true, "validate.compare": true,
		"load.source_type": true, "load.source_path": true}
	var paths []string
	for p := range plain {
		paths = append(paths, p)
	}
	for _, p := range []string{"convert.compress", "convert.compression", "validate.boot_test"} {
		if _, ok := plain[p]; !ok {
			paths = append(paths, p) // zero values SetDefaults leaves out of the JSON
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		if derived[p] {
			continue
		}
		got, set := plain[p]
		if p == "convert.compression" {
			// Only a compressed conversion has a compression.
			got, set = compressed[p]
		}
		def, has := schemaDefault(root, p)
		switch {
		case !has && set:
			t.Errorf("pipeline.%s: SetDefaults fills in %v; the schema states no default", p, got)
		case has && !set && !reflect.ValueOf(def).IsZero():
			t.Errorf("pipeline.%s: the schema's default is %v; SetDefaults leaves it empty", p, def)
		case has && set && !reflect.DeepEqual(def, got):
			t.Errorf("pipeline.%s: the schema's default is %v; SetDefaults fills in %v", p, def, got)
		}
	}
}

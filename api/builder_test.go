package api_test

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/api"
)

// TestBuilderTakesEnumsAndDefaultsFromTheSchema keeps the web manifest
// builder from repeating agent/manifest: it must read every allowed value
// and default from GET /api/workflow/schema, so builder.js, as the bridge
// serves it, holds none of the schema's enum values or string defaults as
// a literal and no literal field default ("def: true"). (That the schema's
// defaults are the agent's is TestSchemaDefaultsAreSetDefaults.)
func TestBuilderTakesEnumsAndDefaultsFromTheSchema(t *testing.T) {
	e := newEnv(t, func(c *api.Config) { c.Schema = manifest.Schema() })
	a := e.do(t, "GET", "/api/workflow/schema", "", "")
	if a.status != 200 {
		t.Fatalf("schema: %d %s", a.status, a.body)
	}
	var schema any
	if err := json.Unmarshal(a.body, &schema); err != nil {
		t.Fatal(err)
	}
	literals := map[string]string{} // literal -> where the schema has it
	var walk func(v any, where string)
	walk = func(v any, where string) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				switch k {
				case "not":
					continue // values refused, not offered
				case "hook":
					// A hook's method enum holds HTTP verbs, which the
					// builder uses for its own requests; the form has no
					// hook fields (the JSON editor keeps them).
					if where == "/$defs" {
						continue
					}
				case "enum":
					for _, x := range e.([]any) {
						literals[fmt.Sprintf("%q", x)] = where + " enum"
					}
				case "default":
					stringsIn(e, func(s string) { literals[fmt.Sprintf("%q", s)] = where + " default" })
				case "const":
					if strings.HasSuffix(where, "/properties/version") { // the manifest version
						literals[fmt.Sprintf("%q", e)] = where + " const"
					}
				}
				walk(e, where+"/"+k)
			}
		case []any:
			for _, e := range v {
				walk(e, where)
			}
		}
	}
	walk(schema, "")
	if len(literals) < 20 {
		t.Fatalf("found only %d enum values and defaults in the schema", len(literals))
	}
	js := e.do(t, "GET", "/builder.js", "", "")
	if js.status != 200 || !strings.Contains(string(js.body), "/api/workflow/schema") {
		t.Fatalf("builder.js: %d, or it does not read the schema", js.status)
	}
	src := string(js.body)
	// An HTML attribute's value, not convert.preallocation's "off".
	src = strings.ReplaceAll(src, `autocomplete: "off"`, "")
	for lit, where := range literals {
		if strings.Contains(src, lit) {
			t.Errorf("builder.js repeats %s (schema %s); take it from the schema", lit, where)
		}
	}
	for _, m := range regexp.MustCompile(`\bdef:\s*(true|false|-?\d|"[^"])[^,}]*`).FindAllString(src, -1) {
		t.Errorf("builder.js has a literal default %q; take it from the schema", m)
	}
}

// stringsIn calls f with every string in v.
func stringsIn(v any, f func(string)) {
	switch v := v.(type) {
	case string:
		f(v)
	case map[string]any:
		for _, e := range v {
			stringsIn(e, f)
		}
	case []any:
		for _, e := range v {
			stringsIn(e, f)
		}
	}
}

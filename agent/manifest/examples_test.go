package manifest_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

// The documented examples are valid manifests.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "docs", "examples", "*"))
	if err != nil || len(files) < 4 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			m, err := manifest.Parse(data)
			if err != nil {
				t.Fatalf("%s:\n%v", f, err)
			}
			if len(m.Split()) == 0 {
				t.Fatal("no VMs")
			}
			// The schema accepts the example with its defaults filled in.
			out, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			var generic any
			if err := json.Unmarshal(out, &generic); err != nil {
				t.Fatal(err)
			}
			if root := loadSchema(t); !schemaValid(root, root, generic) {
				t.Fatalf("schema refuses %s", out)
			}
		})
	}
}

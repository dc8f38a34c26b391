package test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/hyper2kvm/hyper2kvm/"

// TestLayout keeps the dependency direction of docs/ARCHITECTURE.md
// (cmd -> api, dbusapi -> agent/...) and a doc comment on every package.
func TestLayout(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}|{{.Doc}}|{{join .Deps \" \"}}", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	forbidden := map[string][]string{
		// The agent never converts: conversions run only in job units.
		"agent": {"agent/engine", "agent/guest", "agent/fix", "agent/inspect", "agent/boot", "dbusapi", "api", "polkit", "web"},
		// Leaf and engine packages know nothing of the daemon or its front ends.
		"agent/":  {"dbusapi", "api", "web", "cmd/"},
		"dbusapi": {"api", "web"},
		"polkit":  {"agent", "dbusapi", "api"},
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, rest, _ := strings.Cut(line, "|")
		doc, deps, _ := strings.Cut(rest, "|")
		pkg := strings.TrimPrefix(path, module)
		n++
		if doc == "" {
			t.Errorf("package %s has no doc comment saying its job", pkg)
		}
		for scope, bad := range forbidden {
			if pkg != scope && !(strings.HasSuffix(scope, "/") && within(pkg, scope)) {
				continue
			}
			for _, d := range strings.Fields(deps) {
				dep, ok := strings.CutPrefix(d, module)
				if !ok {
					continue
				}
				for _, b := range bad {
					if within(dep, b) {
						t.Errorf("%s depends on %s; see docs/ARCHITECTURE.md", pkg, dep)
					}
				}
			}
		}
	}
	if n < 20 {
		t.Fatalf("go list found only %d packages", n)
	}
}

// within reports whether package pkg is b, or below b when b ends in "/".
func within(pkg, b string) bool {
	if strings.HasSuffix(b, "/") {
		return strings.HasPrefix(pkg, b)
	}
	return pkg == b || strings.HasPrefix(pkg, b+"/")
}

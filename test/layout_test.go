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

// daemonOnly are the packages only hyper2kvmd needs: the agent itself, its
// queue, config, the engine and guest access, and fsnotify. A client
// linking one of them links the daemon.
var daemonOnly = []string{
	module + "agent",
	module + "agent/queue",
	module + "agent/config",
	module + "agent/engine",
	module + "agent/guest",
	"github.com/fsnotify/fsnotify",
}

// TestClientsDoNotLinkTheDaemon keeps hyperctl and the REST bridge to what
// they share with the daemon (wire types, manifest model, job ids, error
// kinds), and those shared packages leaves: `go list -deps` of each names
// none of daemonOnly.
func TestClientsDoNotLinkTheDaemon(t *testing.T) {
	for _, pkg := range []string{
		// the clients
		"cmd/hyperctl", "api", "dbusapi",
		// what they share with the daemon
		"agent/apitype", "agent/jobs", "agent/apierr", "agent/manifest", "agent/progress", "agent/report",
	} {
		out, err := exec.Command("go", "list", "-deps", module+pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, bad := range daemonOnly {
				if dep == bad || strings.HasPrefix(dep, bad+"/") && bad != module+"agent" {
					t.Errorf("%s depends on %s, which only the daemon needs; see docs/ARCHITECTURE.md", pkg, dep)
				}
			}
		}
	}
}

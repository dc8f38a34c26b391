package test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
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
		// Test-only fixtures are never linked into a binary.
		"cmd/": {"agent/hive/hivetest"},
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

// TestAgentDoesNotCallUpIntoItsAPIFace keeps agent/backend.go, the API
// face of package agent (what dbusapi and the REST bridge call), on top:
// no other file of the package calls a function or an Agent method
// declared there. The logic below it (lifecycle, settling, recovery, the
// event bus) is what the face calls, never the other way round.
func TestAgentDoesNotCallUpIntoItsAPIFace(t *testing.T) {
	const face = "backend.go"
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join("..", "agent", "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("cannot list package agent's files: %v", err)
	}
	parsed := map[string]*ast.File{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		parsed[filepath.Base(f)] = af
	}
	if parsed[face] == nil {
		t.Fatalf("agent/%s is gone; update this test and docs/ARCHITECTURE.md", face)
	}
	funcs, methods := map[string]bool{}, map[string]bool{}
	for _, d := range parsed[face].Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok {
			continue
		}
		switch {
		case fd.Recv == nil:
			funcs[fd.Name.Name] = true
		case agentReceiver(fd) != "":
			methods[fd.Name.Name] = true
		}
	}
	for name, af := range parsed {
		if name == face {
			continue
		}
		for _, d := range af.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			recv := agentReceiver(fd)
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				switch fn := call.Fun.(type) {
				case *ast.Ident:
					if funcs[fn.Name] {
						t.Errorf("%s calls %s of the API face (agent/%s); move it down", fset.Position(call.Pos()), fn.Name, face)
					}
				case *ast.SelectorExpr:
					if x, ok := fn.X.(*ast.Ident); ok && recv != "" && x.Name == recv && methods[fn.Sel.Name] {
						t.Errorf("%s calls Agent.%s of the API face (agent/%s); move it down", fset.Position(call.Pos()), fn.Sel.Name, face)
					}
				}
				return true
			})
		}
	}
}

// agentReceiver is the name of fd's receiver when it is a method of
// *Agent, "" otherwise.
func agentReceiver(fd *ast.FuncDecl) string {
	if fd.Recv == nil || len(fd.Recv.List) != 1 || len(fd.Recv.List[0].Names) != 1 {
		return ""
	}
	star, ok := fd.Recv.List[0].Type.(*ast.StarExpr)
	if !ok {
		return ""
	}
	if id, ok := star.X.(*ast.Ident); !ok || id.Name != "Agent" {
		return ""
	}
	return fd.Recv.List[0].Names[0].Name
}

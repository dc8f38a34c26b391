package hooks_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/hooks"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func has(argv []string, s string) bool { return slices.Contains(argv, s) }

func TestCommand(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	sh := script(t, dir, "n.sh", "exit 0\n")
	job := hooks.Job{ID: "j1", Name: "web01", SourcePath: "/srv/web01.vmdk", OutputDir: out}
	tests := []struct {
		name   string
		uid    int64
		outDir string
		h      manifest.Hook
		want   []string // each in argv
		absent []string
		err    string
	}{
		{"admin script", 0, out, manifest.Hook{Type: "script", Path: sh, Args: []string{"{{ job_id }}", "{{ output_dir }}"}, Env: []string{"WHO={{ vm_name }}"}, Timeout: 7},
			[]string{"User=0", "PrivateNetwork=yes", "ProtectSystem=strict", "RuntimeMaxSec=7", "BindReadOnlyPaths=" + out + ":" + hooks.OutputMount,
				"--setenv=WHO=web01", "--setenv=HYPER2KVM_OUTPUT_DIR=" + hooks.OutputMount, "j1", hooks.OutputMount, "--unit=hyper2kvm-hook-j1-post-convert-0.service"}, nil, ""},
		{"user script outside the hook dir", 1000, out, manifest.Hook{Type: "script", Path: sh}, nil, nil, "only an admin's job"},
		{"no output dir yet", 0, filepath.Join(dir, "later"), manifest.Hook{Type: "script", Path: sh, Args: []string{"{{ output_dir }}"}},
			[]string{filepath.Join(dir, "later"), "RuntimeMaxSec=300"}, []string{"BindReadOnlyPaths=" + filepath.Join(dir, "later") + ":" + hooks.OutputMount}, ""},
		{"missing script", 0, out, manifest.Hook{Type: "script", Path: filepath.Join(dir, "gone.sh")}, nil, nil, "cannot run"},
		{"http", 1000, out, manifest.Hook{Type: "http", URL: "https://h.example/{{ vm_name }}", Headers: []string{"X-Job: {{ job_id }}"}},
			[]string{"DynamicUser=yes", "hook-http", "POST", "https://h.example/web01", "X-Job: j1"}, []string{"PrivateNetwork=yes"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			j := job
			j.UID, j.OutputDir = tc.uid, tc.outDir
			r := &hooks.Runner{Job: j, SystemdRun: "systemd-run", Self: "/usr/bin/hyper2kvmd"}
			argv, stdin, err := r.Command("post_convert", 0, tc.h)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !has(argv, w) && !has(argv, "-p") || !slices.ContainsFunc(argv, func(a string) bool { return a == w }) {
					t.Errorf("argv lacks %q: %q", w, argv)
				}
			}
			for _, a := range tc.absent {
				if has(argv, a) {
					t.Errorf("argv has %q: %q", a, argv)
				}
			}
			if tc.h.Type == "http" {
				b, _ := io.ReadAll(stdin)
				if !strings.Contains(string(b), `"job_id":"j1"`) || !strings.Contains(string(b), `"point":"post_convert"`) {
					t.Errorf("body %s", b)
				}
			}
		})
	}
}

// fakeRun is systemd-run without systemd: it runs what follows "--".
const fakeRun = `while [ "$1" != "--" ]; do case "$1" in --setenv=*) export "${1#--setenv=}";; esac; shift; done; shift; exec "$@"`

func TestRun(t *testing.T) {
	dir := t.TempDir()
	sdrun := script(t, dir, "systemd-run", fakeRun)
	ok := script(t, dir, "ok.sh", "echo hello from $HYPER2KVM_POINT for $1\n")
	bad := script(t, dir, "bad.sh", "echo about to fail >&2\nexit 3\n")
	var logged []string
	r := &hooks.Runner{Job: hooks.Job{ID: "j1", Name: "web01"}, SystemdRun: sdrun, Log: func(l string) { logged = append(logged, l) }}

	runs, err := r.Run(context.Background(), "post_fix", []manifest.Hook{
		{Type: "script", Path: ok, Args: []string{"{{ vm_name }}"}},
		{Type: "script", Path: bad, ContinueOnError: true},
		{Type: "script", Path: ok, Args: []string{"again"}},
	})
	if err != nil || len(runs) != 3 {
		t.Fatalf("err %v, runs %+v", err, runs)
	}
	if runs[0].Status != "ok" || runs[0].Output != "hello from post_fix for web01\n" || runs[1].Status != "failed" || runs[1].Error != "exit status 3" ||
		!strings.Contains(runs[1].Output, "about to fail") || runs[2].Status != "ok" {
		t.Errorf("runs %+v", runs)
	}
	if all := strings.Join(logged, "\n"); !strings.Contains(all, "hook post_fix[0]: hello from post_fix for web01") || !strings.Contains(all, "about to fail") {
		t.Errorf("logged:\n%s", all)
	}

	runs, err = r.Run(context.Background(), "pre_fix", []manifest.Hook{{Type: "script", Path: bad}, {Type: "script", Path: ok}})
	if err == nil || !strings.Contains(err.Error(), "hook pre_fix[0] (script "+bad+") failed: exit status 3") || len(runs) != 1 {
		t.Fatalf("a failing hook: err %v, runs %+v", err, runs)
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	sh := script(t, dir, "n.sh", "exit 0\n")
	notExec := filepath.Join(dir, "plain.sh")
	os.WriteFile(notExec, []byte("echo"), 0o644)
	tests := []struct {
		name   string
		uid    int64
		hooks  *manifest.Hooks
		status string
		text   string
	}{
		{"none", 1000, nil, "skipped", "no hooks"},
		{"admin script anywhere", 0, &manifest.Hooks{PostFix: []manifest.Hook{{Type: "script", Path: sh}}}, "ok", ""},
		{"user script outside the hook dir", 1000, &manifest.Hooks{PostFix: []manifest.Hook{{Type: "script", Path: sh}}}, "blocker", "pipeline.hooks.post_fix[0].path: " + sh + " is outside /etc/hyper2kvm/hooks/"},
		{"missing", 0, &manifest.Hooks{PreLoad: []manifest.Hook{{Type: "script", Path: filepath.Join(dir, "gone")}}}, "blocker", "pipeline.hooks.pre_load[0].path"},
		{"not executable", 0, &manifest.Hooks{PreFix: []manifest.Hook{{Type: "http", URL: "http://a"}, {Type: "script", Path: notExec}}}, "blocker", "pre_fix[1].path: " + notExec + " is not an executable file"},
	}
	for _, tc := range tests {
		r := &hooks.Runner{Job: hooks.Job{ID: "j1", UID: tc.uid}}
		c := r.Check(tc.hooks)
		if c.Status != tc.status || !strings.Contains(c.Message, tc.text) || c.Status == "blocker" && c.Fix == "" {
			t.Errorf("%s: %+v, want %s with %q", tc.name, c, tc.status, tc.text)
		}
	}
}

package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

func TestRemoteUnitProperties(t *testing.T) {
	base := []sd.Property{
		{Name: "PrivateNetwork", Value: dbus.MakeVariant(true)},
		{Name: "ExecStopPost", Value: dbus.MakeVariant([]execCommand{{Path: "/bin/sh", Args: []string{"/bin/sh", "-c", "probe"}}})},
	}
	file := []byte(`{"version":"1.0","name":"a","pipeline":{"load":{"source_type":"raw","source_path":"/a.img"}}}`)
	if got := remoteUnitProperties(base, file, "/etc/hyper2kvm/credentials", "/usr/bin/hyper2kvmd", "/var/lib/hyper2kvm/jobs/j1"); fmt.Sprint(got) != fmt.Sprint(base) {
		t.Errorf("a file job's unit changed: %v", got)
	}
	remote := []byte(`{"version":"1.0","name":"a","pipeline":{"load":{"source_type":"vsphere","source":"vc1","vm":"/DC0/vm/a"}}}`)
	got := remoteUnitProperties(base, remote, "/etc/hyper2kvm/credentials", "/usr/bin/hyper2kvmd", "/var/lib/hyper2kvm/jobs/j1")
	byName := map[string]any{}
	for _, p := range got {
		byName[p.Name] = p.Value.Value()
	}
	if byName["PrivateNetwork"] != false {
		t.Errorf("PrivateNetwork = %v, want false", byName["PrivateNetwork"])
	}
	if s := fmt.Sprint(byName["LoadCredentialEncrypted"]); s != "[{source-vc1 /etc/hyper2kvm/credentials/source-vc1.cred}]" {
		t.Errorf("LoadCredentialEncrypted = %s", s)
	}
	if s := fmt.Sprint(byName["ExecStopPost"]); !strings.Contains(s, "probe") || !strings.Contains(s, "--job-dir /var/lib/hyper2kvm/jobs/j1 --remove-snapshot") {
		t.Errorf("ExecStopPost = %s", s)
	}
}

func TestCheckRemote(t *testing.T) {
	dir, creds := t.TempDir(), t.TempDir()
	tp := strings.Repeat("AB:", 31) + "AB"
	if err := os.WriteFile(filepath.Join(dir, "vc1.yaml"), []byte("type: vsphere\nurl: https://vc/sdk\nusername: svc\nthumbprint: "+tp+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("type: vsphere\n"), 0o644)
	load := func(src string) []string {
		m := mustParse(t, `{"version":"1.0","name":"a","pipeline":{"load":{"source_type":"vsphere","source":"`+src+`","vm":"/DC0/vm/a"}}}`)
		return checkRemote("pipeline.load", &m.Pipeline.Load, dir, creds)
	}
	if ps := load("nosuch"); len(ps) != 1 || !strings.Contains(ps[0], "pipeline.load.source: source \"nosuch\" is not defined") {
		t.Errorf("missing source: %v", ps)
	}
	if ps := load("bad"); len(ps) != 1 || !strings.Contains(ps[0], "bad.yaml: url: is required") {
		t.Errorf("invalid source: %v", ps)
	}
	if ps := load("vc1"); len(ps) != 1 || !strings.Contains(ps[0], "hyper2kvmd source set-password vc1") {
		t.Errorf("no password: %v", ps)
	}
	os.WriteFile(filepath.Join(creds, "source-vc1.cred"), []byte("sealed"), 0o600)
	if ps := load("vc1"); len(ps) != 0 {
		t.Errorf("good source: %v", ps)
	}
}

func mustParse(t *testing.T, s string) *manifest.Manifest {
	t.Helper()
	m, err := manifest.Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

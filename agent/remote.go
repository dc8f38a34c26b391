package agent

import (
	"encoding/json"
	"fmt"
	"os"

	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/sources"
)

// A job that reads its VM from a registered source (load.source_type
// vsphere) differs from a file job in two settings of its unit: it has
// the network (a file job's unit has none), and it gets the source's
// password as an encrypted systemd credential, which systemd decrypts
// into the unit's own $CREDENTIALS_DIRECTORY: never its environment, its
// command line, the journal or the report.

// remoteLoad is the load section of a job's manifest when it names a
// source, nil otherwise.
func remoteLoad(vmJSON []byte) *manifest.Load {
	var vm manifest.Manifest
	if json.Unmarshal(vmJSON, &vm) != nil || vm.Pipeline == nil || !vm.Pipeline.Load.IsRemote() {
		return nil
	}
	return &vm.Pipeline.Load
}

// remoteUnitProperties adapts props for a job of vmJSON that reads from a
// source; props are returned unchanged for a file job.
// Its ExecStopPost also removes a snapshot of the VM the worker took
// and could not remove (killed mid-export): self is the agent's binary.
func remoteUnitProperties(props []sd.Property, vmJSON []byte, credDir, self, jobDir string) []sd.Property {
	l := remoteLoad(vmJSON)
	if l == nil {
		return props
	}
	out := props[:0:0]
	for _, p := range props {
		switch p.Name {
		case "PrivateNetwork":
			continue
		case "ExecStopPost":
			if cmds, ok := p.Value.Value().([]execCommand); ok {
				cmds = append(cmds, execCommand{Path: self, Args: []string{self, "worker", "--job-dir", jobDir, "--remove-snapshot"}, IgnoreFailure: true})
				p = sd.Property{Name: p.Name, Value: dbus.MakeVariant(cmds)}
			}
		}
		out = append(out, p)
	}
	type cred struct{ ID, Path string }
	return append(out,
		sd.Property{Name: "PrivateNetwork", Value: dbus.MakeVariant(false)},
		sd.Property{Name: "LoadCredentialEncrypted", Value: dbus.MakeVariant([]cred{{sources.CredentialID(l.Source), sources.CredentialPath(credDir, l.Source)}})},
	)
}

// checkRemote is the agent's check of a load that names a source: the
// source exists and is valid, and its password is set. (Who may use it
// is polkit's io.hyper2kvm.agent.use-source, checked by the caller.)
func checkRemote(path string, l *manifest.Load, srcDir, credDir string) []string {
	src, err := sources.Get(srcDir, l.Source)
	if err != nil {
		return []string{fmt.Sprintf("%s.source: %v", path, err)}
	}
	if _, err := os.Stat(sources.CredentialPath(credDir, src.Name)); err != nil {
		return []string{fmt.Sprintf("%s.source: source %s has no password: run `hyper2kvmd source set-password %s` as root", path, src.Name, src.Name)}
	}
	return nil
}

// sourceDirs are where the agent reads sources and their credentials;
// empty fields are the defaults (WithSources changes them for tests).
type sourceDirs struct{ sources, credentials string }

func (s sourceDirs) dir() string {
	if s.sources == "" {
		return sources.DefaultDir
	}
	return s.sources
}

func (s sourceDirs) creds() string {
	if s.credentials == "" {
		return sources.DefaultCredentialDir
	}
	return s.credentials
}

// WithSources reads the source registry from dir and the passwords from
// credDir instead of /etc/hyper2kvm/{sources.d,credentials}.
func WithSources(dir, credDir string) Option {
	return func(a *Agent) { a.srcs = sourceDirs{dir, credDir} }
}

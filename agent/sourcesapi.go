package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/sources"
)

// The agent's own unit has no network (PrivateNetwork=yes, AF_UNIX only),
// and that stays so: a source is browsed by `hyper2kvmd source browse` in
// a short transient unit of its own, started with systemd-run over the
// bus, with the network, a dynamic user, and the source's password as an
// encrypted credential like a job's. Its answer is one JSON object on
// stdout (--pipe).

// browseTimeout bounds one browse unit.
const browseTimeout = 2 * time.Minute

// Sources is ListSources: every source file, valid or not (with its
// problem), and whether its password is set.
func (a *Agent) Sources() ([]apitype.Source, error) {
	reg, err := sources.Load(a.srcs.dir())
	if err != nil {
		return nil, apierr.New(apierr.Internal, "cannot list sources: %v", err)
	}
	var out []apitype.Source
	for _, n := range reg.Names() {
		s := reg.Sources[n]
		_, perr := os.Stat(sources.CredentialPath(a.srcs.creds(), n))
		out = append(out, apitype.Source{Name: n, Type: s.Type, URL: s.URL, Username: s.Username, Datacenter: s.Datacenter,
			Thumbprint: s.Thumbprint, Insecure: s.Insecure, MaxParallelExports: s.MaxParallelExports, Description: s.Description, PasswordSet: perr == nil})
	}
	for _, e := range reg.Errors {
		var se *sources.Error
		name := ""
		if errors.As(e, &se) {
			name = strings.TrimSuffix(se.File[strings.LastIndexByte(se.File, '/')+1:], ".yaml")
		}
		out = append(out, apitype.Source{Name: name, Error: e.Error()})
	}
	return out, nil
}

// BrowseSource lists the folder path of source name (see Browse in
// agent/vsphere).
func (a *Agent) BrowseSource(ctx context.Context, name, path string) ([]apitype.InventoryEntry, error) {
	src, err := sources.Get(a.srcs.dir(), name)
	if err != nil {
		if errors.Is(err, sources.ErrNotFound) {
			return nil, apierr.New(apierr.NoSuchSource, "%v", err)
		}
		return nil, apierr.New(apierr.SourceFailed, "%v", err)
	}
	cred := sources.CredentialPath(a.srcs.creds(), src.Name)
	if _, err := os.Stat(cred); err != nil {
		return nil, apierr.New(apierr.SourceFailed, "source %s has no password: run `hyper2kvmd source set-password %s` as root", src.Name, src.Name)
	}
	if path == "" {
		path = "/"
	}
	if strings.ContainsRune(path, 0) || len(path) > 4096 {
		return nil, apierr.New(apierr.InvalidArgs, "cannot browse: the path is not an inventory path")
	}
	ctx, cancel := context.WithTimeout(ctx, browseTimeout)
	defer cancel()
	var rnd [6]byte
	rand.Read(rnd[:])
	unit := "hyper2kvm-browse-" + hex.EncodeToString(rnd[:]) + ".service"
	args := []string{"--quiet", "--pipe", "--wait", "--collect", "--service-type=exec", "--unit=" + unit, "--slice=" + SliceName,
		"--description=hyper2kvm: browse source " + src.Name,
		"-p", "LoadCredentialEncrypted=" + sources.CredentialID(src.Name) + ":" + cred,
		"-p", "DynamicUser=yes", "-p", "ProtectSystem=strict", "-p", "ProtectHome=yes", "-p", "PrivateTmp=yes",
		"-p", "NoNewPrivileges=yes", "-p", "RuntimeMaxSec=" + fmt.Sprint(int(browseTimeout/time.Second)),
		"--", a.self, "source", "browse", "--json", "--sources-dir=" + a.srcs.dir(), src.Name, path}
	cmd := exec.CommandContext(ctx, "systemd-run", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var ans struct {
		Entries []apitype.InventoryEntry `json:"entries"`
		Error   string                   `json:"error"`
		Kind    string                   `json:"kind"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &ans); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if runErr != nil {
			msg = runErr.Error() + ": " + msg
		}
		return nil, apierr.New(apierr.SourceFailed, "cannot browse source %s: the browse unit gave no answer (%s)", src.Name, msg)
	}
	switch {
	case ans.Error == "":
		return ans.Entries, nil
	case ans.Kind == "not-found":
		return nil, apierr.New(apierr.NoSuchSource, "%s", ans.Error)
	default:
		return nil, apierr.New(apierr.SourceFailed, "%s", ans.Error)
	}
}

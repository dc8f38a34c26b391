package dbusapi

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/godbus/dbus/v5"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/polkit"
)

// SourceBackend is what a Backend that reads VMs from sources adds
// (docs/SOURCES.md); a Backend without it answers ListSources with none
// and BrowseSource with NoSuchSource.
type SourceBackend interface {
	Sources() ([]apitype.Source, error)
	BrowseSource(ctx context.Context, name, path string) ([]apitype.InventoryEntry, error)
}

// DetailAuthorizer is an Authorizer that passes details to polkit rules;
// without it the details are dropped.
type DetailAuthorizer interface {
	AuthorizeDetails(ctx context.Context, sender, action string, details map[string]string, interactive bool) (bool, error)
}

// sourceRow is one (sssssbs) of ListSources.
type sourceRow struct {
	Name, Type, URL, Username, Datacenter string
	PasswordSet                           bool
	Error                                 string
}

func (s *Server) addSourceMethods(m map[string]any) map[string]any {
	m["ListSources"] = func(msg dbus.Message, sender dbus.Sender) ([]sourceRow, *dbus.Error) {
		s.touch()
		if err := s.authorize(msg, sender, polkit.ActionSubmit, "list sources"); err != nil {
			return nil, toDBusError(err)
		}
		rows := []sourceRow{}
		sb, ok := s.b.(SourceBackend)
		if !ok {
			return rows, nil
		}
		list, err := sb.Sources()
		if err != nil {
			return nil, toDBusError(err)
		}
		for _, x := range list {
			rows = append(rows, sourceRow{x.Name, x.Type, x.URL, x.Username, x.Datacenter, x.PasswordSet, x.Error})
		}
		return rows, nil
	}
	m["BrowseSource"] = func(msg dbus.Message, sender dbus.Sender, name, path string) (string, *dbus.Error) {
		s.touch()
		if err := s.authorizeSource(msg, sender, name, "browse source "+name); err != nil {
			return "", toDBusError(err)
		}
		sb, ok := s.b.(SourceBackend)
		if !ok {
			return "", toDBusError(apierr.New(apierr.NoSuchSource, "cannot browse source %s: this agent reads no sources", name))
		}
		list, err := sb.BrowseSource(s.ctx, name, path)
		if err != nil {
			return "", toDBusError(err)
		}
		if list == nil {
			list = []apitype.InventoryEntry{}
		}
		b, err := json.Marshal(list)
		if err != nil {
			return "", toDBusError(apierr.New(apierr.Internal, "cannot encode the inventory: %v", err))
		}
		return string(b), nil
	}
	return m
}

// authorizeSource asks polkit for io.hyper2kvm.agent.use-source with the
// source's name as the detail "source".
func (s *Server) authorizeSource(msg dbus.Message, sender dbus.Sender, name, what string) error {
	da, ok := s.authz.(DetailAuthorizer)
	if !ok {
		return s.authorize(msg, sender, polkit.ActionUseSource, what)
	}
	interactive := msg.Flags&dbus.FlagAllowInteractiveAuthorization != 0
	allowed, err := da.AuthorizeDetails(s.ctx, string(sender), polkit.ActionUseSource, map[string]string{"source": name}, interactive)
	if allowed && err == nil {
		return nil
	}
	reason := "not authorized"
	if err != nil {
		reason = err.Error()
	}
	s.log.Info("access denied", "sender", sender, "action", polkit.ActionUseSource, "source", name, "reason", reason)
	return apierr.New(apierr.AccessDenied, "cannot %s: %s (polkit action %s, source %s)", what, reason, polkit.ActionUseSource, name)
}

// authorizeSources checks use-source for every source a submitted
// manifest reads from.
func (s *Server) authorizeSources(msg dbus.Message, sender dbus.Sender, text string) error {
	if !strings.Contains(text, manifest.SourceVSphere) {
		return nil
	}
	m, err := manifest.Parse([]byte(text))
	if err != nil || m == nil {
		return nil // Submit reports the manifest's problems
	}
	for _, name := range m.Sources() {
		if err := s.authorizeSource(msg, sender, name, "convert VMs from source "+name); err != nil {
			return err
		}
	}
	return nil
}

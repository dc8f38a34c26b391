// Package apierr is the one table of errors that cross the agent's API. Each
// kind maps to a D-Bus error name (used by dbusapi) and an HTTP status (used
// by the REST bridge), so hyperctl, busctl and HTTP clients see the same
// failure the same way.
package apierr

import (
	"errors"
	"fmt"
)

// Kind is a kebab-case error kind, stable on the wire.
type Kind string

const (
	NoSuchJob       Kind = "no-such-job"
	InvalidManifest Kind = "invalid-manifest"
	AccessDenied    Kind = "access-denied"
	InvalidState    Kind = "invalid-state" // e.g. cancel of a finished job
	InvalidArgs     Kind = "invalid-args"
	QueueFull       Kind = "queue-full"
	// ConfigInvalid: the agent is up but its configuration file is not
	// valid, so it serves nothing but this error (file, line, key and a
	// suggestion in the message) until the file is fixed.
	ConfigInvalid Kind = "config-invalid"
	// NoSuchSource: no source of that name, or no such folder or VM in
	// it (docs/SOURCES.md).
	NoSuchSource Kind = "no-such-source"
	// SourceFailed: a source could not be reached or refused the agent
	// (its certificate, the password); the message says what to fix.
	SourceFailed Kind = "source-failed"
	Internal     Kind = "internal"
)

// Row is one line of the table.
type Row struct {
	Kind Kind
	DBus string // D-Bus error name
	HTTP int    // HTTP status
}

// Table lists every kind, Internal last (Lookup's fallback). Keep dbusapi's introspection docs and docs/API.md in step.
var Table = []Row{
	{NoSuchJob, "io.hyper2kvm.Agent1.Error.NoSuchJob", 404},
	{InvalidManifest, "io.hyper2kvm.Agent1.Error.InvalidManifest", 422},
	{AccessDenied, "io.hyper2kvm.Agent1.Error.AccessDenied", 403},
	{InvalidState, "io.hyper2kvm.Agent1.Error.InvalidState", 409},
	{InvalidArgs, "io.hyper2kvm.Agent1.Error.InvalidArgs", 400},
	{QueueFull, "io.hyper2kvm.Agent1.Error.QueueFull", 503},
	{ConfigInvalid, "io.hyper2kvm.Agent1.Error.ConfigInvalid", 503},
	{NoSuchSource, "io.hyper2kvm.Agent1.Error.NoSuchSource", 404},
	{SourceFailed, "io.hyper2kvm.Agent1.Error.SourceFailed", 502},
	{Internal, "io.hyper2kvm.Agent1.Error.Internal", 500},
}

// Lookup returns the row of k, and the Internal row for an unknown kind.
func Lookup(k Kind) Row {
	for _, r := range Table {
		if r.Kind == k {
			return r
		}
	}
	return Table[len(Table)-1]
}

// ByDBusName returns the row whose D-Bus name is name.
func ByDBusName(name string) (Row, bool) {
	for _, r := range Table {
		if r.DBus == name {
			return r, true
		}
	}
	return Row{}, false
}

// Error is an API error: a kind, a lowercase message ("cannot ...") and,
// for InvalidManifest, the list of "field.path: problem" details.
type Error struct {
	Kind    Kind
	Message string
	Details []string
}

func (e *Error) Error() string { return e.Message }

// New returns an *Error of kind k.
func New(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

// KindOf returns the kind of err, Internal when it carries none.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

// Is reports whether err is an *Error of kind k.
func Is(err error, k Kind) bool { return err != nil && KindOf(err) == k }

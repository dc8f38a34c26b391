package dbusapi

import (
	"context"
	"errors"
	"time"

	"github.com/godbus/dbus/v5"
)

// Authorizer decides whether the bus peer sender may perform a polkit action.
// interactive is the caller's ALLOW_INTERACTIVE_AUTHORIZATION flag. Any error
// means deny.
type Authorizer interface {
	Authorize(ctx context.Context, sender, action string, interactive bool) (bool, error)
}

// Server exports a Backend on a bus connection.
type Server struct{}

// NewServer exports the manager and job objects for b on conn, follows b's
// events to keep job objects and signals current, and then requests BusName.
func NewServer(conn *dbus.Conn, b Backend, authz Authorizer) (*Server, error) {
	return nil, errors.New("dbusapi: server not implemented yet")
}

// LastActivity is when the server last handled a method call; the agent uses
// it for its idle exit.
func (s *Server) LastActivity() time.Time { return time.Time{} }

// Close releases the name and unexports everything.
func (s *Server) Close() error { return nil }

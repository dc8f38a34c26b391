package dbusapi

import (
	"context"
	"errors"

	"github.com/hyper2kvm/hyper2kvm/agent"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// Client talks to the agent over the system bus (or the bus at
// DBUS_SYSTEM_BUS_ADDRESS). Errors the agent returns come back as
// *apierr.Error with the kind from the D-Bus error name; a bus that cannot be
// reached is ErrNoBus. Its zero value is not usable; use Dial.
type Client struct{}

// ErrNoBus means the system bus could not be reached.
var ErrNoBus = errors.New("cannot connect to the system D-Bus")

var errTODO = errors.New("dbusapi: client not implemented yet")

// Dial connects to the system bus.
func Dial(ctx context.Context) (*Client, error) { return nil, errTODO }

// Close closes the connection.
func (c *Client) Close() error { return nil }

func (c *Client) GetStatus(ctx context.Context) (agent.Status, error) { return agent.Status{}, errTODO }
func (c *Client) ListJobs(ctx context.Context, f agent.Filter) ([]jobs.Job, error) {
	return nil, errTODO
}
func (c *Client) GetJob(ctx context.Context, id string) (jobs.Job, error) { return jobs.Job{}, errTODO }
func (c *Client) Validate(ctx context.Context, manifest []byte) (bool, []string, error) {
	return false, nil, errTODO
}

// Submit sends a manifest; interactive allows polkit to ask for a password.
func (c *Client) Submit(ctx context.Context, manifest []byte, o agent.SubmitOptions, interactive bool) ([]jobs.Job, error) {
	return nil, errTODO
}
func (c *Client) Cancel(ctx context.Context, id string, interactive bool) error { return errTODO }
func (c *Client) Retry(ctx context.Context, id string, interactive bool) (jobs.Job, error) {
	return jobs.Job{}, errTODO
}

// Watch subscribes to job signals (before returning, so nothing is missed)
// and delivers events until ctx ends.
func (c *Client) Watch(ctx context.Context) (<-chan agent.Event, error) { return nil, errTODO }

package dbusapi

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/hyper2kvm/hyper2kvm/agent/analytics"
	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/templates"
)

// Analyst is a Backend that summarises its jobs (GetAnalytics); separate
// from Backend so that test agents need not.
type Analyst interface {
	Analytics(since, until time.Time) analytics.Summary
}

// getAnalytics is GetAnalytics(since_usec, until_usec): the summary of
// the jobs that finished in that window (microseconds since the epoch;
// until 0 is now), as JSON, since its shape (days, stages, failures,
// hosts) is the analytics package's. Open to every caller like ListJobs.
func (s *Server) getAnalytics(since, until int64) (string, *dbus.Error) {
	s.touch()
	a, ok := s.b.(Analyst)
	if !ok {
		return "", toDBusError(apierr.New(apierr.InvalidState, "cannot compute analytics: this agent keeps no job records"))
	}
	to := time.Now()
	if until > 0 {
		to = time.UnixMicro(until)
	}
	data, err := json.Marshal(a.Analytics(time.UnixMicro(since), to))
	if err != nil {
		return "", toDBusError(apierr.New(apierr.Internal, "cannot encode analytics: %v", err))
	}
	return string(data), nil
}

// Analytics summarises the jobs that finished in [since, until) (zero
// until: now): jobs per day, bytes, throughput, stage times, failures.
func (c *Client) Analytics(ctx context.Context, since, until time.Time) (analytics.Summary, error) {
	var s analytics.Summary
	what := "compute analytics"
	var u int64
	if !until.IsZero() {
		u = until.UnixMicro()
	}
	call, err := c.call(ctx, what, ManagerPath, ManagerIface+".GetAnalytics", false, since.UnixMicro(), u)
	if err != nil {
		return s, err
	}
	var data string
	if err := call.Store(&data); err != nil {
		return s, fmt.Errorf("%s: %w", what, err)
	}
	if err := json.Unmarshal([]byte(data), &s); err != nil {
		return s, fmt.Errorf("%s: cannot read the answer: %w", what, err)
	}
	return s, nil
}

// TemplateLister is a Backend that lists the manifest templates
// (ListTemplates).
type TemplateLister interface {
	Templates() ([]*templates.Template, error)
}

// listTemplates is ListTemplates(): every template with its parameters,
// partial manifest and problems, as JSON (the shape of
// GET /api/workflow/templates). Open to every caller: templates are files
// any local user may read.
func (s *Server) listTemplates() (string, *dbus.Error) {
	s.touch()
	l, ok := s.b.(TemplateLister)
	if !ok {
		return "", toDBusError(apierr.New(apierr.InvalidState, "cannot list templates: this agent has none"))
	}
	ts, err := l.Templates()
	if err != nil {
		return "", toDBusError(apierr.New(apierr.Internal, "cannot list templates: %v", err))
	}
	data, err := json.Marshal(map[string]any{"templates": ts})
	if err != nil {
		return "", toDBusError(apierr.New(apierr.Internal, "cannot encode templates: %v", err))
	}
	return string(data), nil
}

// Templates lists the manifest templates the agent sees.
func (c *Client) Templates(ctx context.Context) ([]*templates.Template, error) {
	what := "list templates"
	call, err := c.call(ctx, what, ManagerPath, ManagerIface+".ListTemplates", false)
	if err != nil {
		return nil, err
	}
	var data string
	if err := call.Store(&data); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	var out struct {
		Templates []*templates.Template `json:"templates"`
	}
	if err := json.Unmarshal([]byte(data), &out); err != nil {
		return nil, fmt.Errorf("%s: cannot read the answer: %w", what, err)
	}
	return out.Templates, nil
}

package dbusapi

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/hyper2kvm/hyper2kvm/agent/analytics"
	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
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

package api

import (
	"context"
	"net/http"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/analytics"
)

// getAnalytics: GET /api/workflow/analytics?since=7d, the agent's
// workflow numbers (hyperctl report's): jobs per day by outcome, bytes,
// throughput, stage times p50/p95, failures by stage and reason, hosts.
func (s *Server) getAnalytics(w http.ResponseWriter, r *http.Request) {
	now := s.cfg.Now()
	since := r.URL.Query().Get("since")
	if since == "" {
		since = "7d"
	}
	from, err := analytics.ParseSince(since, now)
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "since: "+err.Error(), nil)
		return
	}
	sum, err := s.cfg.Client.Analytics(r.Context(), from, now)
	if err != nil {
		fail(w, r, "compute analytics", err)
		return
	}
	writeJSON(w, http.StatusOK, sum)
}

// Analytics is the agent's GetAnalytics, through the lazily dialled bus.
func (l *Lazy) Analytics(ctx context.Context, since, until time.Time) (analytics.Summary, error) {
	c, err := l.get(ctx)
	if err != nil {
		return analytics.Summary{}, err
	}
	s, err := c.Analytics(ctx, since, until)
	return s, l.check(c, err)
}

package api

import (
	"bytes"
	"context"
	"net/http"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
)

// ReportReader is a Client that reads jobs' reports (the agent's
// GetJobReport); the bridge answers 501 for one that does not.
type ReportReader interface {
	JobReport(ctx context.Context, id string, interactive bool) ([]byte, error)
}

// getJobReport: GET /api/workflow/jobs/{id}/report, the engine's report
// (docs/REPORT.md) as the agent keeps it: the guest INSPECT found, every
// change FIX made with before and after, the warnings. 404 while the job
// has none.
func (s *Server) getJobReport(w http.ResponseWriter, r *http.Request) {
	id, ok := jobID(w, r)
	if !ok {
		return
	}
	rr, ok := s.client(r).(ReportReader)
	if !ok {
		writeError(w, http.StatusNotImplemented, apierr.Internal, "cannot read reports through this bridge", nil)
		return
	}
	rep, err := rr.JobReport(r.Context(), id, false)
	if err != nil {
		fail(w, r, "read the report of job "+id, err)
		return
	}
	if len(bytes.TrimSpace(rep)) == 0 {
		writeError(w, http.StatusNotFound, CodeNotFound, "job "+id+" has no report yet: it is written when the job ends", nil)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(rep)
}

// JobReport is the agent's GetJobReport.
func (l *Lazy) JobReport(ctx context.Context, id string, interactive bool) ([]byte, error) {
	c, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	rr, ok := c.(ReportReader)
	if !ok {
		return nil, apierr.New(apierr.Internal, "cannot read the report of job %s: the agent's client does not read reports", id)
	}
	rep, err := rr.JobReport(ctx, id, interactive)
	return rep, l.check(c, err)
}

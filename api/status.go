package api

import (
	"context"
	"net/http"
	"time"
)

// getStatus: GET /api/workflow/status, the agent's GetStatus as is.
func (s *Server) getStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.cfg.Client.GetStatus(r.Context())
	if err != nil {
		fail(w, r, "get the agent's status", err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// healthAnswer is the answer of /health.
type healthAnswer struct {
	Status        string `json:"status"`
	BridgeVersion string `json:"bridge_version"`
	AgentVersion  string `json:"agent_version"`
	AgentRunning  bool   `json:"agent_running"`
}

// health: GET /health. 200 when the bridge can reach the agent over D-Bus,
// 503 (agent-unreachable) when it cannot.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	st, err := s.cfg.Client.GetStatus(ctx)
	if err != nil {
		fail(w, r, "reach the agent", err)
		return
	}
	writeJSON(w, http.StatusOK, healthAnswer{Status: "ok", BridgeVersion: s.cfg.Version, AgentVersion: st.Version, AgentRunning: st.Running})
}

package api

import (
	"context"
	"net/http"
	"path/filepath"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
)

// statusAnswer is the agent's GetStatus plus what a first-time user needs
// to start: where to drop images and manifests, and on which host.
type statusAnswer struct {
	apitype.Status
	// DropDir is the folder hyper2kvmd.path watches (to_be_processed/ of
	// the workflow directory).
	DropDir string `json:"drop_dir"`
	Host    string `json:"host"`
}

// getStatus: GET /api/workflow/status, the agent's GetStatus with the drop
// folder and host name.
func (s *Server) getStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.cfg.Client.GetStatus(r.Context())
	if err != nil {
		fail(w, r, "get the agent's status", err)
		return
	}
	writeJSON(w, http.StatusOK, statusAnswer{Status: st, DropDir: filepath.Join(s.cfg.WorkflowDir, "to_be_processed"), Host: s.cfg.Hostname})
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

package api

import "net/http"

// getSchema: GET /api/workflow/schema, the manifest's JSON Schema.
func (s *Server) getSchema(w http.ResponseWriter, r *http.Request) {
	if len(s.cfg.Schema) == 0 {
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "cannot serve the schema: this bridge was built without it", nil)
		return
	}
	w.Header().Set("Content-Type", "application/schema+json")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(s.cfg.Schema)
}

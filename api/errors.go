package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/dbusapi"
)

// Error codes that exist only on HTTP; the others are apierr kinds.
const (
	CodeBadRequest       apierr.Kind = "bad-request"        // 400: the body is not JSON/YAML
	CodeUnauthorized     apierr.Kind = "unauthorized"       // 401: no or wrong bearer token
	CodeForbidden        apierr.Kind = "forbidden"          // 403: writes disabled, or Host not allowed
	CodeNotFound         apierr.Kind = "not-found"          // 404: no such endpoint
	CodeMethodNotAllowed apierr.Kind = "method-not-allowed" // 405
	CodeBodyTooLarge     apierr.Kind = "body-too-large"     // 413
	CodeAgentUnreachable apierr.Kind = "agent-unreachable"  // 503: no bus, or the agent does not answer
	CodeUnavailable      apierr.Kind = "unavailable"        // 503: a part the bridge was built without
	CodeBusy             apierr.Kind = "busy"               // 503: too many request bodies in flight; Retry-After says when to retry
)

// errorBody is the JSON of every error answer.
type errorBody struct {
	Error errorJSON `json:"error"`
}

type errorJSON struct {
	Code    apierr.Kind `json:"code"`
	Message string      `json:"message"`
	Details []string    `json:"details"`
}

// writeError answers with status and the error JSON.
func writeError(w http.ResponseWriter, status int, code apierr.Kind, msg string, details []string) {
	if details == nil {
		details = []string{}
	}
	writeJSON(w, status, errorBody{errorJSON{Code: code, Message: msg, Details: details}})
}

// writeJSON answers with status and v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// classify maps an error from the client to status, code and details. What
// counts as "the agent is not there" is dbusapi's one list.
func classify(err error) (int, apierr.Kind, []string) {
	if dbusapi.IsUnreachable(err) {
		return http.StatusServiceUnavailable, CodeAgentUnreachable, nil
	}
	var ae *apierr.Error
	if errors.As(err, &ae) {
		return apierr.Lookup(ae.Kind).HTTP, apierr.Lookup(ae.Kind).Kind, ae.Details
	}
	switch {
	case dbusapi.IsAccessDenied(err):
		return http.StatusForbidden, apierr.AccessDenied, nil
	case errors.Is(err, context.DeadlineExceeded):
		// The bridge's own deadline for the call ran out.
		return http.StatusServiceUnavailable, CodeAgentUnreachable, nil
	}
	return http.StatusInternalServerError, apierr.Internal, nil
}

// fail answers with the error the client returned while doing what.
func fail(w http.ResponseWriter, r *http.Request, what string, err error) {
	if r.Context().Err() != nil {
		// The HTTP client went away; nobody reads the answer.
		return
	}
	status, code, details := classify(err)
	msg := err.Error()
	if status == http.StatusServiceUnavailable && code == CodeAgentUnreachable {
		msg = "cannot reach the hyper2kvm agent: " + msg
	} else if !strings.HasPrefix(msg, "cannot ") && status >= 500 && code != apierr.ConfigInvalid {
		// A configuration error is the answer whatever was asked: keep
		// its message as the agent wrote it (file, line, key).
		msg = "cannot " + what + ": " + msg
	}
	if status >= 500 {
		slog.Warn("request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	writeError(w, status, code, msg, details)
}

// Package api is the REST bridge: it maps the /api/workflow/* endpoints, the
// Server-Sent Events stream, /health and /metrics onto the agent's D-Bus API
// (through dbusapi's client) and serves the embedded dashboard from package
// web. It holds no job state of its own: every answer comes from the agent,
// so HTTP clients see the same jobs, validation and errors as hyperctl.
// docs/API.md documents every endpoint and the authorization model.
package api

import (
	"context"
	"io/fs"
	"net/http"
	"os"
	"time"

	"github.com/gorilla/mux"

	"github.com/hyper2kvm/hyper2kvm/agent/analytics"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/templates"
	"github.com/hyper2kvm/hyper2kvm/web"
)

// Client is the part of dbusapi.Client the bridge uses; tests swap in a fake
// (see package apitest).
type Client interface {
	GetStatus(ctx context.Context) (apitype.Status, error)
	// GetMetrics is the agent's totals over its jobs, for GET /metrics.
	GetMetrics(ctx context.Context) (apitype.Metrics, error)
	ListJobs(ctx context.Context, f apitype.Filter) ([]jobs.Job, error)
	// ListJobsPage is page p of the jobs f selects, and how many it selects.
	ListJobsPage(ctx context.Context, f apitype.Filter, p apitype.Page) ([]jobs.Job, int, error)
	GetJob(ctx context.Context, id string) (jobs.Job, error)
	Validate(ctx context.Context, manifest []byte) (bool, []string, error)
	Submit(ctx context.Context, manifest []byte, o apitype.SubmitOptions, interactive bool) ([]jobs.Job, error)
	Cancel(ctx context.Context, id string, interactive bool) error
	Retry(ctx context.Context, id string, interactive bool) (jobs.Job, error)
	// JobLog is the agent's GetJobLog: up to lines lines of job id's
	// journal after cursor after, in format short or json, and the cursor
	// to go on from. The agent reads the journal; the bridge has no access.
	JobLog(ctx context.Context, id string, lines int, after, format string, interactive bool) ([]string, string, error)
	Watch(ctx context.Context) (<-chan apitype.Event, error)
	// Analytics is the agent's GetAnalytics over [since, until).
	Analytics(ctx context.Context, since, until time.Time) (analytics.Summary, error)
}

// DefaultMaxBody is the largest request body accepted (a manifest).
const DefaultMaxBody = 1 << 20

// Config is what a Server needs. Only Client is required.
type Config struct {
	Client Client
	// Token is the bearer token writes must present; empty refuses every
	// write with 403 (the bridge was started without a token file).
	Token string
	// Schema is the manifest JSON Schema served at /api/workflow/schema.
	Schema []byte
	// Version is the bridge's own version, reported by /health.
	Version string
	// MaxBody bounds request bodies; 0 means DefaultMaxBody.
	MaxBody int64
	// MaxInFlight bounds the bytes of request bodies held at once (a
	// chunked body counts as MaxBody); past it requests are answered 503.
	// 0 means DefaultMaxInFlight; it is raised to MaxBody if lower.
	MaxInFlight int64
	// WorkflowDir is the agent's manifest-workflow directory, used to
	// report manifest_path when the agent gives a bare file name.
	WorkflowDir string
	// AllowedHosts are extra Host header names accepted on TCP besides
	// localhost and loopback addresses (DNS-rebinding protection).
	AllowedHosts []string
	// Web is the dashboard's file tree; nil uses the embedded one.
	Web fs.FS
	// Templates is the manifest templates library; zero uses
	// templates.Default().
	Templates templates.Library
	// Now is the clock; nil uses time.Now.
	Now func() time.Time
	// Hostname is the machine's name shown as each job's host and in the
	// status; "" uses os.Hostname.
	Hostname string
	// UserDial opens the agent connection of a per-user API token; nil
	// refuses such tokens (401).
	UserDial UserDial
}

// Server is the bridge's HTTP handler plus the activity tracking used for
// exit-on-idle.
type Server struct {
	cfg    Config
	router *mux.Router
	idle   *Idle
	bodies *bodyBudget
	parses chan struct{}
	users  userSessions // per-user token sessions (usertokens.go)
}

// New builds the handler from cfg.
func New(cfg Config) *Server {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	cfg.MaxInFlight = max(cfg.MaxInFlight, cfg.MaxBody)
	if cfg.Web == nil {
		cfg.Web = web.FS()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Templates.Dirs == nil {
		cfg.Templates = templates.Default()
	}
	if cfg.WorkflowDir == "" {
		cfg.WorkflowDir = "/var/lib/hyper2kvm/manifest-workflow"
	}
	if cfg.Hostname == "" {
		// Without a name the views say "" rather than fail to serve.
		cfg.Hostname, _ = os.Hostname()
	}
	s := &Server{cfg: cfg, idle: NewIdle(cfg.Now), bodies: &bodyBudget{limit: cfg.MaxInFlight}, parses: make(chan struct{}, maxParses)}
	s.router = s.routes()
	return s
}

// Idle reports the server's activity, for exit-on-idle.
func (s *Server) Idle() *Idle { return s.idle }

// ServeHTTP tracks the request for exit-on-idle and dispatches it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	done := s.idle.Begin()
	defer done()
	// No handler may read more than MaxBody of any body, whether it
	// means to read one or not.
	if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
	}
	securityHeaders(w.Header())
	s.router.ServeHTTP(w, r)
}

// securityHeaders keep the dashboard from loading anything from elsewhere
// and from being framed by another site.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; connect-src 'self'; "+
		"frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

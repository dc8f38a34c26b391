package api

import (
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"

	"github.com/gorilla/mux"
)

// route is one line of the command table: every endpoint the bridge serves,
// with its access rule.
type route struct {
	Method string
	Path   string
	Access Access
	Handle func(s *Server, w http.ResponseWriter, r *http.Request)
}

// routes is the one table of endpoints; docs/API.md follows its order.
var routes = []route{
	{"GET", "/api/workflow/status", Open, (*Server).getStatus},
	{"GET", "/api/workflow/jobs", Open, (*Server).listJobs},
	{"GET", "/api/workflow/jobs/active", Open, (*Server).listActiveJobs},
	{"GET", "/api/workflow/jobs/{id}", Detail, (*Server).getJob},
	{"POST", "/api/workflow/jobs/{id}/cancel", Write, (*Server).cancelJob},
	{"POST", "/api/workflow/jobs/{id}/retry", Write, (*Server).retryJob},
	{"POST", "/api/workflow/jobs/{id}/priority", Write, (*Server).reprioritizeJob},
	{"GET", "/api/workflow/jobs/{id}/log", Detail, (*Server).getJobLog},
	{"GET", "/api/workflow/jobs/{id}/report", Detail, (*Server).getJobReport},
	{"POST", "/api/workflow/manifest/submit", Write, (*Server).submitManifest},
	{"POST", "/api/workflow/manifest/validate", Open, (*Server).validateManifest},
	{"GET", "/api/workflow/events", Open, (*Server).events},
	{"GET", "/api/workflow/schema", Open, (*Server).getSchema},
	{"GET", "/api/workflow/sources", Detail, (*Server).listSources},
	{"GET", "/api/workflow/sources/{name}/vms", Detail, (*Server).browseSource},
	{"GET", "/api/workflow/analytics", Open, (*Server).getAnalytics},
	{"GET", "/api/workflow/hosts", Open, (*Server).listHosts},
	{"POST", "/api/workflow/queue/{action}", Write, (*Server).setQueue},
	{"GET", "/api/workflow/schedules", Open, (*Server).listSchedules},
	{"GET", "/api/workflow/templates", Open, (*Server).listTemplates},
	{"GET", "/api/workflow/templates/{name}", Open, (*Server).getTemplate},
	{"POST", "/api/workflow/templates/{name}/render", Open, (*Server).renderTemplate},
	{"GET", "/api/workflow/whoami", Open, (*Server).whoami},
	{"GET", "/api/workflow/images", Detail, (*Server).listImages},
	{"GET", "/health", Open, (*Server).health},
	{"GET", "/metrics", Open, (*Server).metrics},
}

func (s *Server) routes() *mux.Router {
	m := mux.NewRouter()
	for _, rt := range routes {
		methods := []string{rt.Method}
		if rt.Method == http.MethodGet {
			methods = append(methods, http.MethodHead)
		}
		m.HandleFunc(rt.Path, s.authorize(rt.Access, func(w http.ResponseWriter, r *http.Request) {
			rt.Handle(s, w, r)
		})).Methods(methods...)
	}
	// The dashboard: every GET outside /api/ is a static file. It is the
	// same for everyone (it holds no data), so it needs no token; the
	// loopback Host check still applies.
	static := http.FileServer(http.FS(s.cfg.Web))
	m.MatcherFunc(func(r *http.Request, _ *mux.RouteMatch) bool {
		return !strings.HasPrefix(r.URL.Path, "/api/")
	}).Methods(http.MethodGet, http.MethodHead).Handler(s.authorize(Open, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/web/dashboard" || strings.HasPrefix(r.URL.Path, "/web/dashboard/") {
			// the original product's dashboard address
			http.Redirect(w, r, "/", http.StatusMovedPermanently)
			return
		}
		if _, err := fs.Stat(s.cfg.Web, strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")); err != nil && r.URL.Path != "/" {
			writeError(w, http.StatusNotFound, CodeNotFound, "cannot find "+r.URL.Path, nil)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		static.ServeHTTP(w, r)
	}))
	m.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, CodeNotFound, "cannot find "+r.URL.Path+": no such endpoint", nil)
	})
	m.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		allowed := allowedMethods(r.URL.Path)
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, http.StatusMethodNotAllowed, CodeMethodNotAllowed,
			fmt.Sprintf("cannot %s %s: allowed methods are %s", r.Method, r.URL.Path, strings.Join(allowed, ", ")), nil)
	})
	return m
}

// allowedMethods lists the methods the table has for path.
func allowedMethods(path string) []string {
	var out []string
	for _, rt := range routes {
		probe := mux.NewRouter()
		probe.NewRoute().Path(rt.Path)
		var match mux.RouteMatch
		req, _ := http.NewRequest(http.MethodGet, path, nil)
		if req != nil && probe.Match(req, &match) {
			out = append(out, rt.Method)
			if rt.Method == http.MethodGet {
				out = append(out, http.MethodHead)
			}
		}
	}
	if len(out) == 0 && !strings.HasPrefix(path, "/api/") {
		out = []string{http.MethodGet, http.MethodHead}
	}
	return out
}

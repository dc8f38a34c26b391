package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"strings"
)

// Peer is how a request reached the bridge, which decides what it may do
// without a token.
type Peer int

const (
	// PeerRemote is TCP from another host: every endpoint needs the token.
	PeerRemote Peer = iota
	// PeerLoopback is TCP from this host: reads are open.
	PeerLoopback
	// PeerUnix is the Unix socket, which only root and group hyper2kvm can
	// open (mode 0660): reads are open.
	PeerUnix
)

type peerKey struct{}

// ConnContext is the http.Server.ConnContext that records the connection's
// Peer; Serve installs it.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	p := PeerRemote
	switch a := c.LocalAddr().(type) {
	case *net.UnixAddr:
		p = PeerUnix
	case *net.TCPAddr:
		if ra, ok := c.RemoteAddr().(*net.TCPAddr); ok && ra.IP.IsLoopback() && a.IP.IsLoopback() {
			p = PeerLoopback
		}
	}
	return context.WithValue(ctx, peerKey{}, p)
}

// peerOf returns the request's Peer. Without ConnContext it falls back to
// the remote address, treating anything unparsable as remote.
func peerOf(r *http.Request) Peer {
	if p, ok := r.Context().Value(peerKey{}).(Peer); ok {
		return p
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return PeerRemote
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return PeerLoopback
	}
	return PeerRemote
}

// hostAllowed is the DNS-rebinding guard: a web page on another site whose
// name resolves to 127.0.0.1 would be same-origin with the bridge, so on TCP
// only loopback names (and configured ones) are accepted in Host.
func (s *Server) hostAllowed(r *http.Request) bool {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return true
	}
	for _, h := range s.cfg.AllowedHosts {
		if strings.EqualFold(h, host) {
			return true
		}
	}
	return false
}

// tokenOK compares the request's bearer token with the configured one in
// constant time (hashing first so that the length does not leak either).
func (s *Server) tokenOK(r *http.Request) bool {
	if s.cfg.Token == "" {
		return false
	}
	auth := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	want := sha256.Sum256([]byte(s.cfg.Token))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// Access is a route's rule: which peers need the bearer token.
type Access int

const (
	// Open reads (status, job summaries, schema) need the token only from
	// other hosts.
	Open Access = iota
	// Detail reads (a job's details and log: paths, guest names, report)
	// need the token on TCP, loopback included: any local user can reach
	// 127.0.0.1, and a log is only for the job's submitter, group
	// hyper2kvm and administrators. The Unix socket (root:hyper2kvm 0660)
	// admits only root and the group, who may read every job.
	Detail
	// Write routes need the token from every peer.
	Write
)

// authorize wraps h with the access rule of its route.
func (s *Server) authorize(acc Access, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		// A per-user token: the request acts as its owner, through an
		// agent connection that the agent identifies and authorizes as
		// that user; whatever they may not do, the agent refuses.
		if tok := bearer(r); strings.HasPrefix(tok, UserTokenPrefix) {
			if s.cfg.UserDial == nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="hyper2kvm"`)
				writeError(w, http.StatusUnauthorized, CodeUnauthorized, "cannot authorize: this bridge does not take per-user tokens", nil)
				return
			}
			us, err := s.userSession(r.Context(), tok)
			if err != nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="hyper2kvm"`)
				writeError(w, http.StatusUnauthorized, CodeUnauthorized,
					"cannot authorize: the API token is unknown or was revoked (hyperctl token list; hyperctl token create)", nil)
				return
			}
			ctx := context.WithValue(context.WithValue(r.Context(), clientKey{}, us.c), userKey{}, us.user)
			sw := &statusWriter{ResponseWriter: w}
			h(sw, r.WithContext(ctx))
			// Refused (a revoked token, polkit's no) or the agent gone
			// (its unique name, which the session calls, with it): the
			// next request starts afresh, or is refused.
			switch sw.status {
			case http.StatusUnauthorized, http.StatusForbidden, http.StatusServiceUnavailable:
				s.dropUserSession(tok)
			}
			return
		}
		p := peerOf(r)
		if p == PeerLoopback && !s.hostAllowed(r) && !s.tokenOK(r) {
			writeError(w, http.StatusForbidden, CodeForbidden,
				"cannot serve host "+r.Host+": not a loopback name (present the bearer token or start the bridge with --allow-host)", nil)
			return
		}
		needToken := acc == Write || p == PeerRemote || acc == Detail && p != PeerUnix
		if needToken && !s.tokenOK(r) {
			if s.cfg.Token == "" {
				writeError(w, http.StatusForbidden, CodeForbidden,
					"cannot authorize: the bridge has no token file, so it refuses writes, remote reads and job details and logs over TCP (use the Unix socket as a member of group hyper2kvm)", nil)
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="hyper2kvm"`)
			writeError(w, http.StatusUnauthorized, CodeUnauthorized,
				"cannot authorize: this endpoint needs the header Authorization: Bearer <token from /etc/hyper2kvm/api.token>", nil)
			return
		}
		h(w, r)
	}
}

// mayReadDetails reports whether r may read jobs' details (paths, errors,
// warnings) in lists and events, as for the Detail routes: with the token,
// or through the Unix socket, which only root and group hyper2kvm open.
// Over loopback TCP without the token any local user is asking.
func (s *Server) mayReadDetails(r *http.Request) bool {
	return peerOf(r) == PeerUnix || s.tokenOK(r) || r.Context().Value(userKey{}) != nil
}

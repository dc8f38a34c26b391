package api

import (
	"context"
	"crypto/sha256"
	"io"
	"net/http"
	"strings"
	"sync"
)

// UserTokenPrefix starts every per-user API token (agent.TokenPrefix):
// the bridge tells them from its administrator token by it.
const UserTokenPrefix = "h2k_"

// maxUserSessions bounds the agent connections kept for token users.
const maxUserSessions = 16

// UserDial opens a Client that acts for the owner of a per-user token
// (the agent's ActAs) and returns it with the owner's login name; an
// error for an unknown or revoked token.
type UserDial func(ctx context.Context, token string) (Client, string, error)

// userSession is the agent connection of one token.
type userSession struct {
	c    Client
	user string
}

// userSessions caches them by the token's hash.
type userSessions struct {
	mu sync.Mutex
	m  map[[32]byte]*userSession
}

type clientKey struct{}
type userKey struct{}

// client is the Client a request's calls go through: the token owner's
// for a request with a per-user token, else the bridge's own.
func (s *Server) client(r *http.Request) Client {
	if c, ok := r.Context().Value(clientKey{}).(Client); ok {
		return c
	}
	return s.cfg.Client
}

// bearer is the request's bearer token, "" without one.
func bearer(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// userSession is the session of a per-user token, opened on first use.
func (s *Server) userSession(ctx context.Context, tok string) (*userSession, error) {
	key := sha256.Sum256([]byte(tok))
	s.users.mu.Lock()
	if us, ok := s.users.m[key]; ok {
		s.users.mu.Unlock()
		return us, nil
	}
	s.users.mu.Unlock()
	c, user, err := s.cfg.UserDial(context.WithoutCancel(ctx), tok)
	if err != nil {
		return nil, err
	}
	us := &userSession{c: c, user: user}
	s.users.mu.Lock()
	defer s.users.mu.Unlock()
	if s.users.m == nil {
		s.users.m = map[[32]byte]*userSession{}
	}
	if len(s.users.m) >= maxUserSessions {
		for k, old := range s.users.m {
			closeClient(old.c)
			delete(s.users.m, k)
			break
		}
	}
	s.users.m[key] = us
	return us, nil
}

// dropUserSession forgets tok's session (after its call failed: revoked,
// agent gone), so the next request opens a new one or is refused.
func (s *Server) dropUserSession(tok string) {
	key := sha256.Sum256([]byte(tok))
	s.users.mu.Lock()
	defer s.users.mu.Unlock()
	if us, ok := s.users.m[key]; ok {
		closeClient(us.c)
		delete(s.users.m, key)
	}
}

func closeClient(c Client) {
	if cl, ok := c.(io.Closer); ok {
		cl.Close()
	}
}

// statusWriter remembers the status a handler answered.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// whoami: GET /api/workflow/whoami, who the request acts as: a token's
// owner, the administrator token (the bridge's user), a member of group
// hyper2kvm on the Unix socket, or nobody.
func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	ans := map[string]any{"signed_in": false, "via": "none", "details": s.mayReadDetails(r)}
	switch {
	case r.Context().Value(userKey{}) != nil:
		ans["signed_in"], ans["via"], ans["user"], ans["details"] = true, "user-token", r.Context().Value(userKey{}), true
	case s.tokenOK(r):
		ans["signed_in"], ans["via"], ans["user"] = true, "admin-token", "administrator (the bridge's token)"
	case peerOf(r) == PeerUnix:
		ans["via"] = "unix-socket"
	}
	writeJSON(w, http.StatusOK, ans)
}

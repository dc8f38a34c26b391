package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
)

// DefaultMaxInFlight is how many bytes of request bodies the bridge holds
// at once by default: eight full manifests.
const DefaultMaxInFlight = 8 * DefaultMaxBody

// maxParses is how many bodies the bridge parses at once. Parsing costs up
// to about 100 times the body in memory; one at a time keeps a flood of
// 1 MiB manifests within the unit's MemoryMax.
const maxParses = 1

// bodyBudget bounds the bytes of request bodies being read, checked or
// passed to the agent at once. A request that does not fit is answered
// 503 before a byte of its body is read: under a flood the bridge answers
// "busy" instead of allocating until the kernel kills it.
type bodyBudget struct {
	mu    sync.Mutex
	used  int64
	limit int64
}

// take reserves n bytes, or reports false when they do not fit.
func (b *bodyBudget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.limit {
		return false
	}
	b.used += n
	return true
}

func (b *bodyBudget) give(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// writeBusy answers 503 with Retry-After and closes the connection. A
// body the client is already sending is drained (through a small buffer,
// at most MaxBody bytes: reading is not holding), since closing on unread
// data resets the connection and the client would lose the answer; a
// client that waits for "100 Continue" is never asked for it.
func (s *Server) writeBusy(w http.ResponseWriter, r *http.Request, msg string) {
	w.Header().Set("Retry-After", "1")
	w.Header().Set("Connection", "close")
	if r.Body != nil && !strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
		_, _ = io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, s.cfg.MaxBody))
	}
	writeError(w, http.StatusServiceUnavailable, CodeBusy, msg, nil)
}

// reserveBody takes the budget for r's body: its Content-Length, or the
// whole MaxBody when it is sent chunked. The caller calls the returned
// release when it no longer holds the body.
func (s *Server) reserveBody(w http.ResponseWriter, r *http.Request) (func(), bool) {
	n := s.cfg.MaxBody
	if r.ContentLength >= 0 && r.ContentLength < n {
		n = r.ContentLength
	}
	if !s.bodies.take(n) {
		s.writeBusy(w, r, fmt.Sprintf("cannot accept the body now: the bridge is already handling %d bytes of request bodies; retry in a moment", s.cfg.MaxInFlight))
		return nil, false
	}
	return func() { s.bodies.give(n) }, true
}

// parseTurn waits for the turn to parse a body, or for ctx to end.
func (s *Server) parseTurn(ctx context.Context) (func(), error) {
	select {
	case s.parses <- struct{}{}:
		return func() { <-s.parses }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

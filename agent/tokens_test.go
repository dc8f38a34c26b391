package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
)

// TestTokens: a token is shown once and kept only as a hash (0600),
// resolves to its owner, is listed for them alone, and once revoked
// resolves no more.
func TestTokens(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	tok, rec, err := e.a.CreateToken(1000, "laptop")
	if err != nil || !strings.HasPrefix(tok, TokenPrefix) || len(tok) < 40 || rec.UID != 1000 || rec.Name != "laptop" {
		t.Fatalf("CreateToken = %q %+v %v", tok, rec, err)
	}
	other, _, _ := e.a.CreateToken(1001, "")
	path := filepath.Join(e.cfg.StateDir, "tokens.json")
	data, err := os.ReadFile(path)
	if err != nil || strings.Contains(string(data), tok) || !strings.Contains(string(data), hashToken(tok)) {
		t.Errorf("tokens.json holds the token or lacks its hash: %v\n%s", err, data)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("tokens.json mode %v %v, want 0600", fi.Mode(), err)
	}
	if got, ok := e.a.ResolveToken(tok); !ok || got.ID != rec.ID || got.UID != 1000 || got.LastUsed.IsZero() {
		t.Errorf("ResolveToken = %+v %v", got, ok)
	}
	for _, bad := range []string{"", "h2k_", tok + "x", strings.TrimPrefix(tok, TokenPrefix)} {
		if _, ok := e.a.ResolveToken(bad); ok {
			t.Errorf("ResolveToken(%q) resolved", bad)
		}
	}
	if l, _ := e.a.Tokens(1000, false); len(l) != 1 || l[0].ID != rec.ID {
		t.Errorf("uid 1000's tokens: %+v", l)
	}
	if l, _ := e.a.Tokens(0, true); len(l) != 2 {
		t.Errorf("every token: %+v", l)
	}
	if err := e.a.RevokeToken(rec.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.a.ResolveToken(tok); ok || e.a.TokenValid(rec.ID) {
		t.Error("a revoked token still resolves")
	}
	if _, ok := e.a.ResolveToken(other); !ok {
		t.Error("revoking one token revoked another")
	}
	if err := e.a.RevokeToken(rec.ID); !apierr.Is(err, apierr.InvalidArgs) {
		t.Errorf("revoking it again: %v", err)
	}
	// A fresh agent reads them back.
	a2 := &Agent{cfg: e.a.cfg, log: e.a.log, now: e.a.now}
	if _, ok := a2.ResolveToken(other); !ok {
		t.Error("a new agent does not know the token")
	}
}

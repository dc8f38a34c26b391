package agent

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
)

// Per-user API tokens: made by their owner over D-Bus (hyperctl token
// create), kept as SHA-256 hashes in tokens.json in the state directory
// (0600 root), presented to the REST bridge, which has the agent resolve
// them and then acts as their owner (polkit is asked as that user).

// TokenPrefix starts every per-user token, so the bridge tells them from
// its administrator token.
const TokenPrefix = "h2k_"

// maxTokensPerUser bounds what one user keeps; revoke one to make more.
const maxTokensPerUser = 20

// tokenRecord is one token in tokens.json.
type tokenRecord struct {
	apitype.Token
	Hash string `json:"sha256"` // hex SHA-256 of the token
}

// tokens is the token store; its own lock, so that resolving a token on
// every REST call never waits for the agent's.
type tokens struct {
	mu   sync.Mutex
	path string
	list []tokenRecord
	read bool
}

func (a *Agent) tokenStore() *tokens {
	a.tokOnce.Do(func() { a.tok = &tokens{path: filepath.Join(a.cfg.StateDir, "tokens.json")} })
	return a.tok
}

// loadLocked reads tokens.json once; a missing file is no tokens.
func (t *tokens) loadLocked() error {
	if t.read {
		return nil
	}
	data, err := os.ReadFile(t.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		t.read = true
		return nil
	case err != nil:
		return fmt.Errorf("cannot read %s: %w", t.path, err)
	}
	if err := json.Unmarshal(data, &t.list); err != nil {
		return fmt.Errorf("cannot parse %s: %w", t.path, err)
	}
	t.read = true
	return nil
}

func (t *tokens) saveLocked() error {
	data, err := json.MarshalIndent(t.list, "", "  ")
	if err != nil {
		return err
	}
	if err := queue.ReplaceFile(t.path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("cannot write %s: %w", t.path, err)
	}
	return nil
}

func hashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

func loginName(uid int64) string {
	if u, err := user.LookupId(strconv.FormatInt(uid, 10)); err == nil {
		return u.Username
	}
	return "uid " + strconv.FormatInt(uid, 10)
}

// CreateToken makes a token for uid named name and returns it (the only
// time it is seen) with its record.
func (a *Agent) CreateToken(uid int64, name string) (string, apitype.Token, error) {
	name = strings.TrimSpace(name)
	if len(name) > 64 || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", apitype.Token{}, apierr.New(apierr.InvalidArgs, "cannot create a token named %q: at most 64 characters, no control characters", name)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", apitype.Token{}, apierr.New(apierr.Internal, "cannot create a token: %v", err)
	}
	tok := TokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	var idb [6]byte
	rand.Read(idb[:])
	t := a.tokenStore()
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.loadLocked(); err != nil {
		return "", apitype.Token{}, apierr.New(apierr.Internal, "cannot create a token: %v", err)
	}
	n := 0
	for _, r := range t.list {
		if r.UID == uid {
			n++
		}
	}
	if n >= maxTokensPerUser {
		return "", apitype.Token{}, apierr.New(apierr.InvalidState, "cannot create a token: %s already has %d; revoke one (hyperctl token revoke ID)", loginName(uid), n)
	}
	if name == "" {
		name = "token " + strconv.Itoa(n+1)
	}
	rec := tokenRecord{Token: apitype.Token{ID: hex.EncodeToString(idb[:]), Name: name, UID: uid, User: loginName(uid), Created: a.now()}, Hash: hashToken(tok)}
	t.list = append(t.list, rec)
	if err := t.saveLocked(); err != nil {
		t.list = t.list[:len(t.list)-1]
		return "", apitype.Token{}, apierr.New(apierr.Internal, "cannot create a token: %v", err)
	}
	a.log.Infof(nil, "API token %s (%q) created for %s", rec.ID, name, rec.User)
	return tok, rec.Token, nil
}

// Tokens lists uid's tokens, or every token when all is set.
func (a *Agent) Tokens(uid int64, all bool) ([]apitype.Token, error) {
	t := a.tokenStore()
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.loadLocked(); err != nil {
		return nil, apierr.New(apierr.Internal, "cannot list tokens: %v", err)
	}
	out := []apitype.Token{}
	for _, r := range t.list {
		if all || r.UID == uid {
			out = append(out, r.Token)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// TokenOwner is the uid of token id's owner.
func (a *Agent) TokenOwner(id string) (int64, error) {
	t := a.tokenStore()
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.loadLocked(); err != nil {
		return 0, apierr.New(apierr.Internal, "%v", err)
	}
	for _, r := range t.list {
		if r.ID == id {
			return r.UID, nil
		}
	}
	return 0, apierr.New(apierr.InvalidArgs, "cannot find token %s (hyperctl token list shows yours)", id)
}

// RevokeToken forgets token id: the bridge refuses it from the next call.
func (a *Agent) RevokeToken(id string) error {
	t := a.tokenStore()
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.loadLocked(); err != nil {
		return apierr.New(apierr.Internal, "%v", err)
	}
	for i, r := range t.list {
		if r.ID == id {
			t.list = append(t.list[:i:i], t.list[i+1:]...)
			if err := t.saveLocked(); err != nil {
				t.list = append(t.list[:i], append([]tokenRecord{r}, t.list[i:]...)...)
				return apierr.New(apierr.Internal, "cannot revoke token %s: %v", id, err)
			}
			a.log.Infof(nil, "API token %s (%q) of %s revoked", r.ID, r.Name, r.User)
			return nil
		}
	}
	return apierr.New(apierr.InvalidArgs, "cannot find token %s (hyperctl token list shows yours)", id)
}

// ResolveToken is the record of the token tok, comparing hashes in
// constant time; ok is false for an unknown (or revoked) token.
func (a *Agent) ResolveToken(tok string) (apitype.Token, bool) {
	if !strings.HasPrefix(tok, TokenPrefix) {
		return apitype.Token{}, false
	}
	want := hashToken(tok)
	t := a.tokenStore()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.loadLocked() != nil {
		return apitype.Token{}, false
	}
	for i, r := range t.list {
		if subtle.ConstantTimeCompare([]byte(r.Hash), []byte(want)) == 1 {
			// The bridge resolves a token once per connection it opens
			// for it, not per request: recording the use costs little.
			t.list[i].LastUsed = a.now()
			if err := t.saveLocked(); err != nil {
				a.log.Warnf(nil, "cannot record the use of API token %s: %v", r.ID, err)
			}
			return t.list[i].Token, true
		}
	}
	return apitype.Token{}, false
}

// TokenValid reports whether token id still exists.
func (a *Agent) TokenValid(id string) bool {
	_, err := a.TokenOwner(id)
	return err == nil
}

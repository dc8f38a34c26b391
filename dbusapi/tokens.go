package dbusapi

import (
	"context"
	"os/user"
	"strconv"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/polkit"
)

// TokenBackend is a Backend that keeps per-user API tokens (hyperctl
// token create|list|revoke) and resolves them for the REST bridge.
type TokenBackend interface {
	CreateToken(uid int64, name string) (string, apitype.Token, error)
	Tokens(uid int64, all bool) ([]apitype.Token, error)
	TokenOwner(id string) (int64, error)
	RevokeToken(id string) error
	ResolveToken(tok string) (apitype.Token, bool)
	TokenValid(id string) bool
}

// UIDAuthorizer is an Authorizer that can also ask polkit about a user by
// uid (polkit.Authority): how the agent decides for the owner of a token
// the bridge acts for.
type UIDAuthorizer interface {
	AuthorizeUID(ctx context.Context, uid uint32, action string) (bool, error)
}

// BridgeUser is the REST bridge's user: the only one, besides root, whose
// connections may act for a token's owner (ActAs).
const BridgeUser = "hyper2kvm-api"

// actor is the user a bridge connection acts for, by the token it showed.
type actor struct {
	uid     int64
	tokenID string
}

// maxActors bounds the connections remembered as acting for a user; the
// bridge keeps a few.
const maxActors = 1024

// tokenRow is one (ssxstt) of ListTokens.
type tokenRow struct {
	ID, Name string
	UID      int64
	User     string
	Created  uint64
	LastUsed uint64
}

func (s *Server) tokenBackend() (TokenBackend, error) {
	tb, ok := s.b.(TokenBackend)
	if !ok {
		return nil, apierr.New(apierr.Internal, "this agent keeps no API tokens")
	}
	return tb, nil
}

// tokenMethods are the Manager's token methods, added to its table.
func (s *Server) tokenMethods() map[string]any {
	return map[string]any{
		"CreateToken": func(sender dbus.Sender, name string) (string, string, *dbus.Error) {
			s.touch()
			tb, err := s.tokenBackend()
			if err != nil {
				return "", "", toDBusError(err)
			}
			uid, err := s.callerUID(sender)
			if err != nil {
				return "", "", toDBusError(err)
			}
			if s.actorOf(string(sender)) != nil {
				return "", "", toDBusError(apierr.New(apierr.AccessDenied, "cannot create a token with a token: use hyperctl token create as the user"))
			}
			tok, rec, err := tb.CreateToken(uid, name)
			if err != nil {
				return "", "", toDBusError(err)
			}
			return tok, rec.ID, nil
		},
		"ListTokens": func(sender dbus.Sender) ([]tokenRow, *dbus.Error) {
			s.touch()
			tb, err := s.tokenBackend()
			if err != nil {
				return nil, toDBusError(err)
			}
			uid, err := s.callerUID(sender)
			if err != nil {
				return nil, toDBusError(err)
			}
			list, err := tb.Tokens(uid, uid == 0)
			if err != nil {
				return nil, toDBusError(err)
			}
			rows := make([]tokenRow, len(list))
			for i, t := range list {
				rows[i] = tokenRow{t.ID, t.Name, t.UID, t.User, usec(t.Created), usec(t.LastUsed)}
			}
			return rows, nil
		},
		"RevokeToken": func(msg dbus.Message, sender dbus.Sender, id string) *dbus.Error {
			s.touch()
			tb, err := s.tokenBackend()
			if err != nil {
				return toDBusError(err)
			}
			uid, err := s.callerUID(sender)
			if err != nil {
				return toDBusError(err)
			}
			owner, err := tb.TokenOwner(id)
			if err != nil {
				return toDBusError(err)
			}
			if uid != 0 && owner != uid {
				if err := s.authorize(msg, sender, polkit.ActionManage, "revoke another user's API token "+id); err != nil {
					return toDBusError(err)
				}
			}
			if err := tb.RevokeToken(id); err != nil {
				return toDBusError(err)
			}
			s.log.Info("API token revoked", "uid", uid, "token", id)
			return nil
		},
		"ActAs": func(sender dbus.Sender, token string) (int64, string, string, *dbus.Error) {
			s.touch()
			uid, user, err := s.actAs(string(sender), token)
			if err != nil {
				return 0, "", "", toDBusError(err)
			}
			return uid, user, s.conn.Names()[0], nil
		},
	}
}

// actAs makes sender, a connection of the bridge's user (or root), act
// from now on for the owner of token: its calls are identified and
// authorized as that user. The answer's last value is the agent's unique
// bus name: the bridge sends this connection's calls there, so that an
// agent started again (which knows nothing of this) is never called in
// the token owner's name.
func (s *Server) actAs(sender, token string) (int64, string, error) {
	tb, err := s.tokenBackend()
	if err != nil {
		return 0, "", err
	}
	uid, err := s.busUID(sender)
	if err != nil {
		return 0, "", err
	}
	if uid != 0 {
		u, err := user.LookupId(strconv.FormatInt(uid, 10))
		if err != nil || u.Username != BridgeUser {
			return 0, "", apierr.New(apierr.AccessDenied, "cannot act for a token's owner: only the REST bridge (%s) may", BridgeUser)
		}
	}
	if s.actorOf(sender) != nil {
		return 0, "", apierr.New(apierr.InvalidState, "cannot act for another token on this connection: open a new one")
	}
	rec, ok := tb.ResolveToken(token)
	if !ok {
		return 0, "", apierr.New(apierr.AccessDenied, "cannot use this API token: it is unknown or was revoked")
	}
	s.mu.Lock()
	if len(s.actors) >= maxActors {
		for k := range s.actors {
			delete(s.actors, k)
			break
		}
	}
	s.actors[sender] = &actor{uid: rec.UID, tokenID: rec.ID}
	s.mu.Unlock()
	s.log.Info("bridge connection acts for a token's owner", "sender", sender, "uid", rec.UID, "token", rec.ID)
	return rec.UID, rec.User, nil
}

// actorOf is who sender acts for, nil for itself.
func (s *Server) actorOf(sender string) *actor {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.actors[sender]
}

// busUID asks the bus for the uid behind sender.
func (s *Server) busUID(sender string) (int64, error) {
	ctx, cancel := context.WithTimeout(s.ctx, 25*time.Second)
	defer cancel()
	var uid uint32
	err := s.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetConnectionUnixUser", 0, sender).Store(&uid)
	if err != nil {
		return 0, apierr.New(apierr.AccessDenied, "cannot identify the caller %s: %v", sender, err)
	}
	return int64(uid), nil
}

// actorUID is the uid a call from sender acts as when it acts for a
// token's owner: ok false when it does not; an error when its token was
// revoked since (the call is refused, never made as the bridge).
func (s *Server) actorUID(sender string) (int64, bool, error) {
	a := s.actorOf(sender)
	if a == nil {
		return 0, false, nil
	}
	if tb, ok := s.b.(TokenBackend); !ok || !tb.TokenValid(a.tokenID) {
		return 0, true, apierr.New(apierr.AccessDenied, "cannot act for this API token: it was revoked")
	}
	return a.uid, true, nil
}

func withTokens(m, t map[string]any) map[string]any {
	for k, v := range t {
		m[k] = v
	}
	return m
}

// CreateToken makes an API token for the caller named name and returns it
// (the only time it is seen) and its id.
func (c *Client) CreateToken(ctx context.Context, name string) (token, id string, err error) {
	call, err := c.call(ctx, "create an API token", ManagerPath, ManagerIface+".CreateToken", false, name)
	if err != nil {
		return "", "", err
	}
	err = call.Store(&token, &id)
	return token, id, err
}

// ListTokens lists the caller's API tokens (root: everyone's).
func (c *Client) ListTokens(ctx context.Context) ([]apitype.Token, error) {
	call, err := c.call(ctx, "list API tokens", ManagerPath, ManagerIface+".ListTokens", false)
	if err != nil {
		return nil, err
	}
	var rows []tokenRow
	if err := call.Store(&rows); err != nil {
		return nil, err
	}
	out := make([]apitype.Token, len(rows))
	for i, r := range rows {
		out[i] = apitype.Token{ID: r.ID, Name: r.Name, UID: r.UID, User: r.User}
		if r.Created != 0 {
			out[i].Created = time.UnixMicro(int64(r.Created))
		}
		if r.LastUsed != 0 {
			out[i].LastUsed = time.UnixMicro(int64(r.LastUsed))
		}
	}
	return out, nil
}

// RevokeToken forgets API token id.
func (c *Client) RevokeToken(ctx context.Context, id string, interactive bool) error {
	_, err := c.call(ctx, "revoke API token "+id, ManagerPath, ManagerIface+".RevokeToken", interactive, id)
	return err
}

// ActAs makes this connection act for the owner of token (the bridge's
// use) and from then on sends its calls to the agent that agreed, by its
// unique name: an agent started again never receives them.
func (c *Client) ActAs(ctx context.Context, token string) (uid int64, user string, err error) {
	call, err := c.call(ctx, "use the API token", ManagerPath, ManagerIface+".ActAs", false, token)
	if err != nil {
		return 0, "", err
	}
	var agent string
	if err := call.Store(&uid, &user, &agent); err != nil {
		return 0, "", err
	}
	c.Dest = agent
	return uid, user, nil
}

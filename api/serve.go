package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Default addresses when the bridge is not socket-activated.
var DefaultListen = []string{"127.0.0.1:8080", "/run/hyper2kvm/api.sock"}

// isUnixAddr reports whether addr names a Unix socket ("/path" or "unix:/path").
func isUnixAddr(addr string) (string, bool) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		return p, true
	}
	return addr, strings.HasPrefix(addr, "/")
}

// Listen opens addrs itself (for a bridge not started by its socket unit).
// A Unix socket gets mode 0660 and, when the group exists, group group, the
// same as SocketMode=/SocketGroup= in hyper2kvm-api.socket.
func Listen(ctx context.Context, addrs []string, group string) ([]net.Listener, error) {
	var out []net.Listener
	closeAll := func() {
		for _, l := range out {
			l.Close()
		}
	}
	var lc net.ListenConfig
	for _, a := range addrs {
		if path, ok := isUnixAddr(a); ok {
			l, err := listenUnix(ctx, path, group)
			if err != nil {
				closeAll()
				return nil, err
			}
			out = append(out, l)
			continue
		}
		l, err := lc.Listen(ctx, "tcp", a)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("cannot listen on %s: %w", a, err)
		}
		out = append(out, l)
	}
	return out, nil
}

func listenUnix(ctx context.Context, path, group string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("cannot listen on %s: %w", path, err)
	}
	// A socket left by an earlier run that did not clean up; never remove
	// anything that is not a socket.
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("cannot listen on %s: another process is serving it", path)
		}
		os.Remove(path)
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("cannot set the mode of %s: %w", path, err)
	}
	if group != "" {
		if g, err := user.LookupGroup(group); err == nil {
			gid, _ := strconv.Atoi(g.Gid)
			if err := os.Chown(path, -1, gid); err != nil {
				slog.Warn("cannot give the socket to its group", "path", path, "group", group, "err", err)
			}
		}
	}
	return l, nil
}

// Serve answers on every listener until ctx ends or, when idleTimeout > 0,
// until no request has been in flight for idleTimeout. Open event streams
// count as requests, so a dashboard that is watching keeps the bridge up.
func Serve(ctx context.Context, ls []net.Listener, s *Server, idleTimeout time.Duration) error {
	if len(ls) == 0 {
		return errors.New("cannot serve: no listener")
	}
	// Cancelled at shutdown so that event streams, which never end by
	// themselves, let Shutdown finish.
	base, stop := context.WithCancel(context.Background())
	defer stop()
	srv := &http.Server{
		Handler:           s,
		BaseContext:       func(net.Listener) context.Context { return base },
		ConnContext:       ConnContext,
		ReadHeaderTimeout: 10 * time.Second,
		// Headers are small; the default (1 MiB) would let each of a few
		// hundred connections hold a megabyte.
		MaxHeaderBytes: 64 << 10,
		IdleTimeout:    60 * time.Second,
		ErrorLog:       slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
	errc := make(chan error, len(ls))
	for _, l := range ls {
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("cannot serve on %s: %w", l.Addr(), err)
			}
		}()
	}
	var tick <-chan time.Time
	if idleTimeout > 0 {
		t := time.NewTicker(min(time.Second, idleTimeout))
		defer t.Stop()
		tick = t.C
	}
	var err error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err = <-errc:
			break loop
		case <-tick:
			if s.Idle().IdleFor() >= idleTimeout {
				slog.Info("exiting after being idle", "timeout", idleTimeout)
				break loop
			}
		}
	}
	stop()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		srv.Close()
	}
	return err
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/dbusapi"
)

// misconfigured is the agent whose configuration file cannot be used. It
// does not exit: an agent that exits leaves every D-Bus caller waiting out
// activation's 25 s timeout, and systemd's restarts of it used up the
// unit's start limit, taking the drop folder's path unit down with it.
// Instead it owns io.hyper2kvm.Agent1 and answers every call at once with
// ConfigInvalid (file, line, key and suggestion), tells systemd the reason
// (STATUS=, shown by systemctl status), claims nothing and runs no job. It
// exits non-zero when the file changes, so that Restart=on-failure starts
// the agent again with the new file, and with success when idle, as the
// agent does, so that the path unit's next trigger does not find it
// spinning.
type misconfigured struct {
	path  string // the configuration file
	cause error  // why it cannot be used
	conn  *dbus.Conn
	// notify is sd_notify; idle the idle exit (0: never); poll how often
	// the file is looked at; watchdog how often WATCHDOG=1 is sent (0:
	// never).
	notify   func(state string)
	idle     time.Duration
	poll     time.Duration
	watchdog time.Duration
	log      io.Writer
}

// errConfigChanged ends the misconfigured agent when its file changed.
var errConfigChanged = errors.New("configuration file changed")

// configProblem is cause on one line: config errors may join several
// problems with newlines.
func configProblem(cause error) string {
	lines := strings.Split(strings.TrimSpace(cause.Error()), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, "; ")
}

// configInvalidError is what every caller gets.
func configInvalidError(path string, cause error) *apierr.Error {
	return apierr.New(apierr.ConfigInvalid,
		"the agent's configuration is invalid: %s; fix the file (check it with: hyper2kvmd check-config %s), the agent restarts by itself when it changes",
		configProblem(cause), path)
}

func (m misconfigured) run(ctx context.Context) error {
	fmt.Fprintf(m.log, "configuration error: %s; answering every call with %s until the file changes\n",
		configProblem(m.cause), apierr.Lookup(apierr.ConfigInvalid).DBus)
	start := stampOf(m.path)
	srv, err := dbusapi.NewRefusingServer(m.conn, configInvalidError(m.path, m.cause))
	if err != nil {
		return fmt.Errorf("cannot report the configuration error on the bus (%s): %w", configProblem(m.cause), err)
	}
	defer srv.Close()
	m.notify("READY=1\nSTATUS=configuration error: " + configProblem(m.cause))

	tick := time.NewTicker(m.poll)
	defer tick.Stop()
	var watchdog <-chan time.Time
	if m.watchdog > 0 {
		t := time.NewTicker(m.watchdog)
		defer t.Stop()
		watchdog = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-srv.Done():
			return errLostBus
		case <-watchdog:
			m.notify("WATCHDOG=1")
		case <-tick.C:
			if stampOf(m.path) != start {
				m.notify("STOPPING=1\nSTATUS=configuration file changed; restarting")
				return fmt.Errorf("%s: %w; exiting so that systemd starts the agent again with it", m.path, errConfigChanged)
			}
			if m.idle > 0 && time.Since(srv.LastActivity()) >= m.idle {
				fmt.Fprintf(m.log, "idle for %s with a configuration error; exiting\n", m.idle)
				return nil
			}
		}
	}
}

// stamp is what tells that a file changed: written in place, replaced by
// a rename (as editors do), created or removed.
type stamp struct {
	exists      bool
	size        int64
	mtime       time.Time
	ino, ctimeN int64
}

func stampOf(path string) stamp {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return stamp{}
	}
	if err != nil {
		// Unreadable metadata counts as its own state, so that a fix of
		// the directory's permissions is seen as a change too.
		return stamp{exists: true, size: -1}
	}
	s := stamp{exists: true, size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = int64(st.Ino)
		s.ctimeN = st.Ctim.Nano()
	}
	return s
}

package agent

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// settleEvery is how often the agent tries again to settle a claimed file
// (write its report into processed/ or failed/ and move it there) or to
// save the job store after the state filesystem refused it: settling
// finishes within seconds of space returning, not at the next start.
const settleEvery = 2 * time.Second

// noSpace tells a full filesystem (or an exhausted quota) from other
// write errors.
func noSpace(err error) bool {
	// SQLite (the job store) says SQLITE_FULL instead of passing ENOSPC on.
	var se *sqlite.Error
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_FULL
}

// stateFSError names the state filesystem in a write error that says it
// is full, which ENOSPC's "no space left on device" alone does not.
func (a *Agent) stateFSError(err error) error {
	if err == nil || !noSpace(err) {
		return err
	}
	return fmt.Errorf("no space left on the state filesystem (%s): %w", a.cfg.StateDir, err)
}

// stateFull says the state filesystem is full, "" when it is not (or
// cannot be asked).
func (a *Agent) stateFull() string {
	var st unix.Statfs_t
	if err := unix.Statfs(a.cfg.StateDir, &st); err != nil {
		return ""
	}
	// Less than a report's worth of blocks left is full for the worker.
	if uint64(st.Bavail)*uint64(st.Bsize) >= 64<<10 {
		return ""
	}
	return fmt.Sprintf("no space left on the state filesystem (%s)", a.cfg.StateDir)
}

// settleFailedLocked records that a claimed file could not be settled; it is
// tried again every settleEvery (retrySettlesLocked). Called with a.mu held.
func (a *Agent) settleFailedLocked(c *claim, err error) {
	err = a.stateFSError(err)
	if !a.settleLater {
		a.log.Errorf(Fields{FieldManifest: c.Name}, "cannot settle %s: %v; trying again every %s", c.Original, err, settleEvery)
	} else {
		a.log.Debugf(Fields{FieldManifest: c.Name}, "cannot settle %s yet: %v", c.Original, err)
	}
	a.settleLater = true
}

// retrySettlesLocked tries again what a full (or failing) state filesystem kept
// from being written: the job store, and the settles of claimed files
// whose jobs are all final. Called with a.mu held.
func (a *Agent) retrySettlesLocked() {
	if a.saveFailed {
		a.save()
	}
	if !a.settleLater {
		return
	}
	a.settleLater = false
	for _, c := range a.st.Claims {
		done := true
		for _, id := range c.Jobs {
			if r := a.st.Jobs[id]; r != nil && !r.State.Ready() {
				done = false
				break
			}
		}
		if done {
			a.settleClaimLocked(c)
		}
	}
	if !a.settleLater {
		a.log.Infof(nil, "settled what the state filesystem had refused")
	}
}

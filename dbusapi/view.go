package dbusapi

import (
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/polkit"
)

// detailProps are the Job properties that tell more than that a job
// exists and how far it got: the manifest's path, output paths, the
// report's path, the error (which names files) and the warnings (which
// name guests' files and host names). They are for the job's submitter,
// root and whoever holds io.hyper2kvm.agent.read (group hyper2kvm); any
// other local user reads them empty, and signals, which every local user
// may receive, never carry their values: a change lists them as
// invalidated, and a client allowed to see them reads them with Get.
var detailProps = map[string]bool{
	"Manifest": true, "Outputs": true, "ReportPath": true, "Error": true, "Warnings": true,
	// an attempt's error names files as the job's does
	"Attempts": true,
}

// Redacted is j without its details (the Job properties that name files,
// guests and errors), as the agent shows it to a local user who is not its
// submitter, root or in group hyper2kvm; the REST bridge shows jobs the
// same way to a request without the token.
func Redacted(j jobs.Job) jobs.Job { return redacted(j) }

// redacted is j without its details (see detailProps).
func redacted(j jobs.Job) jobs.Job {
	j.Manifest, j.Outputs, j.ReportPath, j.Error, j.Warnings, j.Attempts = "", nil, "", "", nil, nil
	return j
}

// viewer is who asks for jobs: everything is shown to root and to holders
// of ActionRead, a job's details to its submitter, the rest to everyone.
type viewer struct {
	all bool
	uid int64
}

// sees reports whether v may read j's details.
func (v viewer) sees(j jobs.Job) bool {
	return v.all || v.uid >= 0 && j.SubmittedBy >= 0 && j.SubmittedBy == v.uid
}

// show is j as v may read it.
func (v viewer) show(j jobs.Job) jobs.Job {
	if v.sees(j) {
		return j
	}
	return redacted(j)
}

// viewerOf finds out who sender is: one uid lookup, and one polkit check
// (never interactive) unless the caller is root. A caller the bus cannot
// name sees no details; a bridge connection whose token was revoked is
// refused (the error).
func (s *Server) viewerOf(sender string) (viewer, error) {
	if _, ok, err := s.actorUID(sender); ok && err != nil {
		return viewer{uid: -1}, err
	}
	now := time.Now()
	s.mu.Lock()
	c, ok := s.viewers[sender]
	s.mu.Unlock()
	if ok && now.Sub(c.at) < viewerTTL {
		return c.v, nil
	}
	v := s.viewerOfCaller(sender)
	s.mu.Lock()
	if len(s.viewers) >= maxActors {
		clear(s.viewers)
	}
	s.viewers[sender] = cachedViewer{v, now}
	s.mu.Unlock()
	return v, nil
}

// viewerTTL is how long what a caller may see is remembered: a watcher
// reads the details of each new job (one GetAll each), and 500 jobs
// claimed at once would be 500 polkit checks. A user put into or out of
// group hyper2kvm sees the change within it; polkit's own
// auth_admin_keep keeps an answer for minutes.
const viewerTTL = 10 * time.Second

type cachedViewer struct {
	v  viewer
	at time.Time
}

func (s *Server) viewerOfCaller(sender string) viewer {
	uid, err := s.callerUID(dbus.Sender(sender))
	if err != nil {
		return viewer{uid: -1}
	}
	if uid == 0 {
		return viewer{all: true, uid: 0}
	}
	ok, err := s.check(sender, polkit.ActionRead, false)
	return viewer{all: ok && err == nil, uid: uid}
}

// senderOf is the unique bus name that sent msg.
func senderOf(msg dbus.Message) string {
	s, _ := msg.Headers[dbus.FieldSender].Value().(string)
	return s
}

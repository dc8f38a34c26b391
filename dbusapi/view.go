package dbusapi

import (
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
}

// Redacted is j without its details (the Job properties that name files,
// guests and errors), as the agent shows it to a local user who is not its
// submitter, root or in group hyper2kvm; the REST bridge shows jobs the
// same way to a request without the token.
func Redacted(j jobs.Job) jobs.Job { return redacted(j) }

// redacted is j without its details (see detailProps).
func redacted(j jobs.Job) jobs.Job {
	j.Manifest, j.Outputs, j.ReportPath, j.Error, j.Warnings = "", nil, "", "", nil
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
	return s.viewerOfCaller(sender), nil
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

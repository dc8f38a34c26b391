package dbusapi

import (
	"context"
	"errors"

	"github.com/godbus/dbus/v5"
	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/polkit"
)

// managerMethods is the io.hyper2kvm.Agent1.Manager method table. Each
// function's parameters (less dbus.Message and dbus.Sender) and results
// (less the final *dbus.Error) are the D-Bus signature; a unit test holds
// them to io.hyper2kvm.Agent1.xml.
func (s *Server) managerMethods() map[string]any {
	return s.addSourceMethods(map[string]any{
		"GetStatus": func() (map[string]dbus.Variant, *dbus.Error) {
			s.touch()
			return statusDict(s.b.Status()), nil
		},
		"GetMetrics": func() (map[string]dbus.Variant, *dbus.Error) {
			s.touch()
			return metricsDict(s.b.Metrics()), nil
		},
		"ListJobs": func(filter map[string]dbus.Variant) ([]dbus.ObjectPath, *dbus.Error) {
			s.touch()
			list, _, err := s.listJobs(filter)
			if err != nil {
				return nil, toDBusError(err)
			}
			paths := make([]dbus.ObjectPath, len(list))
			for i, j := range list {
				paths[i] = s.ensurePath(j)
			}
			return paths, nil
		},
		"ListJobsWithProperties": func(sender dbus.Sender, filter map[string]dbus.Variant) ([]jobEntry, *dbus.Error) {
			s.touch()
			list, _, err := s.listJobs(filter)
			if err != nil {
				return nil, toDBusError(err)
			}
			v, err := s.viewerOf(string(sender))
			if err != nil {
				return nil, toDBusError(err)
			}
			return s.entries(list, v), nil
		},
		"ListJobsPaged": func(sender dbus.Sender, filter map[string]dbus.Variant) ([]jobRow, uint32, *dbus.Error) {
			s.touch()
			list, total, err := s.listJobs(filter)
			if err != nil {
				return nil, 0, toDBusError(err)
			}
			v, err := s.viewerOf(string(sender))
			if err != nil {
				return nil, 0, toDBusError(err)
			}
			return s.rows(list, v), uint32(min(total, 1<<32-1)), nil
		},
		"ListJobsPagedEx": func(sender dbus.Sender, filter map[string]dbus.Variant) ([]jobRowEx, uint32, *dbus.Error) {
			s.touch()
			list, total, err := s.listJobs(filter)
			if err != nil {
				return nil, 0, toDBusError(err)
			}
			v, err := s.viewerOf(string(sender))
			if err != nil {
				return nil, 0, toDBusError(err)
			}
			return s.rowsEx(list, v), uint32(min(total, 1<<32-1)), nil
		},
		"GetJob": func(id string) (dbus.ObjectPath, *dbus.Error) {
			s.touch()
			j, err := s.b.Job(id)
			if err != nil {
				return "", toDBusError(err)
			}
			p, _ := s.ensure(j)
			return p, nil
		},
		"Submit": func(msg dbus.Message, sender dbus.Sender, manifest string, options map[string]dbus.Variant) ([]string, []dbus.ObjectPath, *dbus.Error) {
			s.touch()
			ids, paths, err := s.submit(msg, sender, manifest, options)
			if err != nil {
				return nil, nil, toDBusError(err)
			}
			return ids, paths, nil
		},
		"Validate": func(sender dbus.Sender, manifest string) (bool, []string, *dbus.Error) {
			s.touch()
			if err := checkManifestSize("validate", manifest); err != nil {
				return false, []string{err.Message}, nil
			}
			// The files are checked as the caller, as Submit would.
			uid, err := s.callerUID(sender)
			if err != nil {
				return false, nil, toDBusError(err)
			}
			if err := s.acquireParse(); err != nil {
				return false, nil, toDBusError(err)
			}
			ok, problems := s.b.Validate([]byte(manifest), uid)
			s.releaseParse()
			if problems == nil {
				problems = []string{}
			}
			return ok, problems, nil
		},
		"Cancel": func(msg dbus.Message, sender dbus.Sender, id string) *dbus.Error {
			s.touch()
			if err := s.cancel(msg, sender, id); err != nil {
				return toDBusError(err)
			}
			return nil
		},
		"Retry": func(msg dbus.Message, sender dbus.Sender, id string) (string, dbus.ObjectPath, *dbus.Error) {
			s.touch()
			j, err := s.retry(msg, sender, id)
			if err != nil {
				return "", "", toDBusError(err)
			}
			p, _ := s.ensure(j)
			return j.ID, p, nil
		},
		"GarbageCollect": s.garbageCollect,
		"NotifyTest":     s.notifyTest,
		"GetAnalytics":   s.getAnalytics,
		"ListTemplates":  s.listTemplates,
		"ListSchedules":  s.listSchedules,
		"ListHosts":      s.listHosts,
		"ListImages": func(sender dbus.Sender) ([]imageRow, []string, *dbus.Error) {
			s.touch()
			rows, dirs, err := s.listImages(sender)
			if err != nil {
				return nil, nil, toDBusError(err)
			}
			return rows, dirs, nil
		},
		"GetJobReport": func(msg dbus.Message, sender dbus.Sender, id string) (string, *dbus.Error) {
			s.touch()
			rep, err := s.jobReport(msg, sender, id)
			if err != nil {
				return "", toDBusError(err)
			}
			return rep, nil
		},
		"SetQueue": func(msg dbus.Message, sender dbus.Sender, action string) *dbus.Error {
			s.touch()
			if err := s.setQueue(msg, sender, action); err != nil {
				return toDBusError(err)
			}
			return nil
		},
		"Reprioritize": func(msg dbus.Message, sender dbus.Sender, id string, priority int32) *dbus.Error {
			s.touch()
			if err := s.reprioritize(msg, sender, id, int(priority)); err != nil {
				return toDBusError(err)
			}
			return nil
		},
		"GetJobLog": func(msg dbus.Message, sender dbus.Sender, id string, lines uint32, after, format string) ([]string, string, *dbus.Error) {
			s.touch()
			got, cursor, err := s.jobLog(msg, sender, id, lines, after, format)
			if err != nil {
				return nil, "", toDBusError(err)
			}
			return got, cursor, nil
		},
	})
}

// jobMethods is the io.hyper2kvm.Agent1.Job method table, served for
// every job object (the job is the one at the call's path).
func (s *Server) jobMethods() map[string]any {
	return map[string]any{
		"Cancel": func(msg dbus.Message, sender dbus.Sender) *dbus.Error {
			s.touch()
			id, derr := s.jobAt(msg)
			if derr != nil {
				return derr
			}
			if err := s.cancel(msg, sender, id); err != nil {
				return toDBusError(err)
			}
			return nil
		},
	}
}

// jobEntry is one (oa{sv}) of ListJobsWithProperties.
type jobEntry struct {
	Path  dbus.ObjectPath
	Props map[string]dbus.Variant
}

// listJobs is the page the filter asks for and how many jobs match.
func (s *Server) listJobs(filter map[string]dbus.Variant) ([]jobs.Job, int, error) {
	f, p, err := parseFilter(filter)
	if err != nil {
		return nil, 0, err
	}
	list, total := s.b.JobPage(f, p)
	return list, total, nil
}

// rows is list as ListJobsPaged answers it, exporting any job not yet on
// the bus.
// v is the caller: details only of the jobs they may read.
func (s *Server) rows(list []jobs.Job, v viewer) []jobRow {
	out := make([]jobRow, len(list))
	for i, j := range list {
		p, known := s.ensureJob(j)
		out[i] = rowOf(p, v.show(known))
	}
	return out
}

func (s *Server) entries(list []jobs.Job, v viewer) []jobEntry {
	out := make([]jobEntry, len(list))
	for i, j := range list {
		p, known := s.ensureJob(j)
		out[i].Path, out[i].Props = p, jobProps(v.show(known))
	}
	return out
}

// maxParses is how many manifests Validate and Submit parse at once; more
// calls wait their turn.
const maxParses = 2

// checkManifestSize refuses a manifest argument over manifest.MaxSize
// before anything parses it.
func checkManifestSize(verb, m string) *apierr.Error {
	if len(m) <= manifest.MaxSize {
		return nil
	}
	return apierr.New(apierr.InvalidManifest, "cannot %s: the manifest is %d bytes, larger than the limit of %d bytes (1 MiB); split a large batch into several manifests",
		verb, len(m), manifest.MaxSize)
}

// acquireParse waits for one of the maxParses turns.
func (s *Server) acquireParse() error {
	select {
	case s.parses <- struct{}{}:
		return nil
	case <-s.ctx.Done():
		return apierr.New(apierr.Internal, "cannot parse the manifest: the agent is stopping")
	}
}

func (s *Server) releaseParse() { <-s.parses }

func (s *Server) submit(msg dbus.Message, sender dbus.Sender, manifest string, options map[string]dbus.Variant) ([]string, []dbus.ObjectPath, error) {
	if err := checkManifestSize("submit", manifest); err != nil {
		return nil, nil, err
	}
	opts, err := parseSubmitOptions(options)
	if err != nil {
		return nil, nil, err
	}
	if err := s.authorize(msg, sender, polkit.ActionSubmit, "submit a manifest"); err != nil {
		return nil, nil, err
	}
	if err := s.authorizeSources(msg, sender, manifest); err != nil {
		return nil, nil, err
	}
	uid, err := s.callerUID(sender)
	if err != nil {
		return nil, nil, err
	}
	if err := s.acquireParse(); err != nil {
		return nil, nil, err
	}
	list, err := s.b.Submit(s.ctx, []byte(manifest), opts, uid)
	s.releaseParse()
	if err != nil {
		return nil, nil, err
	}
	ids := make([]string, len(list))
	paths := make([]dbus.ObjectPath, len(list))
	for i, j := range list {
		ids[i] = j.ID
		paths[i], _ = s.ensure(j)
	}
	s.log.Info("manifest submitted", "uid", uid, "jobs", ids)
	return ids, paths, nil
}

// cancel lets a job's submitter cancel it under ActionCancel; anyone else,
// and any job that came in through the drop folder, needs ActionCancelAny.
func (s *Server) cancel(msg dbus.Message, sender dbus.Sender, id string) error {
	j, err := s.b.Job(id)
	if err != nil {
		return err
	}
	uid, err := s.callerUID(sender)
	if err != nil {
		return err
	}
	action := polkit.ActionCancelAny
	if j.SubmittedBy >= 0 && j.SubmittedBy == uid {
		action = polkit.ActionCancel
	}
	if err := s.authorize(msg, sender, action, "cancel job "+id); err != nil {
		return err
	}
	if err := s.b.Cancel(s.ctx, id); err != nil {
		return err
	}
	s.log.Info("job cancelled", "uid", uid, "job", id)
	return nil
}

// QueueController is a Backend whose queue can be paused, resumed and
// drained.
type QueueController interface {
	SetQueue(ctx context.Context, action string) error
}

// setQueue pauses, resumes or drains the host's queue under ActionManage.
func (s *Server) setQueue(msg dbus.Message, sender dbus.Sender, action string) error {
	qc, ok := s.b.(QueueController)
	if !ok {
		return apierr.New(apierr.Internal, "this agent has no queue control")
	}
	if err := s.authorize(msg, sender, polkit.ActionManage, action+" the queue"); err != nil {
		return err
	}
	if err := qc.SetQueue(s.ctx, action); err != nil {
		return err
	}
	s.log.Info("queue "+action, "sender", string(sender))
	return nil
}

// Reprioritizer is a Backend that can change a pending job's priority.
type Reprioritizer interface {
	Reprioritize(ctx context.Context, id string, priority int) error
}

// reprioritize lets a job's submitter reorder it under ActionSubmit (as
// submitting it again with --priority would); anyone else needs
// ActionManage.
func (s *Server) reprioritize(msg dbus.Message, sender dbus.Sender, id string, priority int) error {
	rp, ok := s.b.(Reprioritizer)
	if !ok {
		return apierr.New(apierr.Internal, "this agent cannot reprioritize jobs")
	}
	j, err := s.b.Job(id)
	if err != nil {
		return err
	}
	uid, err := s.callerUID(sender)
	if err != nil {
		return err
	}
	action := polkit.ActionManage
	if j.SubmittedBy >= 0 && j.SubmittedBy == uid {
		action = polkit.ActionSubmit
	}
	if err := s.authorize(msg, sender, action, "reprioritize job "+id); err != nil {
		return err
	}
	if err := rp.Reprioritize(s.ctx, id, priority); err != nil {
		return err
	}
	s.log.Info("job reprioritized", "uid", uid, "job", id, "priority", priority)
	return nil
}

// retry lets a job's submitter queue it again under ActionSubmit (it is
// their own manifest, submitted again); anyone else, and any job that came
// in through the drop folder without an owner, needs ActionManage.
func (s *Server) retry(msg dbus.Message, sender dbus.Sender, id string) (jobs.Job, error) {
	old, err := s.b.Job(id)
	if err != nil {
		return jobs.Job{}, err
	}
	uid, err := s.callerUID(sender)
	if err != nil {
		return jobs.Job{}, err
	}
	action := polkit.ActionManage
	if old.SubmittedBy >= 0 && old.SubmittedBy == uid {
		action = polkit.ActionSubmit
	}
	if err := s.authorize(msg, sender, action, "retry job "+id); err != nil {
		return jobs.Job{}, err
	}
	j, err := s.b.Retry(s.ctx, id, uid)
	if err != nil {
		return jobs.Job{}, err
	}
	s.log.Info("job retried", "uid", uid, "job", id, "new", j.ID)
	return j, nil
}

// jobLog answers GetJobLog to a caller allowed to read the job: root and
// the job's submitter without asking, anyone else under ActionRead (which
// the rules file grants group hyper2kvm). A log holds paths and guest
// names, so it is not for every local user.
func (s *Server) jobLog(msg dbus.Message, sender dbus.Sender, id string, lines uint32, after, format string) ([]string, string, error) {
	j, err := s.b.Job(id)
	if err != nil {
		return nil, "", err
	}
	uid, err := s.callerUID(sender)
	if err != nil {
		return nil, "", err
	}
	if uid != 0 && (j.SubmittedBy < 0 || j.SubmittedBy != uid) {
		if err := s.authorize(msg, sender, polkit.ActionRead, "read the log of job "+id); err != nil {
			return nil, "", err
		}
	}
	return s.b.JobLog(s.ctx, j.ID, int(min(lines, 1<<20)), after, format)
}

// ImageBackend is a Backend that also serves ListImages.
type ImageBackend interface {
	// Images is the images under the import directories that uid can
	// read, and the directories.
	Images(uid int64) ([]apitype.Image, []string)
}

// imageRow is one (ssts) of ListImages.
type imageRow struct {
	Path, Format string
	Size         uint64
	Manifest     string
}

// listImages answers ListImages with the images the caller can read.
func (s *Server) listImages(sender dbus.Sender) ([]imageRow, []string, error) {
	uid, err := s.callerUID(sender)
	if err != nil {
		return nil, nil, err
	}
	ib, ok := s.b.(ImageBackend)
	if !ok {
		return []imageRow{}, []string{}, nil
	}
	imgs, dirs := ib.Images(uid)
	rows := make([]imageRow, len(imgs))
	for i, im := range imgs {
		rows[i] = imageRow{im.Path, im.Format, uint64(max(im.Size, 0)), im.Manifest}
	}
	if dirs == nil {
		dirs = []string{}
	}
	return rows, dirs, nil
}

// ReportBackend is a Backend that also serves GetJobReport; the server
// answers Internal for one that does not.
type ReportBackend interface {
	// JobReport is the engine's report of job id as JSON, nil while it
	// has none.
	JobReport(id string) ([]byte, error)
}

// jobReport answers GetJobReport to the callers GetJobLog answers: the
// report names files and guests as the log does.
func (s *Server) jobReport(msg dbus.Message, sender dbus.Sender, id string) (string, error) {
	j, err := s.b.Job(id)
	if err != nil {
		return "", err
	}
	uid, err := s.callerUID(sender)
	if err != nil {
		return "", err
	}
	if uid != 0 && (j.SubmittedBy < 0 || j.SubmittedBy != uid) {
		if err := s.authorize(msg, sender, polkit.ActionRead, "read the report of job "+id); err != nil {
			return "", err
		}
	}
	rb, ok := s.b.(ReportBackend)
	if !ok {
		return "", apierr.New(apierr.Internal, "cannot read the report of job %s: this agent does not serve reports", id)
	}
	rep, err := rb.JobReport(j.ID)
	return string(rep), err
}

// authorize asks the Authorizer about action for the caller, allowing
// interaction only when the call carried ALLOW_INTERACTIVE_AUTHORIZATION.
// Anything but a clean yes is AccessDenied naming the action.
func (s *Server) authorize(msg dbus.Message, sender dbus.Sender, action, what string) error {
	interactive := msg.Flags&dbus.FlagAllowInteractiveAuthorization != 0
	ok, err := s.check(string(sender), action, interactive)
	if ok && err == nil {
		return nil
	}
	reason := "not authorized"
	switch {
	case errors.Is(err, polkit.ErrInteractionRequired):
		reason = "interactive authentication required"
	case err != nil:
		reason = "authorization check failed: " + err.Error()
		s.log.Warn("authorization check failed, denying", "sender", sender, "action", action, "err", err)
	}
	s.log.Info("access denied", "sender", sender, "action", action, "reason", reason)
	return apierr.New(apierr.AccessDenied, "cannot %s: %s (polkit action %s)", what, reason, action)
}

// check asks polkit about action for the caller: for a bridge connection
// acting for a token's owner, as that user (never interactively), else
// for the bus name sender.
func (s *Server) check(sender, action string, interactive bool) (bool, error) {
	uid, ok, err := s.actorUID(sender)
	if !ok {
		return s.authz.Authorize(s.ctx, sender, action, interactive)
	}
	if err != nil {
		return false, err
	}
	if uid == 0 {
		return true, nil
	}
	ua, isUA := s.authz.(UIDAuthorizer)
	if !isUA {
		return false, errors.New("cannot ask polkit about a token's owner")
	}
	return ua.AuthorizeUID(s.ctx, uint32(uid), action)
}

// callerUID is the uid the call acts as: the token owner's for a bridge
// connection that showed one (ActAs), else the bus's uid behind sender.
func (s *Server) callerUID(sender dbus.Sender) (int64, error) {
	if uid, ok, err := s.actorUID(string(sender)); ok {
		return uid, err
	}
	return s.busUID(string(sender))
}

// summaryEntry is one (ud) of GetMetrics' job_seconds and stage_seconds:
// a count and a sum of seconds.
type summaryEntry struct {
	Count   uint32
	Seconds float64
}

// metricsDict is GetMetrics' a{sv}; docs/DBUS.md lists the keys.
func metricsDict(m apitype.Metrics) map[string]dbus.Variant {
	count := func(n int) uint32 { return uint32(min(max(n, 0), 1<<32-1)) }
	byState := make(map[string]uint32, len(m.Jobs))
	for st, n := range m.Jobs {
		byState[string(st)] = count(n)
	}
	summaries := func(in map[string]apitype.Summary) map[string]summaryEntry {
		out := make(map[string]summaryEntry, len(in))
		for k, v := range in {
			out[k] = summaryEntry{count(v.Count), v.Seconds}
		}
		return out
	}
	jobSeconds := make(map[string]apitype.Summary, len(m.JobSeconds))
	for st, v := range m.JobSeconds {
		jobSeconds[string(st)] = v
	}
	return map[string]dbus.Variant{
		"jobs":                  dbus.MakeVariant(byState),
		"job_seconds":           dbus.MakeVariant(summaries(jobSeconds)),
		"stage_seconds":         dbus.MakeVariant(summaries(m.StageSeconds)),
		"jobs_with_stage_times": dbus.MakeVariant(count(m.JobsWithStageTimes)),
		"converted_bytes":       dbus.MakeVariant(uint64(max(m.ConvertedBytes, 0))),
	}
}

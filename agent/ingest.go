package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/notify"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
)

// Claim kinds.
const (
	kindManifest  = "manifest"
	kindImage     = "image"
	kindSubmitted = "submitted"
)

// claimBatch bounds how many claims of one scan share a save: a burst of
// drops costs one fsynced append per batch, and its jobs are announced a
// batch at a time.
const claimBatch = 500

// scanLocked looks at to_be_processed/ once: refuses what can never be taken and
// claims what is stable. Called with a.mu held.
//
// The jobs of up to claimBatch claimed files are saved together before
// any of them is announced or can be started (scheduleLocked runs after scanLocked).
// A crash before that save leaves their files in processing/ with no job,
// and recovery queues them again.
func (a *Agent) scanLocked(ctx context.Context) {
	if a.queueState() == queueDraining {
		return // claims no file until resumed
	}
	t0 := time.Now()
	ready, rejected, waiting, busy, err := a.q.Scan()
	a.scanCost = time.Since(t0)
	if err != nil {
		a.log.Errorf(nil, "%v", err)
		return
	}
	a.waiting = waiting
	a.dropped = waiting + busy
	for _, r := range rejected {
		a.refuse(r.Name, r.Reason)
	}
	pending, _ := a.counts()
	run := claimRun{a: a}
	for _, e := range ready {
		if pending >= a.cfg.MaxQueued {
			// Back-pressure: leave the rest where it is until jobs finish.
			a.dropped++
			continue
		}
		kind := kindManifest
		if e.Kind == queue.Image {
			kind = kindImage
		}
		claimed, err := a.q.Claim(e.Name)
		var re *queue.RefusedError
		switch {
		case errors.As(err, &re):
			run.flush()
			a.failNewClaim(claimed, e.Name, kind, -1, "refused: "+re.Reason, nil)
			continue
		case err != nil:
			a.log.Errorf(Fields{FieldManifest: e.Name}, "%v", err)
			continue
		}
		a.log.Infof(Fields{FieldManifest: claimed}, "claimed %s", e.Name)
		// The file's owner dropped it: the job is theirs to cancel, and
		// runs with their rights only.
		pending += run.add(claimed, e.Name, kind, e.ModTime, int64(e.UID), int64(e.UID))
	}
	run.flush()
}

// claimRun turns claimed files into jobs so that the jobs of up to
// claimBatch of them share one save, made before any of them is announced
// or can start; an invalid file settles as failed at once.
type claimRun struct {
	a     *Agent
	batch []queued
}

// add prepares the jobs of one claimed file and returns how many it made.
func (c *claimRun) add(claimed, original, kind string, fileTime time.Time, dropper, submittedBy int64) int {
	recs, msg, problems := c.a.prepare(claimed, original, kind, fileTime, dropper, submittedBy)
	if msg != "" {
		c.flush()
		c.a.failNewClaim(claimed, original, kind, submittedBy, msg, problems)
		return 0
	}
	for _, r := range recs {
		c.batch = append(c.batch, queued{r, original})
	}
	if len(c.batch) >= claimBatch {
		c.flush()
	}
	return len(recs)
}

// flush saves the jobs gathered so far, then announces them.
func (c *claimRun) flush() {
	if len(c.batch) > 0 {
		c.a.save()
		c.a.announce(c.batch)
		c.batch = c.batch[:0]
	}
}

// queued is a new job and the file name it came from, to announce.
type queued struct {
	r    *record
	from string
}

// refuse moves a dropped file that will never be taken to failed/ with
// the reason, and records a failed job so that ListJobs shows it.
func (a *Agent) refuse(name, reason string) {
	a.q.Forget(name)
	r := a.newFailedRecord(queue.SafeName(name), name, "refused: "+reason, nil)
	t, err := a.q.Reserve(name, false, a.now())
	if err == nil {
		err = a.q.Finish(a.q.Dir(queue.ToBeProcessed), name, t, a.settlement(&claim{Original: name, Jobs: []string{r.ID}}, []*record{r}, "failed"))
	}
	if err != nil {
		a.log.Errorf(Fields{FieldManifest: name}, "cannot refuse %q: %v", name, err)
		a.st.remove(r.ID)
		return
	}
	r.ReportPath = t.ReportPath()
	a.st.touch(r)
	a.save()
	a.log.Warnf(Fields{FieldManifest: name, FieldJobID: r.ID}, "refused %q: %s", name, reason)
	a.emitLocked(apitype.JobNew, r, nil)
}

func (a *Agent) newFailedRecord(claimName, original, msg string, validation []string) *record {
	now := a.now()
	r := &record{
		Job:        jobs.Job{ID: a.newID(), Name: nameFromFile(original), Manifest: claimName, SubmittedBy: -1, CreatedAt: now, Host: a.host},
		Claim:      claimName,
		Validation: validation,
	}
	r.enterState(jobs.Pending, transition{}, now)
	r.enterState(jobs.Failed, transition{why: msg, stage: "claim"}, now)
	a.st.add(r)
	return r
}

// failNewClaim settles a claimed file that gives no job (invalid, refused).
func (a *Agent) failNewClaim(claimed, original, kind string, submittedBy int64, msg string, validation []string) {
	r := a.newFailedRecord(claimed, original, msg, validation)
	r.SubmittedBy = submittedBy
	a.st.touch(r)
	c := &claim{Name: claimed, Original: original, Kind: kind, Jobs: []string{r.ID}, ClaimedAt: a.now(),
		Error: msg, Validation: validation, SubmittedBy: submittedBy}
	a.st.putClaim(c)
	a.save()
	a.log.Warnf(Fields{FieldManifest: claimed, FieldJobID: r.ID}, "%s: %s", original, msg)
	a.emitLocked(apitype.JobNew, r, nil)
	a.settleClaimLocked(c)
}

// ingestLocked turns a claimed file into jobs (one per VM), saved before they
// are announced, or settles it as failed when it is invalid. Called with
// a.mu held.
func (a *Agent) ingestLocked(ctx context.Context, claimed, original, kind string, fileTime time.Time, dropper, submittedBy int64) []*record {
	recs, msg, problems := a.prepare(claimed, original, kind, fileTime, dropper, submittedBy)
	if msg != "" {
		a.failNewClaim(claimed, original, kind, submittedBy, msg, problems)
		return nil
	}
	a.save()
	batch := make([]queued, len(recs))
	for i, r := range recs {
		batch[i] = queued{r, original}
	}
	a.announce(batch)
	return recs
}

// prepare reads a claimed file and adds its claim and jobs to the store,
// unsaved. msg is set instead when the file is invalid (problems are the
// manifest's validation errors); the store is then unchanged.
func (a *Agent) prepare(claimed, original, kind string, fileTime time.Time, dropper, submittedBy int64) (recs []*record, msg string, problems []string) {
	m, problems, err := a.load(claimed, kind)
	if err == nil && len(problems) == 0 {
		problems = a.checkManifest(m, kind, dropper)
	}
	if err == nil && len(problems) == 0 && kind == kindImage && !m.Batch {
		m.Name = a.freeNameLocked(m.Name)
	}
	if err != nil || len(problems) > 0 {
		msg := "invalid manifest"
		if err != nil {
			msg = err.Error()
		} else {
			msg += ": " + strings.Join(problems, "; ")
		}
		return nil, msg, problems
	}
	c := &claim{Name: claimed, Original: original, Kind: kind, Batch: m.Batch, ClaimedAt: a.now(), SubmittedBy: submittedBy}
	conc := a.cfg.MaxConcurrentJobs
	if m.Batch && m.Concurrency > 0 {
		conc = min(m.Concurrency, conc)
	}
	batch := ""
	for _, vm := range m.Split() {
		raw, _ := json.Marshal(vm)
		r := &record{
			Job:   jobs.Job{ID: a.newID(), Name: vm.Name, Manifest: claimed, SubmittedBy: submittedBy, CreatedAt: a.now(), Host: a.host},
			Claim: claimed, VM: raw, FileTime: fileTime, DropperUID: dropper, Concurrency: conc,
		}
		r.enterState(jobs.Pending, transition{}, r.CreatedAt)
		if vm.Priority != nil {
			r.Priority = *vm.Priority
		}
		r.NotBefore, r.NotAfter = vm.Schedule.Window()
		r.Retry = vm.Retry
		if r.Retry == nil {
			r.Retry = a.cfg.Job.Retry.Manifest() // agent.yaml's job.retry
		}
		a.placeNewLocked(r)
		if m.Batch {
			if batch == "" {
				batch = "b" + r.ID
			}
			r.Batch = batch
		}
		r.Unit = jobs.UnitName(r.ID)
		a.st.add(r)
		a.pend.add(r)
		c.Jobs = append(c.Jobs, r.ID)
		recs = append(recs, r)
	}
	a.st.putClaim(c)
	return recs, "", nil
}

// announce logs and signals saved new jobs and asks for a schedule.
func (a *Agent) announce(batch []queued) {
	for _, q := range batch {
		a.log.Infof(jobFields(q.r), "job %s queued: %s from %s", q.r.ID, q.r.Name, q.from)
		a.emitLocked(apitype.JobNew, q.r, nil)
	}
	a.wake()
}

// load reads and parses a claimed file. problems are the manifest's
// validation errors; err is set when the file cannot be read or parsed.
func (a *Agent) load(claimed, kind string) (*manifest.Manifest, []string, error) {
	path := filepath.Join(a.q.Dir(queue.Processing), claimed)
	var data []byte
	if kind == kindImage {
		var err error
		if data, err = a.imageManifest(claimed, path); err != nil {
			return nil, nil, err
		}
	} else {
		f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("cannot read manifest: %w", err)
		}
		defer f.Close()
		data, err = io.ReadAll(io.LimitReader(f, a.cfg.MaxManifestSize+1))
		if err != nil {
			return nil, nil, fmt.Errorf("cannot read manifest: %w", err)
		}
		if int64(len(data)) > a.cfg.MaxManifestSize {
			return nil, nil, fmt.Errorf("manifest is larger than the limit of %d bytes", a.cfg.MaxManifestSize)
		}
	}
	m, err := manifest.Parse(data)
	var ps manifest.Problems
	var se *manifest.SyntaxError
	switch {
	case errors.As(err, &ps):
		return nil, ps.Strings(), nil
	case errors.As(err, &se):
		return nil, []string{se.Error()}, nil
	case err != nil:
		return nil, nil, fmt.Errorf("cannot parse manifest: %w", err)
	}
	return m, nil, nil
}

// imageManifest is the manifest given to a disk image dropped directly:
// the configured default pipeline loading the image where it now lies.
func (a *Agent) imageManifest(claimed, path string) ([]byte, error) {
	return a.imageManifestFor(nameFromFile(claimed), claimed, path)
}

// imageManifestFor is the manifest of job name converting the image at
// path, whose file name is file.
func (a *Agent) imageManifestFor(name, file, path string) ([]byte, error) {
	pipe := map[string]any{}
	for k, v := range a.cfg.DefaultPipeline {
		pipe[k] = v
	}
	pipe["load"] = map[string]any{"source_type": imageSourceType(path, file), "source_path": path}
	m := map[string]any{"version": manifest.Version, "name": name, "pipeline": pipe,
		"priority": a.cfg.Job.Priority}
	return json.Marshal(m)
}

// nameFromFile makes a job name out of a file name: the stem, with
// characters manifest names do not allow replaced.
func nameFromFile(file string) string {
	stem := strings.TrimSuffix(file, filepath.Ext(file))
	b := []byte(stem)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			b[i] = '_'
		}
	}
	s := strings.TrimLeft(string(b), "._-")
	if s == "" {
		s = "vm"
	}
	return s[:min(len(s), 64)]
}

// forbidden are trees no job may read a source from or write outputs to.
var forbidden = []string{"/etc", "/proc", "/sys", "/dev", "/run", "/boot", "/usr", "/bin", "/sbin", "/lib", "/lib64"}

// checkManifest applies the agent's own rules on top of manifest
// validation: files exist and have the declared format, no path leads into
// the queue, the agent's state, another job's output or the system, and
// the dropper or submitter could read the source themselves.
func (a *Agent) checkManifest(m *manifest.Manifest, kind string, uid int64) []string {
	var problems []string
	problems = append(problems, manifest.CheckFiles(m).Strings()...)
	problems = append(problems, checkCaps(m, uid, a.cfg.Limits.UserMax, physicalMemory())...)
	if m.Notify != nil {
		if err := notify.CheckURL(m.Notify.URL, a.cfg.Notify.AllowedHosts, true); err != nil {
			problems = append(problems, "notify.url: "+err.Error())
		}
	}
	var acc *access
	if uid > 0 {
		var err error
		if acc, err = accessFor(uid); err != nil {
			return append(problems, err.Error())
		}
	}
	queueRoot, stateDir, outputDir := resolve(a.cfg.ManifestWorkflowDir), resolve(a.cfg.StateDir), resolve(a.cfg.OutputDir)
	check := func(prefix string, p *manifest.Pipeline) {
		if p == nil {
			return
		}
		src := resolve(p.Load.SourcePath)
		sp := prefix + ".load.source_path"
		imageHere := kind == kindImage && filepath.Dir(src) == resolve(a.q.Dir(queue.Processing))
		if p.Load.IsRemote() {
			problems = append(problems, checkRemote(prefix+".load", &p.Load, a.srcs.dir(), a.srcs.creds())...)
		} else {
			switch {
			case imageHere:
			case within(src, queueRoot):
				problems = append(problems, sp+": points into the drop folder; drop the image itself or keep it elsewhere")
			case within(src, outputDir):
				problems = append(problems, sp+": points into the output directory, where other jobs' outputs are")
			case within(src, stateDir):
				problems = append(problems, sp+": points into the agent's state directory")
			}
			for _, f := range forbidden {
				if within(src, f) {
					problems = append(problems, fmt.Sprintf("%s: points into %s, which holds no disk images", sp, f))
				}
			}
			// One problem for one fault: a source that does not exist (or is
			// no image) is not also one the submitter cannot read.
			if acc != nil && !imageHere && !hasProblem(problems, sp) {
				if err := acc.canRead(p.Load.SourcePath); err != nil {
					problems = append(problems, fmt.Sprintf("%s: the submitter cannot read it (%v)", sp, err))
				}
			}
		}
		if p.Convert == nil || p.Convert.OutputDir == "" {
			return
		}
		op := prefix + ".convert.output_dir"
		out := resolve(p.Convert.OutputDir)
		switch {
		case within(out, queueRoot) || within(queueRoot, out):
			problems = append(problems, op+": points into the drop folder")
		case within(out, outputDir):
			problems = append(problems, op+": points into the agent's output directory, where each job gets its own directory; leave output_dir empty to use it")
		case within(out, stateDir):
			problems = append(problems, op+": points into the agent's state directory")
		}
		for _, f := range append(forbidden, "/") {
			if out == f || (f != "/" && within(out, f)) {
				problems = append(problems, fmt.Sprintf("%s: refusing to write into %s", op, f))
			}
		}
		if acc != nil {
			if err := acc.canCreateIn(p.Convert.OutputDir); err != nil {
				problems = append(problems, fmt.Sprintf("%s: the submitter cannot write there (%v)", op, err))
			}
		}
	}
	if m.Batch {
		files := map[string]int{} // resolved output_dir + file -> first VM writing it
		for i := range m.VMs {
			p := m.VMs[i].Pipeline
			check(fmt.Sprintf("vms[%d].pipeline", i), p)
			if p == nil || p.Convert == nil || p.Convert.OutputDir == "" {
				continue
			}
			// Validation compares the paths as written; two spellings of
			// one directory (a symbolic link) collide just the same when
			// two VMs would write the same file name there.
			dir := resolve(p.Convert.OutputDir)
			for _, f := range manifest.OutputFiles(m.VMs[i].Name, p) {
				key := dir + "\x00" + f
				if j, dup := files[key]; dup && j != i {
					if filepath.Clean(m.VMs[j].Pipeline.Convert.OutputDir) != filepath.Clean(p.Convert.OutputDir) {
						problems = append(problems, fmt.Sprintf("vms[%d].pipeline.convert.output_dir: %s is the same directory as the output_dir of vms[%d] (%s), and both would write %s there; give one of them another output_path or output_dir",
							i, p.Convert.OutputDir, j, m.VMs[j].Name, f))
					}
					break
				}
				files[key] = i
			}
		}
	} else {
		check("pipeline", m.Pipeline)
	}
	return problems
}

// fileOwner is the uid owning a claimed file, -1 when unknown.
func fileOwner(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Uid)
	}
	return -1
}

// hasProblem reports whether problems has one for the field path.
func hasProblem(problems []string, path string) bool {
	for _, p := range problems {
		if strings.HasPrefix(p, path+": ") {
			return true
		}
	}
	return false
}

// imageSourceType is the source_type of the image at path: what its bytes
// are, not what its name says (a raw disk named .vmdk is raw); the name's
// only when the bytes cannot be read.
func imageSourceType(path, name string) string {
	if f, err := imgfmt.Detect(path); err == nil {
		if st := manifest.SourceTypeOf(f); st != "" {
			return st
		}
	}
	return queue.ImageType(name)
}

// submit is Submit, for the agent's own callers too (a schedule's
// firing): the same parsing, checks and intake as a client's submit.
func (a *Agent) submit(ctx context.Context, data []byte, o apitype.SubmitOptions, uid int64) ([]jobs.Job, error) {
	if int64(len(data)) > a.cfg.MaxManifestSize {
		return nil, apierr.New(apierr.InvalidManifest, "cannot submit: manifest is larger than %d bytes", a.cfg.MaxManifestSize)
	}
	if o.Image != "" {
		var err error
		if data, err = a.submittedImage(o.Image, data, uid); err != nil {
			return nil, err
		}
		o.Name = nameFromFile(filepath.Base(o.Image)) + ".json"
	}
	m, problems := parseForSubmit(data)
	if len(problems) > 0 {
		return nil, &apierr.Error{Kind: apierr.InvalidManifest, Message: "cannot submit: invalid manifest", Details: problems}
	}
	name, err := submitName(o.Name, m, data)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.touch()
	if o.Image != "" {
		// As for a dropped image: a name no other job has.
		if n := a.freeNameLocked(m.Name); n != m.Name {
			if data, err = a.imageManifestFor(n, filepath.Base(o.Image), o.Image); err != nil {
				return nil, apierr.New(apierr.Internal, "cannot submit image %s: %v", o.Image, err)
			}
			m.Name = n
		}
	}
	if problems := a.checkManifest(m, kindSubmitted, uid); len(problems) > 0 {
		return nil, &apierr.Error{Kind: apierr.InvalidManifest, Message: "cannot submit: invalid manifest", Details: problems}
	}
	if pending, _ := a.counts(); pending >= a.cfg.MaxQueued {
		return nil, apierr.New(apierr.QueueFull, "cannot submit: %d jobs are already queued", pending)
	}
	claimed, err := a.q.Put(name, data)
	if err != nil {
		return nil, apierr.New(apierr.Internal, "%v", err)
	}
	if uid >= 0 {
		os.Lchown(filepath.Join(a.q.Dir(queue.Processing), claimed), int(uid), -1)
	}
	recs := a.ingestLocked(ctx, claimed, name, kindSubmitted, a.now(), uid, uid)
	if len(recs) == 0 {
		// Checked above; only a race with the file system gets here.
		return nil, apierr.New(apierr.InvalidManifest, "cannot submit: the manifest was refused; see failed/")
	}
	out := make([]jobs.Job, len(recs))
	for i, r := range recs {
		out[i] = r.Job
	}
	return out, nil
}

// submittedImage is the manifest of a disk image submitted by path (the
// Submit option image): what the drop folder makes of a dropped image, the
// image left where it is. The caller must be able to read it, and its
// bytes, not its name, say what it is: text is refused.
func (a *Agent) submittedImage(p string, data []byte, uid int64) ([]byte, error) {
	const field = "pipeline.load.source_path"
	if len(bytes.TrimSpace(data)) > 0 {
		return nil, apierr.New(apierr.InvalidArgs, "cannot submit: give either a manifest or an image, not both")
	}
	if !filepath.IsAbs(p) {
		return nil, apierr.New(apierr.InvalidArgs, "cannot submit image %q: give its absolute path", p)
	}
	refuse := func(format string, args ...any) error {
		return &apierr.Error{Kind: apierr.InvalidManifest, Message: "cannot submit image " + p,
			Details: []string{field + ": " + fmt.Sprintf(format, args...)}}
	}
	if uid > 0 {
		acc, err := accessFor(uid)
		if err != nil {
			return nil, refuse("%v", err)
		}
		if err := acc.canRead(p); err != nil {
			return nil, refuse("the submitter cannot read it (%v)", err)
		}
	}
	fi, err := os.Lstat(p)
	switch {
	case err != nil:
		return nil, refuse("cannot look at %s: %v", p, err)
	case !fi.Mode().IsRegular():
		return nil, refuse("%s is not a regular file", p)
	case fi.Size() == 0:
		return nil, refuse("%s is empty, not a disk image", p)
	}
	if err := imgfmt.NotImage(p); err != nil {
		return nil, refuse("%v", err)
	}
	return a.imageManifestFor(nameFromFile(filepath.Base(p)), filepath.Base(p), p)
}

func parseForSubmit(data []byte) (*manifest.Manifest, []string) {
	m, err := manifest.Parse(data)
	var ps manifest.Problems
	switch {
	case errors.As(err, &ps):
		return nil, ps.Strings()
	case err != nil:
		return nil, []string{err.Error()}
	}
	return m, nil
}

// submitName is the file name a submitted manifest gets in the queue.
func submitName(want string, m *manifest.Manifest, data []byte) (string, error) {
	if want != "" {
		if why := queue.BadName(want); why != "" || strings.ContainsRune(want, '/') || queue.Ignored(want) {
			if why == "" {
				why = `must be a plain file name not starting with "." or ending in ".partial"`
			}
			return "", apierr.New(apierr.InvalidArgs, "cannot submit: name %q: %s", want, why)
		}
		if k, ok := queue.KindOf(want); !ok || k != queue.Manifest {
			return "", apierr.New(apierr.InvalidArgs, "cannot submit: name %q must end in .json, .yaml or .yml", want)
		}
		return want, nil
	}
	base := m.Name
	if m.Batch {
		base = "batch"
		if len(m.VMs) > 0 {
			base = "batch-" + m.VMs[0].Name
		}
	}
	ext := ".yaml"
	if t := strings.TrimSpace(string(data)); strings.HasPrefix(t, "{") {
		ext = ".json"
	}
	return nameFromFile(base) + ext, nil
}

package agent

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/coreos/go-systemd/v22/journal"
)

// Journal field names the agent and worker log with, so that
// `journalctl HYPER2KVM_JOB_ID=<id>` finds everything about a job.
const (
	FieldJobID    = "HYPER2KVM_JOB_ID"
	FieldStage    = "HYPER2KVM_STAGE"
	FieldManifest = "HYPER2KVM_MANIFEST"
)

// Logger writes structured messages to the journal, or to a writer
// (stderr) when the journal is not there.
type Logger struct {
	mu      sync.Mutex
	w       io.Writer
	journal bool
	verbose bool
}

// NewLogger returns a logger to the journal when it is reachable, else to w.
func NewLogger(w io.Writer, verbose bool) *Logger {
	if w == nil {
		w = os.Stderr
	}
	return &Logger{w: w, journal: journal.Enabled(), verbose: verbose}
}

// Fields are extra journal fields; keys are journal field names.
type Fields map[string]string

func (l *Logger) log(p journal.Priority, f Fields, format string, a ...any) {
	if l == nil {
		return
	}
	msg := fmt.Sprintf(format, a...)
	if l.journal {
		vars := map[string]string{"SYSLOG_IDENTIFIER": "hyper2kvmd"}
		for k, v := range f {
			if v != "" {
				vars[k] = v
			}
		}
		if journal.Send(msg, p, vars) == nil {
			return
		}
	}
	var extra []string
	for k, v := range f {
		if v != "" {
			extra = append(extra, k+"="+v)
		}
	}
	sort.Strings(extra)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(extra) > 0 {
		msg += " (" + strings.Join(extra, " ") + ")"
	}
	fmt.Fprintf(l.w, "<%d>%s\n", p, msg)
}

// Infof logs at info priority.
func (l *Logger) Infof(f Fields, format string, a ...any) { l.log(journal.PriInfo, f, format, a...) }

// Warnf logs at warning priority.
func (l *Logger) Warnf(f Fields, format string, a ...any) { l.log(journal.PriWarning, f, format, a...) }

// Errorf logs at error priority.
func (l *Logger) Errorf(f Fields, format string, a ...any) { l.log(journal.PriErr, f, format, a...) }

// Debugf logs at debug priority when verbose.
func (l *Logger) Debugf(f Fields, format string, a ...any) {
	if l != nil && l.verbose {
		l.log(journal.PriDebug, f, format, a...)
	}
}

func jobFields(r *record) Fields {
	return Fields{FieldJobID: r.ID, FieldStage: r.Stage, FieldManifest: r.Claim}
}

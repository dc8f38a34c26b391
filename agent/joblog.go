package agent

import (
	"strconv"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// MaxLogLines bounds one JobLog answer, whatever the caller asks for: the
// lines travel in one D-Bus message.
const MaxLogLines = 5000

// jobLogArgs is journalctl's command line for JobLog. The id is a job's
// (the store's, never the caller's text), the cursor is one argument.
func jobLogArgs(id string, lines int, after, format string) ([]string, error) {
	out := "short-iso"
	switch format {
	case "", "short":
	case "json":
		out = "json"
	default:
		return nil, apierr.New(apierr.InvalidArgs, "cannot read the log in format %q: use short or json", format)
	}
	if lines <= 0 || lines > MaxLogLines {
		lines = MaxLogLines
	}
	if strings.ContainsAny(after, "\n\x00") {
		return nil, apierr.New(apierr.InvalidArgs, "cannot read the log after cursor %q: not a journal cursor", after)
	}
	unit := jobs.UnitName(id)
	args := []string{"--no-pager", "--quiet", "--show-cursor", "--output=" + out, "--lines=" + strconv.Itoa(lines)}
	if after != "" {
		args = append(args, "--after-cursor="+after)
	}
	// _SYSTEMD_UNIT: the worker's output; UNIT: systemd's lines about the
	// unit (started, failed); HYPER2KVM_JOB_ID: the agent's lines. "+" is OR.
	return append(args, "_SYSTEMD_UNIT="+unit, "+", "UNIT="+unit, "+", "HYPER2KVM_JOB_ID="+id), nil
}

// cursorPrefix starts the line --show-cursor prints after the entries.
const cursorPrefix = "-- cursor: "

// splitCursor splits journalctl --show-cursor output into its lines and
// the cursor after the last one ("" when there was none).
func splitCursor(out []byte) ([]string, string) {
	text := strings.TrimRight(string(out), "\n")
	if text == "" {
		return []string{}, ""
	}
	lines := strings.Split(text, "\n")
	cursor := ""
	if last := lines[len(lines)-1]; strings.HasPrefix(last, cursorPrefix) {
		cursor = strings.TrimSpace(strings.TrimPrefix(last, cursorPrefix))
		lines = lines[:len(lines)-1]
	}
	if lines == nil {
		lines = []string{}
	}
	return lines, cursor
}

package dbusapi

import (
	"fmt"
	"strings"

	"github.com/godbus/dbus/v5"
)

// JobPath is the object path of job id: JobPathBase + "/" + the id escaped
// the way systemd's bus_label_escape does it, so that busctl users see the
// same shape as under /org/freedesktop/systemd1/unit.
func JobPath(id string) dbus.ObjectPath {
	return dbus.ObjectPath(JobPathBase + "/" + escapeLabel(id))
}

// JobID returns the id that JobPath encoded in p.
func JobID(p dbus.ObjectPath) (string, error) {
	label, ok := strings.CutPrefix(string(p), JobPathBase+"/")
	if !ok || label == "" || strings.Contains(label, "/") {
		return "", fmt.Errorf("cannot take a job id from %q: not under %s", p, JobPathBase)
	}
	return unescapeLabel(label)
}

// escapeLabel turns everything but ASCII letters, and digits after the
// first character, into "_" and two lowercase hex digits; "" becomes "_".
func escapeLabel(s string) string {
	if s == "" {
		return "_"
	}
	const hex = "0123456789abcdef"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlpha(c) || (i > 0 && isDigit(c)) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('_')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func unescapeLabel(s string) (string, error) {
	if s == "_" {
		return "", nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '_' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("cannot unescape %q: truncated escape", s)
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("cannot unescape %q: bad escape at %d", s, i)
		}
		b.WriteByte(hi<<4 | lo)
		i += 2
	}
	return b.String(), nil
}

func isAlpha(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func unhex(c byte) (byte, bool) {
	switch {
	case isDigit(c):
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

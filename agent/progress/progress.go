// Package progress is the one-line progress format the worker sends to systemd
// as sd_notify STATUS= and the agent reads back from the unit's StatusText
// property (which systemd announces with PropertiesChanged), so that progress
// travels over D-Bus signals without polling or an extra socket.
//
// The line is "STAGE PCT% DONE/TOTAL: TEXT", e.g. "convert 42% 1073741824/2147483648: web01.qcow2".
// PCT is "?" when unknown; DONE/TOTAL (bytes) is optional.
package progress

import (
	"fmt"
	"strconv"
	"strings"
)

// Stages in pipeline order.
var Stages = []string{"load", "inspect", "fix", "convert", "validate"}

// Update is one progress report.
type Update struct {
	Stage   string
	Percent int // 0-100, -1 unknown
	Done    int64
	Total   int64
	Text    string
}

// Format renders u as a STATUS= line.
func Format(u Update) string {
	pct := "?"
	if u.Percent >= 0 {
		pct = strconv.Itoa(min(u.Percent, 100)) + "%"
	}
	s := u.Stage + " " + pct
	if u.Total > 0 {
		s += fmt.Sprintf(" %d/%d", u.Done, u.Total)
	}
	if u.Text != "" {
		s += ": " + strings.ReplaceAll(u.Text, "\n", " ")
	}
	return s
}

// Parse reads a line written by Format. ok is false for any other text.
func Parse(line string) (u Update, ok bool) {
	head, text, _ := strings.Cut(line, ": ")
	f := strings.Fields(head)
	if len(f) < 2 || len(f) > 3 {
		return Update{}, false
	}
	u.Stage, u.Text, u.Percent = f[0], text, -1
	if f[1] != "?" {
		n, err := strconv.Atoi(strings.TrimSuffix(f[1], "%"))
		if err != nil || !strings.HasSuffix(f[1], "%") || n < 0 || n > 100 {
			return Update{}, false
		}
		u.Percent = n
	}
	if len(f) == 3 {
		d, t, found := strings.Cut(f[2], "/")
		var err1, err2 error
		u.Done, err1 = strconv.ParseInt(d, 10, 64)
		u.Total, err2 = strconv.ParseInt(t, 10, 64)
		if !found || err1 != nil || err2 != nil {
			return Update{}, false
		}
	}
	return u, true
}

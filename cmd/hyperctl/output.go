package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"golang.org/x/sys/unix"
)

// isTerminal reports whether f is an *os.File open on a terminal.
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(file.Fd()), unix.TCGETS)
	return err == nil
}

// colour says whether to colour output: only on a terminal, never with
// NO_COLOR set (https://no-color.org) or TERM=dumb.
func (a *app) colour() bool {
	if a.env.getenv("NO_COLOR") != "" || a.env.getenv("TERM") == "dumb" {
		return false
	}
	return a.env.terminal(a.env.stdout)
}

const (
	ansiReset  = "\x1b[0m"
	ansiBold   = "\x1b[1m"
	ansiRed    = "\x1b[31m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiBlue   = "\x1b[34m"
	ansiGrey   = "\x1b[90m"
)

// paint wraps s in an ANSI colour when colour is on.
func (a *app) paint(colour, s string) string {
	if !a.colour() || colour == "" {
		return s
	}
	return colour + s + ansiReset
}

func stateColour(s jobs.State) string {
	switch s {
	case jobs.Completed:
		return ansiGreen
	case jobs.Failed:
		return ansiRed
	case jobs.Cancelled:
		return ansiYellow
	case jobs.Running:
		return ansiBlue
	}
	return ""
}

// jobJSON is a job as -o json prints it: the agent's record with its state
// under "status" too, the REST API's name for it since the original
// product, so every view has the same field ("state" stays for a release).
type jobJSON struct {
	jobs.Job
	Status       jobs.State `json:"status"`
	WarningCount int        `json:"warning_count"`
}

func viewOf(j jobs.Job) jobJSON {
	return jobJSON{Job: j, Status: j.State, WarningCount: len(j.Warnings)}
}

func viewsOf(js []jobs.Job) []jobJSON {
	out := make([]jobJSON, 0, len(js))
	for _, j := range js {
		out = append(out, viewOf(j))
	}
	return out
}

// writeJSON prints v as indented JSON followed by a newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints aligned columns. Cells may carry ANSI colour; widths are
// computed on the visible text so colour does not break alignment.
type table struct {
	rows [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func visibleLen(s string) int {
	n, esc := 0, false
	for _, r := range s {
		switch {
		case r == '\x1b':
			esc = true
		case esc && r == 'm':
			esc = false
		case !esc:
			n++
		}
	}
	return n
}

// lines are the table's rows as padded lines (the last column padded
// too, for a column to follow).
func (t *table) lines() []string {
	widths := t.widths()
	out := make([]string, 0, len(t.rows))
	for _, r := range t.rows {
		var b strings.Builder
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-visibleLen(c)+2))
			} else {
				b.WriteString(strings.Repeat(" ", widths[i]-visibleLen(c)))
			}
		}
		out = append(out, b.String())
	}
	return out
}

// width is how wide the table's lines are.
func (t *table) width() int {
	n := 0
	for i, w := range t.widths() {
		if i > 0 {
			n += 2
		}
		n += w
	}
	return n
}

func (t *table) widths() []int {
	var widths []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], visibleLen(c))
		}
	}
	return widths
}

func (t *table) write(w io.Writer) {
	var widths []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], visibleLen(c))
		}
	}
	for _, r := range t.rows {
		var b strings.Builder
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-visibleLen(c)+2))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// keyValues prints "key: value" lines with aligned values.
func keyValues(w io.Writer, kv [][2]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, p := range kv {
		fmt.Fprintf(tw, "%s:\t%s\n", p[0], p[1])
	}
	tw.Flush()
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}

func formatDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	d = d.Round(time.Second)
	h, m, s := int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60
	if h > 0 {
		return fmt.Sprintf("%dh%02dm%02ds", h, m, s)
	}
	if m > 0 {
		return fmt.Sprintf("%dm%02ds", m, s)
	}
	return fmt.Sprintf("%ds", s)
}

func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// formatMiBs is a transfer rate in MiB/s, as storage people quote it.
func formatMiBs(bytesPerSec float64) string {
	return fmt.Sprintf("%.1f MiB/s", bytesPerSec/(1<<20))
}

func formatProgress(j jobs.Job) string {
	if j.State != jobs.Running {
		return "-"
	}
	s := "?"
	if j.Progress >= 0 {
		s = fmt.Sprintf("%d%%", j.Progress)
	}
	if j.BytesTotal > 0 {
		s += fmt.Sprintf(" (%s of %s)", formatBytes(j.BytesDone), formatBytes(j.BytesTotal))
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// truncate shortens s to n visible runes with an ellipsis.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n || n < 2 {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

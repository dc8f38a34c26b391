package main

import (
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// termWidth is how many columns the output has: $COLUMNS when set, else
// the terminal's width, else 0 (not a terminal: no limit, nothing to fit).
func (a *app) termWidth() int {
	if n, err := strconv.Atoi(a.env.getenv("COLUMNS")); err == nil && n > 0 {
		return n
	}
	if f, ok := a.env.stdout.(*os.File); ok && a.env.terminal(f) {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
			return int(ws.Col)
		}
	}
	return 0
}

// wrap breaks s into lines of at most n characters, at spaces where it
// can and inside a word longer than a line where it must; nothing is cut.
func wrap(s string, n int) []string {
	if n < 1 || utf8.RuneCountInString(s) <= n {
		return []string{s}
	}
	var lines []string
	var cur []rune
	for _, word := range strings.Fields(s) {
		w := []rune(word)
		if len(cur) > 0 && len(cur)+1+len(w) > n {
			lines = append(lines, string(cur))
			cur = nil
		}
		if len(cur) > 0 {
			cur = append(cur, ' ')
		}
		cur = append(cur, w...)
		for len(cur) > n {
			lines = append(lines, string(cur[:n]))
			cur = cur[n:]
		}
	}
	if len(cur) > 0 || len(lines) == 0 {
		lines = append(lines, string(cur))
	}
	return lines
}

package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/hyper2kvm/hyper2kvm/test/box"
)

// hyperctlTerm is a command running on a pseudo-terminal, as a person at a
// terminal would run it: hyperctl sees a TTY on stdin and stdout.
type hyperctlTerm struct {
	t    testing.TB
	cmd  *exec.Cmd
	tty  *os.File
	mu   sync.Mutex
	out  strings.Builder
	more chan struct{} // signalled when output arrives
	done chan struct{} // closed when the reader ends (the command exited)
	err  error         // the command's exit, valid after done
}

var ansiSeq = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

// startTerm starts cmd on a new pty (80x24) and keeps reading its output.
func startTerm(t testing.TB, cmd *exec.Cmd) *hyperctlTerm {
	t.Helper()
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 120})
	if err != nil {
		t.Fatalf("start %v on a pty: %v", cmd.Args, err)
	}
	h := &hyperctlTerm{t: t, cmd: cmd, tty: tty, more: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := tty.Read(buf)
			if n > 0 {
				h.mu.Lock()
				h.out.Write(buf[:n])
				h.mu.Unlock()
				select {
				case h.more <- struct{}{}:
				default:
				}
			}
			if err != nil {
				break // EIO once the command and its children closed the pty
			}
		}
		h.err = cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(func() {
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
		<-h.done
		tty.Close()
	})
	return h
}

// Raw is everything written so far, escape sequences included.
func (h *hyperctlTerm) Raw() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.out.String()
}

// Text is the output without escape sequences and carriage returns.
func (h *hyperctlTerm) Text() string {
	return strings.ReplaceAll(ansiSeq.ReplaceAllString(h.Raw(), ""), "\r", "")
}

// WaitFor waits until the output, from byte offset from of Text, contains
// s, and returns the offset just after it.
func (h *hyperctlTerm) WaitFor(ctx context.Context, from int, s string) int {
	h.t.Helper()
	for {
		text := h.Text()
		if from <= len(text) {
			if i := strings.Index(text[from:], s); i >= 0 {
				return from + i + len(s)
			}
		}
		select {
		case <-h.more:
		case <-h.done:
			// The reader may have added the last bytes just before ending.
			text = h.Text()
			if from <= len(text) {
				if i := strings.Index(text[from:], s); i >= 0 {
					return from + i + len(s)
				}
			}
			h.t.Fatalf("command ended (%v) before printing %q; output:\n%s", h.err, s, text)
		case <-ctx.Done():
			h.t.Fatalf("waiting for %q: %v; output:\n%s", s, ctx.Err(), text)
		}
	}
}

// WaitForAny waits until the output from offset from contains one of ss
// and returns which one and the offset just after it.
func (h *hyperctlTerm) WaitForAny(ctx context.Context, from int, ss ...string) (string, int) {
	h.t.Helper()
	find := func() (string, int) {
		text := h.Text()
		best, at := "", -1
		if from <= len(text) {
			for _, s := range ss {
				if i := strings.Index(text[from:], s); i >= 0 && (at < 0 || i < at) {
					best, at = s, i
				}
			}
		}
		if at < 0 {
			return "", -1
		}
		return best, from + at + len(best)
	}
	for {
		if s, at := find(); at >= 0 {
			return s, at
		}
		select {
		case <-h.more:
		case <-h.done:
			if s, at := find(); at >= 0 {
				return s, at
			}
			h.t.Fatalf("command ended (%v) before printing any of %q; output:\n%s", h.err, ss, h.Text())
		case <-ctx.Done():
			h.t.Fatalf("waiting for any of %q: %v; output:\n%s", ss, ctx.Err(), h.Text())
		}
	}
}

// Send types line and Enter.
func (h *hyperctlTerm) Send(line string) {
	h.t.Helper()
	if _, err := h.tty.Write([]byte(line + "\r")); err != nil {
		h.t.Fatalf("type %q: %v", line, err)
	}
}

// Wait waits for the command to exit and returns its exit code.
func (h *hyperctlTerm) Wait(ctx context.Context) int {
	h.t.Helper()
	select {
	case <-h.done:
	case <-ctx.Done():
		h.t.Fatalf("command did not exit: %v; output:\n%s", ctx.Err(), h.Text())
	}
	if h.err == nil {
		return 0
	}
	if xe, ok := h.err.(*exec.ExitError); ok {
		return xe.ExitCode()
	}
	h.t.Fatalf("command: %v", h.err)
	return -1
}

// boxTermCommand runs args inside the box (as root, or as user) so that the
// pty is its controlling terminal.
func boxTermCommand(b *box.Box, user string, args ...string) *exec.Cmd {
	full := []string{"-t", fmt.Sprint(b.PID()), "-a", "--"}
	if user != "" {
		full = append(full, "runuser", "-u", user, "--")
	}
	full = append(full, args...)
	cmd := exec.Command("nsenter", full...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8", "TERM=xterm"}
	cmd.Dir = "/"
	return cmd
}

// buildHyperctl builds the CLI for tests that run it on the host.
func buildHyperctl(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hyperctl")
	cmd := exec.Command("go", "build", "-o", p, "./cmd/hyperctl")
	cmd.Dir = box.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/hyperctl: %v\n%s", err, out)
	}
	return p
}

func hyperctlCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

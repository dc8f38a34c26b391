// Package v2v runs virt-v2v-in-place, libguestfs's converter, as a FIX
// backend: it adapts a guest (Windows above all: virtio-win drivers into
// the driver store, boot-critical storage registry entries, first-boot
// scripts that install the rest and remove VMware Tools) on the qcow2
// overlay the engine made, never on the source. Its --machine-readable
// messages become the job's progress and report.
//
// virt-v2v-in-place is Debian's virt-v2v package (2.x; -i disk needs
// nbdkit). virtio-win is not in Debian: the admin points VIRTIO_WIN at
// its ISO or unpacked directory (agent.yaml fix.virtio_win).
package v2v

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hyper2kvm/hyper2kvm/agent/guest"
)

// Tool is the program this backend runs.
const Tool = "virt-v2v-in-place"

// Installed says whether virt-v2v-in-place is on PATH.
func Installed() bool {
	_, err := exec.LookPath(Tool)
	return err == nil
}

// StaticIP is a static address virt-v2v gives the NIC with MAC after
// conversion (its --mac MAC:ip:ADDR,GW,LEN,DNS...).
type StaticIP struct {
	MAC     string
	Address string
	Gateway string
	Prefix  int
	DNS     []string
}

// Options is one conversion.
type Options struct {
	Image  string // the qcow2 overlay: changed in place
	Format string // its format, "qcow2"
	// VirtioWin is the virtio-win ISO or directory (VIRTIO_WIN); empty
	// for a Linux guest.
	VirtioWin string
	StaticIPs []StaticIP
	// WorkDir is scratch space (the appliance's TMPDIR).
	WorkDir string
	// Progress gets the percent of the conversion and virt-v2v's message.
	Progress func(pct int, msg string)
	// Log gets every line virt-v2v prints (for the job's journal).
	Log func(line string)
}

// Message is one of virt-v2v's machine-readable messages.
type Message struct {
	Type      string `json:"type"` // message | info | warning | error
	Message   string `json:"message"`
	Timestamp string `json:"timestamp,omitempty"`
}

// Result is what the conversion did, for the report.
type Result struct {
	Args     []string  `json:"args"`
	Env      []string  `json:"env,omitempty"` // VIRTIO_WIN=...
	Messages []Message `json:"messages,omitempty"`
	Seconds  float64   `json:"duration_seconds"`
	// Converted names the guest as virt-v2v saw it ("Windows Server 2022
	// Standard" from "Converting ... to run on KVM").
	Converted string `json:"converted,omitempty"`
}

// Warnings are the result's warning messages.
func (r *Result) Warnings() []string {
	var out []string
	for _, m := range r.Messages {
		if m.Type == "warning" {
			out = append(out, m.Message)
		}
	}
	return out
}

// stages map virt-v2v-in-place's messages, in the order it prints them,
// to the percent of FIX they start.
var stages = []struct {
	prefix string
	pct    int
}{
	{"Setting up the source", 5},
	{"Opening the source", 10},
	{"Inspecting the source", 40},
	{"Checking for sufficient free disk space", 50},
	{"Converting ", 60},
	{"Mapping filesystem data", 85},
	{"Closing the overlay", 90},
	{"Finishing off", 99},
}

var converting = regexp.MustCompile(`^Converting (.+) to run on KVM$`)

// Args are virt-v2v-in-place's arguments for o.
func Args(o Options) []string {
	args := []string{"--machine-readable", "-i", "disk"}
	if o.Format != "" {
		args = append(args, "-if", o.Format)
	}
	for _, s := range o.StaticIPs {
		v := s.MAC + ":ip:" + s.Address
		if s.Gateway != "" || s.Prefix > 0 || len(s.DNS) > 0 {
			v += "," + s.Gateway
		}
		if s.Prefix > 0 || len(s.DNS) > 0 {
			v += "," + fmt.Sprint(s.Prefix)
		}
		for _, d := range s.DNS {
			v += "," + d
		}
		args = append(args, "--mac", v)
	}
	return append(args, o.Image)
}

// ToolsDir is where virt-v2v looks for rhsrvany.exe or pvvxsvc.exe, the
// service that runs first-boot scripts in a Windows guest:
// $VIRT_TOOLS_DATA_DIR, else /usr/share/virt-tools.
func ToolsDir() string {
	if d := os.Getenv("VIRT_TOOLS_DATA_DIR"); d != "" {
		return d
	}
	return "/usr/share/virt-tools"
}

// Firstboot says whether virt-v2v can install Windows first-boot scripts
// (the QEMU guest agent, VMware Tools removal, static addresses): it needs
// rhsrvany.exe or pvvxsvc.exe in ToolsDir, which Debian does not ship.
func Firstboot() bool {
	for _, f := range []string{"rhsrvany.exe", "pvvxsvc.exe"} {
		if st, err := os.Stat(filepath.Join(ToolsDir(), f)); err == nil && st.Mode().IsRegular() {
			return true
		}
	}
	return false
}

// FirstbootHelp says how to give virt-v2v what Firstboot looks for.
func FirstbootHelp() string {
	return "virt-v2v has no rhsrvany.exe or pvvxsvc.exe in " + ToolsDir() + ", so it cannot install Windows first-boot scripts " +
		"(the QEMU guest agent, VMware Tools removal, static addresses): put rhsrvany.exe there (Fedora's mingw32-srvany package, " +
		"or built from github.com/rwmjones/rhsrvany; Debian does not package it)"
}

// CheckVirtioWin says whether p can be virt-v2v's VIRTIO_WIN: an existing
// directory, or a regular file (the ISO).
func CheckVirtioWin(p string) error {
	if p == "" {
		return errors.New("not set")
	}
	if !filepath.IsAbs(p) {
		return fmt.Errorf("%q is not an absolute path", p)
	}
	st, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("%w", err)
	}
	if !st.IsDir() && !st.Mode().IsRegular() {
		return fmt.Errorf("%s is neither a directory nor an ISO file", p)
	}
	return nil
}

// Run converts o.Image in place. The error carries virt-v2v's own error
// message; the Result is returned either way.
func Run(ctx context.Context, o Options) (*Result, error) {
	res := &Result{Args: Args(o)}
	if !Installed() {
		return res, fmt.Errorf("%s not found: install Debian's virt-v2v package (and nbdkit, which its -i disk needs)", Tool)
	}
	dir, err := os.MkdirTemp(o.WorkDir, "v2v-")
	if err != nil {
		return res, fmt.Errorf("cannot create virt-v2v's scratch directory: %w", err)
	}
	defer os.RemoveAll(dir)
	cmd := exec.CommandContext(ctx, Tool, res.Args...)
	cmd.Env = guest.LibguestfsEnv(dir)
	if o.VirtioWin != "" {
		cmd.Env = append(cmd.Env, "VIRTIO_WIN="+o.VirtioWin)
		res.Env = append(res.Env, "VIRTIO_WIN="+o.VirtioWin)
	}
	if d := os.Getenv("VIRT_TOOLS_DATA_DIR"); d != "" {
		cmd.Env = append(cmd.Env, "VIRT_TOOLS_DATA_DIR="+d)
		res.Env = append(res.Env, "VIRT_TOOLS_DATA_DIR="+d)
	}
	cmd.Dir = dir
	cmd.WaitDelay = 10 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	var stderr bytes.Buffer
	errW := &lineWriter{log: o.Log, buf: &stderr}
	cmd.Stderr = errW
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("cannot start %s: %w", Tool, err)
	}
	var mu sync.Mutex
	rerr := readMessages(stdout, func(m Message) {
		mu.Lock()
		defer mu.Unlock()
		res.Messages = append(res.Messages, m)
		if c := converting.FindStringSubmatch(m.Message); c != nil {
			res.Converted = c[1]
		}
		if m.Type == "message" && o.Progress != nil {
			for _, s := range stages {
				if strings.HasPrefix(m.Message, s.prefix) {
					o.Progress(s.pct, m.Message)
				}
			}
		}
	}, o.Log)
	werr := cmd.Wait()
	res.Seconds = time.Since(start).Seconds()
	if rerr != nil {
		// Its result stands (virt-v2v's exit status says whether it
		// converted), but what could not be read is in the report.
		res.Messages = append(res.Messages, Message{Type: "warning", Message: rerr.Error()})
	}
	if werr == nil {
		return res, nil
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	var msgs []string
	for _, m := range res.Messages {
		if m.Type == "error" {
			msgs = append(msgs, m.Message)
		}
	}
	if len(msgs) == 0 {
		// No machine-readable error: its stderr's last lines say why.
		msgs = append(msgs, lastLines(stderr.String(), 5))
	}
	return res, fmt.Errorf("%s failed (%v): %s", Tool, werr, strings.Join(msgs, "; "))
}

// Bounds on what virt-v2v's stdout may make this process hold: its
// messages carry guest-controlled text (file names, registry values), so
// a hostile guest decides their length and number.
const (
	maxLine     = 1 << 20 // bytes of one line read; the rest is skipped
	maxMessage  = 4 << 10 // bytes of one message kept in the result
	maxMessages = 10000   // messages kept in the result
	maxProblems = 5       // problems named in the error; the rest counted
)

// readMessages reads virt-v2v's stdout to its end: JSON messages (one a
// line) and the human-readable "[  12.3] ..." lines it prints beside
// them. It never stops early (virt-v2v must not block on a full pipe) and
// holds at most maxLine bytes of a line. What it could not read (a
// malformed or truncated JSON line, a line over maxLine, messages past
// maxMessages) is the error, naming the lines; the messages read are
// passed to on all the same.
func readMessages(r io.Reader, on func(Message), log func(string)) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var problems []string
	more, kept := 0, 0
	problem := func(format string, a ...any) {
		if len(problems) < maxProblems {
			problems = append(problems, fmt.Sprintf(format, a...))
		} else {
			more++
		}
	}
	for n := 1; ; n++ {
		line, long, partial, err := readLine(br, maxLine)
		if len(line) == 0 && !long && err != nil {
			if err != io.EOF {
				problem("after line %d: %v", n-1, err)
			}
			break
		}
		switch {
		case long:
			problem("line %d: longer than %d bytes, skipped", n, maxLine)
		case !bytes.HasPrefix(line, []byte("{")):
			// The JSON lines repeat these: the journal gets these only.
			if log != nil {
				log(string(line))
			}
		default:
			var m Message
			if jerr := json.Unmarshal(line, &m); jerr != nil || m.Type == "" {
				what := "not a message"
				switch {
				case partial:
					what = "cut off (no newline at the end)"
				case jerr != nil:
					what = "malformed JSON: " + jerr.Error()
				}
				problem("line %d: %s: %s", n, what, clip(string(line), 80))
				break
			}
			if kept == maxMessages {
				problem("line %d: more than %d messages; the rest are not kept", n, maxMessages)
				kept++
			}
			if kept > maxMessages {
				break
			}
			kept++
			m.Message = clip(m.Message, maxMessage)
			m.Timestamp = clip(m.Timestamp, 64)
			m.Type = clip(m.Type, 16)
			on(m)
		}
		if err != nil {
			if err != io.EOF {
				problem("after line %d: %v", n, err)
			}
			break
		}
	}
	if len(problems) == 0 {
		return nil
	}
	if more > 0 {
		problems = append(problems, fmt.Sprintf("and %d more", more))
	}
	return fmt.Errorf("cannot read all of %s's machine-readable output: %s", Tool, strings.Join(problems, "; "))
}

// readLine reads one line without its newline, keeping at most limit
// bytes: long says more were skipped, partial that the stream ended
// before a newline. err is io.EOF at the end of the stream.
func readLine(br *bufio.Reader, limit int) (line []byte, long, partial bool, err error) {
	for {
		chunk, err := br.ReadSlice('\n')
		switch {
		case long:
		case len(line)+len(chunk) > limit+1: // +1: the newline
			long, line = true, nil
		default:
			line = append(line, chunk...)
		}
		switch {
		case err == nil:
			return bytes.TrimSuffix(line, []byte("\n")), long, false, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return line, long, len(line) > 0 || long, err
		}
	}
}

// clip cuts s to at most n bytes, on a character boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

// lineWriter keeps stderr (bounded) and passes each line to log.
type lineWriter struct {
	log     func(string)
	buf     *bytes.Buffer
	partial []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	if w.buf.Len() < 1<<20 {
		w.buf.Write(p)
	}
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		if w.log != nil {
			w.log(string(w.partial[:i]))
		}
		w.partial = w.partial[i+1:]
	}
	if len(w.partial) > 64<<10 {
		w.partial = w.partial[:0]
	}
	return len(p), nil
}

func lastLines(s string, n int) string {
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "If reporting bugs") || strings.HasPrefix(l, "virt-v2v-in-place -v -x") {
			continue
		}
		keep = append(keep, l)
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return strings.Join(keep, " ")
}

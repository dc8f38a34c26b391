package test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// chromium drives Debian's headless Chromium over the DevTools protocol on
// --remote-debugging-pipe: NUL-terminated JSON messages, commands written
// to the browser's fd 3, answers and events read from its fd 4. The standard
// library has no WebSocket, and the pipe needs no port either.
type chromium struct {
	t       testing.TB
	cmd     *exec.Cmd
	in      *os.File // the browser's fd 3
	mu      sync.Mutex
	nextID  int
	pending map[int]chan cdpMessage
	session string
	done    chan struct{}

	evMu     sync.Mutex
	requests []string // every URL the page asked for
	problems []string // exceptions, console errors, CSP reports
}

type cdpMessage struct {
	ID        int             `json:"id,omitempty"`
	Method    string          `json:"method,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *cdpError       `json:"error,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
}

type cdpError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// chromiumPath finds the browser or skips the test.
func chromiumPath(t testing.TB) string {
	for _, p := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Skip("chromium not found (Debian package chromium, see packaging/deps.txt)")
	return ""
}

// startChromium starts a headless browser with a fresh profile and opens
// one page (a tab) attached in flat mode.
func startChromium(t testing.TB, width, height int) *chromium {
	t.Helper()
	bin := chromiumPath(t)
	profile := t.TempDir()
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--disable-extensions", "--disable-default-apps", "--mute-audio",
		"--user-data-dir="+profile, "--remote-debugging-pipe", fmt.Sprintf("--window-size=%d,%d", width, height))
	cmd.ExtraFiles = []*os.File{inR, outW}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	inR.Close()
	outW.Close()
	c := &chromium{t: t, cmd: cmd, in: inW, pending: map[int]chan cdpMessage{}, done: make(chan struct{})}
	go c.read(outR)
	t.Cleanup(func() {
		c.in.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("chromium stderr (tail):\n%s", tailLines(stderr.String(), 30))
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var created struct{ TargetID string }
	if err := c.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &created); err != nil {
		t.Fatalf("chromium: %v\n%s", err, tailLines(stderr.String(), 30))
	}
	var attached struct{ SessionID string }
	if err := c.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": created.TargetID, "flatten": true}, &attached); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	c.session = attached.SessionID
	for _, m := range []string{"Page.enable", "Runtime.enable", "Network.enable", "Log.enable"} {
		if err := c.call(ctx, c.session, m, nil, nil); err != nil {
			t.Fatalf("chromium %s: %v", m, err)
		}
	}
	c.resize(ctx, width, height)
	return c
}

func tailLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func (c *chromium) read(r *os.File) {
	defer close(c.done)
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		raw, err := br.ReadBytes(0)
		if err != nil {
			return
		}
		var m cdpMessage
		if json.Unmarshal(raw[:len(raw)-1], &m) != nil {
			continue
		}
		if m.ID != 0 {
			c.mu.Lock()
			ch := c.pending[m.ID]
			delete(c.pending, m.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- m
			}
			continue
		}
		c.event(m)
	}
}

// event records what a user would notice: requests leaving the page, and
// errors in the page.
func (c *chromium) event(m cdpMessage) {
	c.evMu.Lock()
	defer c.evMu.Unlock()
	switch m.Method {
	case "Network.requestWillBeSent":
		var p struct{ Request struct{ URL string } }
		json.Unmarshal(m.Params, &p)
		c.requests = append(c.requests, p.Request.URL)
	case "Runtime.exceptionThrown":
		var p struct {
			ExceptionDetails struct {
				Text      string
				Exception struct{ Description string }
			}
		}
		json.Unmarshal(m.Params, &p)
		c.problems = append(c.problems, "exception: "+p.ExceptionDetails.Text+" "+p.ExceptionDetails.Exception.Description)
	case "Log.entryAdded":
		var p struct {
			Entry struct{ Level, Source, Text, URL string }
		}
		json.Unmarshal(m.Params, &p)
		// A refused request (401, 422) is logged by the browser as a
		// network error; it is expected, not a problem of the page.
		if p.Entry.Level == "error" && p.Entry.Source != "network" {
			c.problems = append(c.problems, fmt.Sprintf("log %s: %s %s", p.Entry.Source, p.Entry.Text, p.Entry.URL))
		}
	case "Runtime.consoleAPICalled":
		var p struct {
			Type string
			Args []struct {
				Value       any
				Description string
			}
		}
		json.Unmarshal(m.Params, &p)
		if p.Type == "error" {
			var parts []string
			for _, a := range p.Args {
				parts = append(parts, fmt.Sprint(a.Value, a.Description))
			}
			c.problems = append(c.problems, "console.error: "+strings.Join(parts, " "))
		}
	}
}

// call sends one command and stores its result in out.
func (c *chromium) call(ctx context.Context, session, method string, params any, out any) error {
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	ch := make(chan cdpMessage, 1)
	c.pending[id] = ch
	c.mu.Unlock()
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	b, _ := json.Marshal(msg)
	c.mu.Lock()
	_, err := c.in.Write(append(b, 0))
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			return fmt.Errorf("%s: %s", method, m.Error.Message)
		}
		if out != nil {
			return json.Unmarshal(m.Result, out)
		}
		return nil
	case <-c.done:
		return fmt.Errorf("%s: the browser exited", method)
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// eval runs JavaScript in the page (awaiting a promise) and returns its
// value as JSON-decoded into out (may be nil).
func (c *chromium) eval(ctx context.Context, expr string, out any) error {
	var res struct {
		Result struct {
			Value json.RawMessage
		}
		ExceptionDetails *struct {
			Text      string
			Exception struct{ Description string }
		}
	}
	err := c.call(ctx, c.session, "Runtime.evaluate", map[string]any{
		"expression": expr, "awaitPromise": true, "returnByValue": true, "userGesture": true,
	}, &res)
	if err != nil {
		return err
	}
	if res.ExceptionDetails != nil {
		return fmt.Errorf("js %q: %s %s", expr, res.ExceptionDetails.Text, res.ExceptionDetails.Exception.Description)
	}
	if out != nil && len(res.Result.Value) > 0 {
		return json.Unmarshal(res.Result.Value, out)
	}
	return nil
}

// mustEval is eval that fails the test.
func (c *chromium) mustEval(ctx context.Context, expr string, out any) {
	c.t.Helper()
	if err := c.eval(ctx, expr, out); err != nil {
		c.t.Fatal(err)
	}
}

// waitJS polls a JavaScript condition until it is true or ctx ends; what
// says what the test waited for, and state (another expression) what the
// page showed instead.
func (c *chromium) waitJS(ctx context.Context, what, cond, state string) {
	c.t.Helper()
	for {
		var ok bool
		err := c.eval(ctx, "!!("+cond+")", &ok)
		if err == nil && ok {
			return
		}
		select {
		case <-ctx.Done():
			var shown any
			if state != "" {
				_ = c.eval(context.Background(), state, &shown)
			}
			c.t.Fatalf("waiting for %s: %v (last error %v); page shows: %v", what, ctx.Err(), err, shown)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *chromium) navigate(ctx context.Context, url string) {
	c.t.Helper()
	if err := c.call(ctx, c.session, "Page.navigate", map[string]any{"url": url}, nil); err != nil {
		c.t.Fatal(err)
	}
	c.waitJS(ctx, "the page to load", `document.readyState === "complete" && location.href.startsWith(`+jsString(url)+`)`, "location.href")
}

func (c *chromium) resize(ctx context.Context, width, height int) {
	c.t.Helper()
	if err := c.call(ctx, c.session, "Emulation.setDeviceMetricsOverride", map[string]any{
		"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600,
	}, nil); err != nil {
		c.t.Fatal(err)
	}
}

// key presses a key on the focused element, as a keyboard user would.
func (c *chromium) key(ctx context.Context, key, code string, keyCode int) {
	c.t.Helper()
	for _, typ := range []string{"keyDown", "keyUp"} {
		if err := c.call(ctx, c.session, "Input.dispatchKeyEvent", map[string]any{
			"type": typ, "key": key, "code": code, "windowsVirtualKeyCode": keyCode,
		}, nil); err != nil {
			c.t.Fatal(err)
		}
	}
}

// screenshot saves the whole page as a PNG under dir.
func (c *chromium) screenshot(ctx context.Context, dir, name string) string {
	c.t.Helper()
	var shot struct{ Data string }
	if err := c.call(ctx, c.session, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &shot); err != nil {
		c.t.Fatal(err)
	}
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil || len(png) < 8 || string(png[1:4]) != "PNG" {
		c.t.Fatalf("screenshot %s: not a PNG (%v)", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		c.t.Fatal(err)
	}
	c.t.Logf("screenshot %s", p)
	return p
}

// offOrigin lists the requests that did not go to origin (data: and blob:
// URLs stay in the page).
func (c *chromium) offOrigin(origin string) []string {
	c.evMu.Lock()
	defer c.evMu.Unlock()
	var out []string
	for _, u := range c.requests {
		if strings.HasPrefix(u, origin+"/") || u == origin || strings.HasPrefix(u, "data:") || strings.HasPrefix(u, "blob:") || u == "about:blank" {
			continue
		}
		out = append(out, u)
	}
	return out
}

func (c *chromium) pageProblems() []string {
	c.evMu.Lock()
	defer c.evMu.Unlock()
	return append([]string(nil), c.problems...)
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// evalString is the value of expr as text, for messages.
func (c *chromium) evalString(ctx context.Context, expr string) string {
	var v any
	if err := c.eval(ctx, expr, &v); err != nil {
		return "(" + err.Error() + ")"
	}
	return fmt.Sprint(v)
}

package api_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/api"
	"github.com/hyper2kvm/hyper2kvm/api/apitest"
)

// gatedClient holds every Validate until the gate opens, and records the
// bytes of manifests it holds at once.
type gatedClient struct {
	*apitest.Fake
	entered chan struct{}
	gate    chan struct{}

	once       sync.Once
	mu         sync.Mutex
	held, peak int
}

func newGated(t *testing.T) *gatedClient {
	g := &gatedClient{Fake: apitest.New(), entered: make(chan struct{}, 1000), gate: make(chan struct{})}
	t.Cleanup(g.open) // a failed test must not leave requests hanging
	return g
}

func (g *gatedClient) open() { g.once.Do(func() { close(g.gate) }) }

func (g *gatedClient) Validate(ctx context.Context, m []byte) (bool, []string, error) {
	g.mu.Lock()
	g.held += len(m)
	g.peak = max(g.peak, g.held)
	g.mu.Unlock()
	g.entered <- struct{}{}
	<-g.gate
	g.mu.Lock()
	g.held -= len(m)
	g.mu.Unlock()
	return g.Fake.Validate(ctx, m)
}

// countingBody is a request body that counts what the server read of it.
type countingBody struct {
	r    io.Reader
	read int
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read += n
	return n, err
}

// manifestOfSize is a syntactically valid manifest of exactly n bytes.
func manifestOfSize(n int) []byte {
	head := `{"version":"1.0","name":"web01","pipeline":{"load":{"source_type":"vmdk","source_path":"/data/web01.vmdk"}}}`
	return []byte(head + strings.Repeat(" ", n-len(head)))
}

// Past MaxInFlight bytes of bodies, a request is answered 503 with
// Retry-After before a byte of its body is read; once the bodies in flight
// are done, requests are served again.
func TestBodiesInFlightAreBounded(t *testing.T) {
	g := newGated(t)
	const maxBody = 4096
	e := newEnv(t, func(c *api.Config) { c.Client = g; c.MaxBody = maxBody; c.MaxInFlight = 3 * maxBody })
	body := manifestOfSize(maxBody)

	var wg sync.WaitGroup
	codes := make(chan int, 3)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(e.srv.URL+"/api/workflow/manifest/validate", "application/json", bytes.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	for range 3 {
		<-g.entered
	}

	for _, tc := range []struct {
		name     string
		length   int64 // Content-Length; -1 chunked
		body     []byte
		expect   bool // Expect: 100-continue: the body is never asked for
		wantRead int
	}{
		{"full body", maxBody, body, false, maxBody},
		{"full body, client waits for 100 Continue", maxBody, body, true, 0},
		{"one byte", 1, []byte("{"), false, 1},
		{"chunked", -1, body, false, maxBody},
		{"chunked past the limit", -1, bytes.Repeat(body, 100), false, maxBody + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cb := &countingBody{r: bytes.NewReader(tc.body)}
			req := httptest.NewRequest("POST", "/api/workflow/manifest/validate", cb)
			req.ContentLength = tc.length
			req.RemoteAddr, req.Host = "127.0.0.1:4000", "localhost"
			if tc.expect {
				req.Header.Set("Expect", "100-continue")
			}
			rec := httptest.NewRecorder()
			e.api.ServeHTTP(rec, req)
			a := answer{rec.Code, rec.Header(), rec.Body.Bytes()}
			if a.status != 503 || a.errCode(t) != "busy" {
				t.Fatalf("got %d %s", a.status, a.body)
			}
			if ra := a.header.Get("Retry-After"); ra != "1" {
				t.Errorf("Retry-After %q", ra)
			}
			// Drained, never past the limit, or not read at all.
			if cb.read > tc.wantRead {
				t.Errorf("read %d bytes of a refused body, want at most %d", cb.read, tc.wantRead)
			}
			if g.Submitted() != nil {
				t.Errorf("a refused body reached the agent")
			}
		})
	}
	// Draining holds nothing: a refused 1 MiB body costs a few KiB.
	big := manifestOfSize(1 << 20)
	allocs := testing.AllocsPerRun(5, func() {
		req := httptest.NewRequest("POST", "/api/workflow/manifest/validate", bytes.NewReader(big))
		req.ContentLength = -1
		req.RemoteAddr, req.Host = "127.0.0.1:4000", "localhost"
		e.api.ServeHTTP(httptest.NewRecorder(), req)
	})
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	req := httptest.NewRequest("POST", "/api/workflow/manifest/validate", bytes.NewReader(big))
	req.ContentLength = -1
	req.RemoteAddr, req.Host = "127.0.0.1:4000", "localhost"
	e.api.ServeHTTP(httptest.NewRecorder(), req)
	runtime.ReadMemStats(&ms1)
	if d := ms1.TotalAlloc - ms0.TotalAlloc; d > 256<<10 {
		t.Errorf("refusing a 1 MiB chunked body allocated %d KiB (%v allocations)", d>>10, allocs)
	}

	g.open()
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("a request in flight got %d", c)
		}
	}
	if a := e.do(t, "POST", "/api/workflow/manifest/validate", string(body), ""); a.status != 200 {
		t.Errorf("after the flood: %d %s", a.status, a.body)
	}
}

// The flood of issue 16: a hundred concurrent 1 MiB POSTs to validate
// (no token needed). Each gets 200 or 503, and the bridge never holds more
// than MaxInFlight bytes of bodies.
func TestValidateFlood(t *testing.T) {
	g := newGated(t)
	e := newEnv(t, func(c *api.Config) { c.Client = g; c.MaxBody = api.DefaultMaxBody; c.MaxInFlight = 0 })
	body := manifestOfSize(api.DefaultMaxBody)
	const clients = 100
	inFlight := int(api.DefaultMaxInFlight / api.DefaultMaxBody)

	type result struct {
		code  int
		retry string
		err   error
	}
	results := make(chan result, clients)
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(e.srv.URL+"/api/workflow/manifest/validate", "application/yaml", bytes.NewReader(body))
			if err != nil {
				results <- result{err: err}
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			results <- result{code: resp.StatusCode, retry: resp.Header.Get("Retry-After")}
		}()
	}
	// The first inFlight are held by the agent; every other one must be
	// answered while they are.
	counts := map[int]int{}
	for range clients - inFlight {
		r := <-results
		if r.err != nil {
			t.Fatalf("a request got no answer: %v", r.err)
		}
		counts[r.code]++
		if r.code != 503 || r.retry != "1" {
			t.Errorf("while %d bodies were held: %d (Retry-After %q)", inFlight, r.code, r.retry)
		}
	}
	g.open()
	wg.Wait()
	close(results)
	for r := range results {
		if r.err != nil {
			t.Fatalf("a request got no answer: %v", r.err)
		}
		counts[r.code]++
	}
	if counts[200] != inFlight || counts[503] != clients-inFlight {
		t.Errorf("answers %v, want %d × 200 and %d × 503", counts, inFlight, clients-inFlight)
	}
	if g.peak > int(api.DefaultMaxInFlight) {
		t.Errorf("the agent was handed %d bytes at once, more than %d", g.peak, api.DefaultMaxInFlight)
	}
	t.Logf("answers %v; peak bytes held %d", counts, g.peak)
}

// Every body is bounded, also on endpoints that do not read one.
func TestEveryBodyIsBounded(t *testing.T) {
	e := newEnv(t, nil)
	big := strings.Repeat("x", 10000)
	for _, path := range []string{"/api/workflow/manifest/validate", "/api/workflow/manifest/submit"} {
		a := e.do(t, "POST", path, big, token)
		if a.status != 413 {
			t.Errorf("%s: %d %s", path, a.status, a.body)
		}
	}
}

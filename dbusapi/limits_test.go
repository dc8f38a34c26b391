package dbusapi

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/polkit"
)

// A manifest argument over manifest.MaxSize is refused before the backend
// parses it (issue 16: a 4 MiB Validate took the root agent to 434 MiB).
func TestManifestArgumentCap(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	f.authz.set(map[string]bool{polkit.ActionSubmit: true}, nil)
	const want = "larger than the limit of 1048576 bytes (1 MiB)"
	for _, tc := range []struct {
		name    string
		size    int
		refused bool
	}{
		{"4 MiB", 4 << 20, true},
		{"one byte over", manifest.MaxSize + 1, true},
		{"at the cap", manifest.MaxSize, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(strings.Repeat("#", tc.size))
			f.b.mu.Lock()
			f.b.parsed = 0
			f.b.mu.Unlock()
			ok, problems, err := f.client.Validate(ctx, body)
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			_, serr := f.client.Submit(ctx, body, apitype.SubmitOptions{Name: "big.yaml"}, false)
			f.b.mu.Lock()
			parsed := f.b.parsed
			f.b.mu.Unlock()
			if !tc.refused {
				if parsed != 2 || !ok || serr != nil {
					t.Fatalf("at the cap: parsed %d times, Validate %v %v, Submit %v", parsed, ok, problems, serr)
				}
				return
			}
			if parsed != 0 {
				t.Errorf("the backend parsed %d oversized manifests", parsed)
			}
			if ok || len(problems) != 1 || !strings.Contains(problems[0], "cannot validate: the manifest is") || !strings.Contains(problems[0], want) {
				t.Errorf("Validate = %v %q", ok, problems)
			}
			var ae *apierr.Error
			if !errors.As(serr, &ae) || ae.Kind != apierr.InvalidManifest || !strings.Contains(ae.Message, want) {
				t.Errorf("Submit error = %v", serr)
			}
		})
	}
}

// However many callers, at most maxParses manifests are parsed at once.
func TestParsesAreBounded(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	var now, peak atomic.Int32
	gate := make(chan struct{})
	reached := make(chan struct{}, 16)
	f.b.inParse = func() {
		n := now.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		reached <- struct{}{}
		<-gate
		now.Add(-1)
	}
	const callers = 8
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := f.client.Validate(ctx, []byte(`{"version":"1.0"}`)); err != nil {
				t.Errorf("Validate: %v", err)
			}
		}()
	}
	// maxParses get in; the others wait. (The wait below can only miss
	// a breach, never invent one.)
	for range maxParses {
		<-reached
	}
	select {
	case <-reached:
		t.Errorf("a parse started beyond the %d allowed at once", maxParses)
	case <-time.After(300 * time.Millisecond):
	}
	close(gate)
	wg.Wait()
	if p := peak.Load(); p > maxParses {
		t.Errorf("%d parses at once, want at most %d", p, maxParses)
	}
	if f.b.parsed != callers {
		t.Errorf("%d of %d calls parsed", f.b.parsed, callers)
	}
}

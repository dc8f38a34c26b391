package vsphere

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// What a server answers to a streamed download, checked before a byte is
// used: the size is the descriptor's, a resume gets exactly the range
// asked, a redirect is refused; only a 5xx is asked again.
func TestCheckStreamAnswer(t *testing.T) {
	u, _ := url.Parse("https://vc.example/folder/vm/disk1-flat.vmdk?dsName=ds1")
	const size = 10 << 20
	answer := func(status int, length int64, contentRange string, to *url.URL) *http.Response {
		h := http.Header{}
		if contentRange != "" {
			h.Set("Content-Range", contentRange)
		}
		return &http.Response{StatusCode: status, Status: http.StatusText(status), ContentLength: length, Header: h, Request: &http.Request{URL: to}}
	}
	other, _ := url.Parse("https://elsewhere.example/folder/vm/disk1-flat.vmdk")
	for _, tc := range []struct {
		name  string
		res   *http.Response
		off   int64
		want  string // "" accepted, "retry", or a part of the refusal
		fatal bool
	}{
		{"whole", answer(200, size, "", u), 0, "", false},
		{"whole, chunked", answer(200, -1, "", u), 0, "", false},
		{"whole, declared longer", answer(200, size+1, "", u), 0, "declares", true},
		{"resumed", answer(206, size-4096, "bytes 4096-10485759/10485760", u), 4096, "", false},
		{"resumed, other start", answer(206, size, "bytes 0-10485759/10485760", u), 4096, "Content-Range", true},
		{"resumed, other total", answer(206, size-4096, "bytes 4096-20971519/20971520", u), 4096, "Content-Range", true},
		{"resumed, no Content-Range", answer(206, size-4096, "", u), 4096, "Content-Range", true},
		{"resumed, declared longer", answer(206, size, "bytes 4096-10485759/10485760", u), 4096, "declares", true},
		{"resume answered from the start", answer(200, size, "", u), 4096, "ignored the Range", true},
		{"part to a whole request", answer(206, 4096, "bytes 0-4095/10485760", u), 0, "part of", true},
		{"redirected", answer(200, size, "", other), 0, "redirected", true},
		{"server error", answer(503, 0, "", u), 0, "retry", false},
		{"not found", answer(404, 0, "", u), 0, "404", false},
		{"forbidden", answer(403, 0, "", u), 0, "privileges", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := (&exporter{}).checkStreamAnswer(tc.res, u, tc.off, size)
			switch {
			case tc.want == "":
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
			case tc.want == "retry":
				if !errors.As(err, new(*retryable)) {
					t.Fatalf("got %v, want a retry", err)
				}
			default:
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got %v, want an error saying %q", err, tc.want)
				}
				if got := errors.As(err, new(*hostileError)); got != tc.fatal {
					t.Errorf("hostile (not retried): %v, want %v", got, tc.fatal)
				}
			}
		})
	}
}

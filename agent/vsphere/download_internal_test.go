package vsphere

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/vmware/govmomi/simulator"

	"github.com/hyper2kvm/hyper2kvm/agent/sources"
)

// simClient is a client of a fresh simulator (vspheretest imports this
// package, so the internal tests start one themselves).
func simClient(t *testing.T) *Client {
	t.Helper()
	m := simulator.VPX()
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	m.Service.TLS = new(tls.Config)
	m.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword("u", "p")}
	srv := m.Service.NewServer()
	t.Cleanup(func() { srv.Close(); m.Remove() })
	u := *srv.URL
	u.User = nil
	c, err := Connect(context.Background(), &sources.Source{Name: "t", URL: u.String(), Username: "u", Insecure: true}, "p")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Logout(context.Background()) })
	return c
}

// flaky serves body, dropping the connection halfway through the first
// answer; with honourRange it answers a Range request from there (206),
// else always the whole body (200).
type flaky struct {
	body        []byte
	honourRange bool
	mu          sync.Mutex
	ranges      []string
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	first := len(f.ranges) == 0
	f.ranges = append(f.ranges, r.Header.Get("Range"))
	f.mu.Unlock()
	from := 0
	if rg := r.Header.Get("Range"); rg != "" && f.honourRange {
		from, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, len(f.body)-1, len(f.body)))
		w.Header().Set("Content-Length", strconv.Itoa(len(f.body)-from))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.Header().Set("Content-Length", strconv.Itoa(len(f.body)))
	}
	if first {
		w.Write(f.body[:len(f.body)/2])
		w.(http.Flusher).Flush()
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	w.Write(f.body[from:])
}

func TestDownloadResumes(t *testing.T) {
	c := simClient(t)
	ctx := context.Background()
	body := bytes.Repeat([]byte("hyper2kvm"), 3<<17) // 3.4 MiB, several blocks
	for _, tc := range []struct {
		name        string
		honourRange bool
	}{{"range honoured", true}, {"range ignored", false}} {
		t.Run(tc.name, func(t *testing.T) {
			f := &flaky{body: body, honourRange: tc.honourRange}
			srv := httptest.NewTLSServer(f)
			defer srv.Close()
			u, _ := url.Parse(srv.URL + "/disk")
			var last int64
			x := &exporter{c: c, vm: &VM{}, o: ExportOptions{Progress: func(done, total int64) { last = done }}}
			dst := filepath.Join(t.TempDir(), "disk1.vmdk")
			if err := x.download(ctx, u, dst); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(dst)
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("downloaded %d bytes, want the %d sent (%v)", len(got), len(body), err)
			}
			if len(f.ranges) != 2 || f.ranges[0] != "" || !strings.HasPrefix(f.ranges[1], "bytes=") {
				t.Errorf("requests' Range headers: %q", f.ranges)
			}
			if last != int64(len(body)) {
				t.Errorf("progress ended at %d, want %d", last, len(body))
			}
			if _, err := os.Stat(dst + ".part"); err == nil {
				t.Error("the .part file is left")
			}
		})
	}
}

// A download never replaces a file that is already there.
func TestDownloadNeverOverwrites(t *testing.T) {
	c := simClient(t)
	ctx := context.Background()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("new")) }))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	dst := filepath.Join(t.TempDir(), "disk1.vmdk")
	os.WriteFile(dst, []byte("old"), 0o600)
	x := &exporter{c: c, vm: &VM{}, o: ExportOptions{Progress: func(int64, int64) {}}}
	if err := x.download(ctx, u, dst); err == nil {
		t.Error("download replaced an existing file")
	}
	if b, _ := os.ReadFile(dst); string(b) != "old" {
		t.Errorf("the existing file now holds %q", b)
	}
}

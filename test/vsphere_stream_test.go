package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/sources"
	"github.com/hyper2kvm/hyper2kvm/agent/vsphere"
	"github.com/hyper2kvm/hyper2kvm/agent/vsphere/vspheretest"
)

// TestVSphereStream converts a flat disk of govmomi's simulator while it
// downloads (vsphere.ExportConverted: the download served to qemu-img
// through an NBD export whose reads wait for the bytes) and checks what a
// user would: the output holds the VM's disk (qemu-img compare), the
// download is the disk's flat file, a connection dropped mid-stream
// resumes, and a server that sends more than the disk, a Content-Range
// other than asked, or starts over instead of resuming is refused, and a
// cancel stops it, with nothing left behind (no .part, no output).
func TestVSphereStream(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-img")
	ctx := context.Background()
	const user, pw = "svc-stream", "Stream-Pa55-1c9e"
	s, err := vspheretest.Start(false, "127.0.0.1:0", user, pw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	a, err := vspheretest.Dial(ctx, s.URL, user, pw)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Logout(ctx)

	// 12 MiB: random data, a hole, text; several download blocks.
	raw := filepath.Join(t.TempDir(), "disk.raw")
	data := make([]byte, 12<<20)
	rand.Read(data[:5<<20])
	copy(data[8<<20:], bytes.Repeat([]byte("hyper2kvm streams a flat disk\n"), (4<<20)/30))
	if err := os.WriteFile(raw, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.PutFlatDisk(ctx, s.FirstVM, raw); err != nil {
		t.Fatal(err)
	}
	if err := a.Power(ctx, s.FirstVM, false); err != nil {
		t.Fatal(err)
	}

	// The datastore's answers for the flat file, per case.
	var mu sync.Mutex
	var mode string
	var ranges []string
	var cancelJob context.CancelFunc
	s.WrapDatastore(func(w http.ResponseWriter, r *http.Request, next http.HandlerFunc) {
		if !strings.Contains(r.URL.Path, "-flat.vmdk") {
			next(w, r)
			return
		}
		mu.Lock()
		m, first := mode, len(ranges) == 0
		ranges = append(ranges, r.Header.Get("Range"))
		mu.Unlock()
		switch {
		case m == "drop" && first, m == "ignore-range" && first, m == "bogus-range" && first:
			next(&dropAfter{ResponseWriter: w, left: 5<<20 + 1234}, r)
		case m == "ignore-range":
			r.Header.Del("Range")
			next(w, r)
		case m == "bogus-range":
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(data)-1, len(data)))
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data)
		case m == "cancel":
			// Half the disk, then the job is cancelled while the server
			// holds the connection open.
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			w.Write(data[:len(data)/2])
			w.(http.Flusher).Flush()
			mu.Lock()
			cancelJob()
			mu.Unlock()
			<-r.Context().Done()
		case m == "longer":
			// No Content-Length (chunked): the disk and then some.
			w.WriteHeader(http.StatusOK)
			w.Write(data)
			w.(http.Flusher).Flush()
			w.Write(make([]byte, 1<<20))
		case m == "declares-more":
			w.Header().Set("Content-Length", strconv.Itoa(len(data)+512))
			w.WriteHeader(http.StatusOK)
			w.Write(data)
			w.Write(make([]byte, 512))
		default:
			next(w, r)
		}
	})

	src := &sources.Source{Name: "vc1", File: "/etc/hyper2kvm/sources.d/vc1.yaml", Type: "vsphere", URL: s.URL, Username: user, Thumbprint: s.Thumbprint, MaxParallelExports: 2}
	c, err := vsphere.Connect(ctx, src, pw)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Logout(ctx)
	obj, err := c.FindVM(ctx, vsphere.Ref{Path: s.FirstVM})
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		mode    string
		wantErr string // "" for a good conversion
		resumed bool
	}{
		{mode: ""},
		{mode: "drop", resumed: true},
		{mode: "ignore-range", wantErr: "ignored the Range request"},
		{mode: "bogus-range", wantErr: "Content-Range"},
		{mode: "longer", wantErr: "more than the"},
		{mode: "declares-more", wantErr: "declares"},
		{mode: "cancel", wantErr: "context canceled"},
	} {
		name := tc.mode
		if name == "" {
			name = "plain"
		}
		t.Run(name, func(t *testing.T) {
			jobCtx, cancel := context.WithCancel(ctx)
			defer cancel()
			mu.Lock()
			mode, ranges, cancelJob = tc.mode, nil, cancel
			mu.Unlock()
			vm, err := c.ReadVM(ctx, obj)
			if err != nil {
				t.Fatal(err)
			}
			dir, outDir := t.TempDir(), t.TempDir()
			got, err := c.ExportConverted(jobCtx, vm, vsphere.StreamOptions{Dir: dir, OutDir: outDir})
			mu.Lock()
			seen := append([]string(nil), ranges...)
			mu.Unlock()
			if tc.wantErr != "" {
				t.Logf("refused: %v (requests' Range: %q)", err, seen)
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error saying %q", err, tc.wantErr)
				}
				if errors.As(err, new(*vsphere.NotStreamableError)) {
					t.Fatalf("refused as not streamable: %v", err)
				}
				for _, d := range []string{dir, outDir} {
					if left := listDir(t, d); len(left) > 0 {
						t.Errorf("%s holds %v after the refusal", d, left)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 {
				t.Fatalf("%d disks converted, want 1", len(got))
			}
			if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, got[0].Output).CombinedOutput(); err != nil {
				t.Fatalf("the output is not the VM's disk: %v\n%s", err, out)
			}
			flat, err := os.ReadFile(filepath.Join(dir, strings.TrimSuffix(filepath.Base(got[0].File), ".vmdk")+"-flat.vmdk"))
			if err != nil {
				t.Fatalf("the downloaded flat extent: %v (the download directory holds %v)", err, listDir(t, dir))
			}
			if !bytes.Equal(flat, data) {
				t.Error("the downloaded flat extent differs from the VM's disk")
			}
			// The kept descriptor opens the kept extent: the source copy is whole.
			if out, err := exec.Command("qemu-img", "compare", "-f", "vmdk", "-F", "raw", got[0].File, raw).CombinedOutput(); err != nil {
				t.Errorf("the downloaded descriptor and extent are not the VM's disk: %v\n%s", err, out)
			}
			for _, d := range []string{dir, outDir} {
				for _, n := range listDir(t, d) {
					if strings.HasSuffix(n, ".part") {
						t.Errorf("%s is left in %s", n, d)
					}
				}
			}
			t.Logf("requests' Range: %q", seen)
			if tc.resumed && (len(seen) != 2 || seen[0] != "" || seen[1] != "bytes="+strconv.Itoa(5<<20+1234)+"-" && !strings.HasPrefix(seen[1], "bytes=5")) {
				t.Errorf("the flat file's requests had the Range headers %q, want none and then a resume", seen)
			}
		})
	}
}

func listDir(t *testing.T, d string) []string {
	t.Helper()
	es, err := os.ReadDir(d)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// dropAfter passes left bytes of an answer on and then drops the
// connection: a network that fails mid-download.
type dropAfter struct {
	http.ResponseWriter
	left int
}

func (d *dropAfter) Write(b []byte) (int, error) {
	if len(b) <= d.left {
		d.left -= len(b)
		return d.ResponseWriter.Write(b)
	}
	n, _ := d.ResponseWriter.Write(b[:d.left])
	d.left = 0
	rc := http.NewResponseController(d.ResponseWriter)
	rc.Flush()
	if conn, _, err := rc.Hijack(); err == nil {
		conn.Close()
	}
	return n, errors.New("connection dropped by the test")
}

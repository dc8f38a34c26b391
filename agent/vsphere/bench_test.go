package vsphere_test

import (
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/vsphere"
)

// TestExportThroughput (HYPER2KVM_BENCH_VSPHERE_MB=N) downloads an N MiB
// disk from the simulator on loopback with Export and with a bare HTTP GET
// of the same datastore URL, and logs both rates (docs/PERFORMANCE.md).
func TestExportThroughput(t *testing.T) {
	mb, _ := strconv.Atoi(os.Getenv("HYPER2KVM_BENCH_VSPHERE_MB"))
	if mb <= 0 {
		t.Skip("set HYPER2KVM_BENCH_VSPHERE_MB to run")
	}
	s, a, src := start(t, false)
	ctx := context.Background()
	img := filepath.Join(t.TempDir(), "disk.vmdk")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	// Half random, half zero: what a used disk looks like to a sparse writer.
	if _, err := io.CopyN(f, rand.Reader, int64(mb)<<19); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(mb) << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := a.PutDisk(ctx, s.FirstVM, img); err != nil {
		t.Fatal(err)
	}
	if err := a.Power(ctx, s.FirstVM, false); err != nil {
		t.Fatal(err)
	}
	c := connect(t, src)
	obj, _ := c.FindVM(ctx, vsphere.Ref{Path: s.FirstVM})
	vm, err := c.ReadVM(ctx, obj)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.Export(ctx, vm, vsphere.ExportOptions{Dir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	ours := time.Since(start)

	// The bare GET: the datastore URL with the admin's session, io.Copy.
	u := s.URL[:len(s.URL)-len("/sdk")] + "/folder/DC0_H0_VM0/disk1.vmdk?dcPath=DC0&dsName=LocalDS_0"
	req, _ := http.NewRequest("GET", u, nil)
	req.SetBasicAuth(user, password)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: insecureTLS()}}
	start = time.Now()
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := os.Create(filepath.Join(t.TempDir(), "plain"))
	n, err := io.Copy(out, res.Body)
	res.Body.Close()
	out.Sync()
	out.Close()
	plain := time.Since(start)
	if err != nil || n != int64(mb)<<20 {
		t.Fatalf("plain GET: %d bytes, %v (status %s)", n, err, res.Status)
	}
	rate := func(d time.Duration) float64 { return float64(mb) / d.Seconds() }
	t.Logf("%d MiB: Export %v (%.0f MiB/s), plain GET %v (%.0f MiB/s)", mb, ours.Round(time.Millisecond), rate(ours), plain.Round(time.Millisecond), rate(plain))
}

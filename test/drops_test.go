package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/test/box"
)

// Issue 18, "partial drops": a file written into the queue by several
// writers one after another must become one job of the whole file, and an
// image its format says is cut must fail naming the check, not complete.

// dropsSettled lists the files (not reports) named like stem*.ext that
// settled today in processed/ and failed/, with their sizes.
func (b *relBox) dropsSettled(stem, ext string) map[string]int64 {
	out := map[string]int64{}
	for _, dir := range []string{"processed", "failed"} {
		d := filepath.Join(relQueue, dir, b.day())
		des, _ := os.ReadDir(b.Path(d))
		for _, de := range des {
			n := de.Name()
			if strings.HasPrefix(n, stem) && strings.HasSuffix(n, ext) {
				if fi, err := de.Info(); err == nil {
					out[dir+"/"+n] = fi.Size()
				}
			}
		}
	}
	return out
}

// TestDropWrittenInPieces: a streamOptimized VMDK written into
// to_be_processed/ by four dd processes one after another, 1.2 s apart
// (more than stable_time, 200 ms here), becomes exactly one completed job of
// the full size. Before the format check the agent took it after the first
// piece, and again after each of the others: four jobs (of 1/4, 2/4, 3/4 and
// all of the file, each failed in LOAD or converted from a cut disk).
func TestDropWrittenInPieces(t *testing.T) {
	t.Parallel()
	b := relStart(t, box.Options{}, false, "")
	ctx := relCtx(t, 5*time.Minute)

	// Random data, so the stream is as large as the disk and every piece
	// holds grains.
	b.MustExec(t, "sh", "-c", "head -c 64M /dev/urandom > /srv/src/web01.raw && "+
		"qemu-img convert -f raw -O vmdk -o subformat=streamOptimized /srv/src/web01.raw /srv/src/web01.vmdk")
	size, err := strconv.ParseInt(strings.TrimSpace(b.MustExec(t, "stat", "-c", "%s", "/srv/src/web01.vmdk")), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	const mib = 1 << 20
	piece := (size/4 + mib - 1) / mib // in MiB
	dst := relQueue + "/to_be_processed/web01.vmdk"
	for i := int64(0); i < 4; i++ {
		if i > 0 {
			time.Sleep(1200 * time.Millisecond) // the writers' pace, not an assertion
		}
		b.MustExec(t, "dd", "if=/srv/src/web01.vmdk", "of="+dst, "bs=1M", "conv=notrunc", "status=none",
			fmt.Sprintf("skip=%d", i*piece), fmt.Sprintf("seek=%d", i*piece), fmt.Sprintf("count=%d", piece))
	}
	dir, rep := b.waitSettled(ctx, "web01.vmdk")
	// Nothing of it may be left behind to become another job.
	if err := b.WaitFor(ctx, "queue empty", func() (bool, error) {
		left := b.find(relQueue+"/to_be_processed") + b.find(relQueue+"/processing")
		return !strings.Contains(left, "web01"), nil
	}); err != nil {
		t.Fatal(err)
	}
	settled := b.dropsSettled("web01", ".vmdk")
	t.Logf("%d-byte stream written in 4 pieces of %d MiB; settled: %v", size, piece, settled)
	if dir != "processed" {
		t.Fatalf("web01.vmdk settled in %s, want processed: %v", dir, rep)
	}
	if len(settled) != 1 || settled["processed/web01.vmdk"] != size {
		t.Fatalf("settled %v, want exactly one job: processed/web01.vmdk of %d bytes", settled, size)
	}
	if jobs := b.MustExec(t, "hyperctl", "jobs"); strings.Count(jobs, "web01") != 1 {
		t.Errorf("hyperctl jobs lists web01 %d times, want once:\n%s", strings.Count(jobs, "web01"), jobs)
	}

	// The same image dropped again, the README's way (copy under a .part
	// name, then rename): its report names the first drop.
	b.MustExec(t, "sh", "-c", "q="+relQueue+"/to_be_processed && cp /srv/src/web01.vmdk $q/.web01.vmdk.part && mv $q/.web01.vmdk.part $q/web01.vmdk")
	dir2, rep2 := b.waitSettled(ctx, "web01-2.vmdk")
	first := "processed/" + b.day() + "/web01.vmdk"
	if earlier, _ := rep2["earlier_drops"].([]any); dir2 != "processed" || len(earlier) != 1 || earlier[0] != first {
		t.Errorf("second drop of web01.vmdk settled in %s with earlier_drops %v, want processed with [%s]", dir2, rep2["earlier_drops"], first)
	}
}

// TestDropTruncatedVHDFails: a dynamic VHD cut short (no footer at its end)
// and left as it is is never converted: after stable_timeout it settles in
// failed/ with a report naming the check that failed. Before the check the
// agent took it at once, as it would a file whose writer is only slow, and
// the job failed in LOAD with whatever qemu-img said of it.
func TestDropTruncatedVHDFails(t *testing.T) {
	t.Parallel()
	b := relStart(t, box.Options{}, false, "stable_timeout: 3s\n")
	ctx := relCtx(t, 5*time.Minute)

	b.MustExec(t, "sh", "-c", "head -c 16M /dev/urandom > /srv/src/db01.raw && "+
		"qemu-img convert -f raw -O vpc /srv/src/db01.raw /srv/src/db01.vhd")
	size, err := strconv.ParseInt(strings.TrimSpace(b.MustExec(t, "stat", "-c", "%s", "/srv/src/db01.vhd")), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	b.MustExec(t, "sh", "-c", fmt.Sprintf("head -c %d /srv/src/db01.vhd > %s/to_be_processed/db01.vhd", size*3/4, relQueue))

	dir, rep := b.waitSettled(ctx, "db01.vhd")
	report, _ := os.ReadFile(b.Path(filepath.Join(relQueue, "failed", b.day(), "db01.vhd.error.json")))
	t.Logf("cut VHD (%d of %d bytes) settled in %s: %s", size*3/4, size, dir, report)
	if dir != "failed" {
		t.Fatalf("a VHD cut to %d of its %d bytes settled in %s, want failed: %v", size*3/4, size, dir, rep)
	}
	for _, want := range []string{"vhd footer", "stable_timeout"} {
		if !strings.Contains(string(report), want) {
			t.Errorf("the report of the cut VHD does not say %q:\n%s", want, report)
		}
	}
	if got := b.dropsSettled("db01", ".vhd"); len(got) != 1 {
		t.Errorf("settled %v, want the one file in failed/", got)
	}
}

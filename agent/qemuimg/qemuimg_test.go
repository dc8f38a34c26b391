package qemuimg_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/qemuimg"
	"golang.org/x/sys/unix"
)

func needQemuImg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed (packaging/deps.txt: qemu-utils)")
	}
}

// source makes a 16 MiB raw image with 1 MiB of data at 4 MiB.
func source(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "src.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(16 << 20); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if _, err := f.WriteAt(data, 4<<20); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConvertInfoCheckCompare(t *testing.T) {
	needQemuImg(t)
	ctx := context.Background()
	dir := t.TempDir()
	src := source(t, dir)
	for _, c := range []struct {
		format   string
		compress bool
		check    string
	}{
		{"qcow2", false, "ok"},
		{"qcow2", true, "ok"},
		{"raw", false, "skipped"},
		{"vdi", false, "ok"},
	} {
		name := c.format
		if c.compress {
			name += "-compressed"
		}
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(dir, name+"."+c.format)
			var seen []int
			res, err := qemuimg.Convert(ctx, qemuimg.ConvertOptions{
				Source: src, SourceFormat: "raw", Target: out, TargetFormat: c.format,
				Compress: c.compress, Hash: true, Progress: func(p int) { seen = append(seen, p) },
			})
			if err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(out)
			if sum := sha256.Sum256(data); res.SHA256 != hex.EncodeToString(sum[:]) || res.Size != int64(len(data)) {
				t.Errorf("result sha256 %s size %d, file %x %d", res.SHA256, res.Size, sum, len(data))
			}
			if len(seen) == 0 || seen[len(seen)-1] != 100 {
				t.Errorf("progress %v does not end at 100", seen)
			}
			for i := 1; i < len(seen); i++ {
				if seen[i] <= seen[i-1] {
					t.Errorf("progress %v is not increasing", seen)
				}
			}
			if _, err := os.Stat(out + ".part"); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("partial output left behind: %v", err)
			}
			info, err := qemuimg.Info(ctx, out, c.format)
			if err != nil {
				t.Fatal(err)
			}
			if info.Format != c.format || info.VirtualSize != 16<<20 {
				t.Errorf("info = %+v", info)
			}
			if c.compress && (res.Compression != "zstd" || !strings.Contains(string(info.FormatSpecific), `"compression-type": "zstd"`)) {
				t.Errorf("compression %q, format-specific %s", res.Compression, info.FormatSpecific)
			}
			chk, err := qemuimg.Check(ctx, out, c.format)
			if err != nil {
				t.Fatal(err)
			}
			if chk.Status != c.check {
				t.Errorf("check = %+v, want %s", chk, c.check)
			}
			same, detail, err := qemuimg.Compare(ctx, src, "raw", out, c.format)
			if err != nil || !same {
				t.Errorf("compare = %v %q %v", same, detail, err)
			}
		})
	}
}

func TestConvertNeverOverwrites(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	src := source(t, dir)
	out := filepath.Join(dir, "out.qcow2")
	if err := os.WriteFile(out, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := qemuimg.Convert(context.Background(), qemuimg.ConvertOptions{Source: src, SourceFormat: "raw", Target: out, TargetFormat: "qcow2"})
	if err == nil || !strings.Contains(err.Error(), "exists; not overwriting") {
		t.Fatalf("error = %v", err)
	}
	if b, _ := os.ReadFile(out); string(b) != "precious" {
		t.Errorf("existing file changed to %q", b)
	}
	// A file that appears under the final name while qemu-img runs is kept too.
	out2 := filepath.Join(dir, "race.qcow2")
	_, err = qemuimg.Convert(context.Background(), qemuimg.ConvertOptions{Source: src, SourceFormat: "raw", Target: out2, TargetFormat: "qcow2",
		Progress: func(p int) {
			if p == 0 {
				os.WriteFile(out2, []byte("late"), 0o644)
			}
		}})
	if err == nil || !strings.Contains(err.Error(), "not overwriting") {
		t.Fatalf("race: error = %v", err)
	}
	if b, _ := os.ReadFile(out2); string(b) != "late" {
		t.Errorf("file that appeared during the run changed to %q", b)
	}
	if _, err := os.Stat(out2 + ".part"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("partial output left behind: %v", err)
	}
}

func TestConvertPartInUse(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	src := source(t, dir)
	out := filepath.Join(dir, "out.qcow2")
	f, err := os.Create(out + ".part")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	_, err = qemuimg.Convert(context.Background(), qemuimg.ConvertOptions{Source: src, SourceFormat: "raw", Target: out, TargetFormat: "qcow2"})
	if err == nil || !strings.Contains(err.Error(), "in use by another conversion") {
		t.Fatalf("error = %v", err)
	}
	if _, err := os.Stat(out + ".part"); err != nil {
		t.Errorf("the other conversion's partial output was removed: %v", err)
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	// Unlocked, it is a leftover of a killed run. Whoever made it may hold
	// it open (here: f, mode 0644): it is never written to, only its name
	// removed, and the new partial output is a file of its own, 0600 from
	// the start.
	f.WriteString("leftover")
	f.Chmod(0o644)
	var partMode os.FileMode
	var sameFile bool
	res, err := qemuimg.Convert(context.Background(), qemuimg.ConvertOptions{Source: src, SourceFormat: "raw", Target: out, TargetFormat: "qcow2",
		Prepare: func(p *os.File) error {
			st, _ := p.Stat()
			old, _ := f.Stat()
			partMode, sameFile = st.Mode().Perm(), os.SameFile(st, old)
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "leftover") {
		t.Errorf("warnings %v", res.Warnings)
	}
	if sameFile || partMode != 0o600 {
		t.Errorf("partial output: the planted file reused %v, mode %v; want a new file of mode 0600", sameFile, partMode)
	}
	b := make([]byte, 16)
	if n, _ := f.ReadAt(b, 0); string(b[:n]) != "leftover" {
		t.Errorf("the planted file was written to: %q", b[:n])
	}
}

// The partial output is 0600 from its creation, whatever the umask: a user
// who opens it before the caller sets its final owner and mode gets nothing.
func TestConvertPartPrivateFromCreation(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	src := source(t, dir)
	out := filepath.Join(dir, "out.qcow2")
	old := unix.Umask(0)
	defer unix.Umask(old)
	var mode os.FileMode
	_, err := qemuimg.Convert(context.Background(), qemuimg.ConvertOptions{Source: src, SourceFormat: "raw", Target: out, TargetFormat: "qcow2",
		Progress: func(int) {
			if st, err := os.Lstat(out + ".part"); err == nil && mode == 0 {
				mode = st.Mode().Perm()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if mode != 0o600 {
		t.Errorf("partial output mode while qemu-img wrote it: %v, want 0600", mode)
	}
}

// Cancelling kills qemu-img and removes the partial output. The source is
// qemu's null-co driver with a read latency, so the conversion is reliably
// still running when the test cancels it at the first progress report.
func TestConvertCancelRemovesPartial(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out.qcow2")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := `json:{"file":{"driver":"null-co","size":4294967296,"latency-ns":200000000}}`
	_, err := qemuimg.Convert(ctx, qemuimg.ConvertOptions{Source: src, SourceFormat: "raw", Target: out, TargetFormat: "qcow2",
		Progress: func(int) { cancel() }})
	if err == nil || !strings.Contains(err.Error(), "cancel") {
		t.Fatalf("error = %v, want cancelled", err)
	}
	for _, p := range []string{out, out + ".part"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists after cancel: %v", p, err)
		}
	}
}

// On a qemu-img without zstd, compression falls back to zlib and says so.
func TestConvertZstdFallback(t *testing.T) {
	needQemuImg(t)
	real, _ := exec.LookPath("qemu-img")
	bin := t.TempDir()
	script := "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in *compression_type=zstd*) echo \"qemu-img: Parameter 'compression-type' does not accept value 'zstd'\" >&2; exit 1;; esac; done\nexec " + real + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "qemu-img"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	dir := t.TempDir()
	src := source(t, dir)
	out := filepath.Join(dir, "out.qcow2")
	res, err := qemuimg.Convert(context.Background(), qemuimg.ConvertOptions{Source: src, SourceFormat: "raw", Target: out, TargetFormat: "qcow2", Compress: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Compression != "zlib" || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "zlib") {
		t.Errorf("result %+v", res)
	}
	info, err := qemuimg.Info(context.Background(), out, "qcow2")
	if err != nil || !strings.Contains(string(info.FormatSpecific), `"compression-type": "zlib"`) {
		t.Errorf("info %s, %v", info.FormatSpecific, err)
	}
}

func TestCheckFindsCorruption(t *testing.T) {
	needQemuImg(t)
	ctx := context.Background()
	dir := t.TempDir()
	src := source(t, dir)
	out := filepath.Join(dir, "out.qcow2")
	if _, err := qemuimg.Convert(ctx, qemuimg.ConvertOptions{Source: src, SourceFormat: "raw", Target: out, TargetFormat: "qcow2"}); err != nil {
		t.Fatal(err)
	}
	// Zero the refcount of a cluster in use: qemu-img check must call that corruption.
	f, err := os.OpenFile(out, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var hdr [64]byte
	f.ReadAt(hdr[:], 0)
	var ent [8]byte
	f.ReadAt(ent[:], int64(binary.BigEndian.Uint64(hdr[48:56])))
	f.WriteAt([]byte{0, 0}, int64(binary.BigEndian.Uint64(ent[:]))+2*5)
	f.Close()
	chk, err := qemuimg.Check(ctx, out, "qcow2")
	if err != nil {
		t.Fatal(err)
	}
	if chk.Status != "failed" || chk.Corruptions == 0 {
		t.Errorf("check = %+v, want failed with corruptions", chk)
	}
}

func TestOverlayLeavesBackingAlone(t *testing.T) {
	needQemuImg(t)
	ctx := context.Background()
	dir := t.TempDir()
	src := source(t, dir)
	before, _ := os.ReadFile(src)
	ov := filepath.Join(dir, "ov.qcow2")
	if err := qemuimg.CreateOverlay(ctx, src, "raw", ov); err != nil {
		t.Fatal(err)
	}
	if err := qemuimg.CreateOverlay(ctx, src, "raw", ov); err == nil {
		t.Error("second CreateOverlay replaced the first")
	}
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x55 0 1M", ov).CombinedOutput(); err != nil {
		t.Skipf("qemu-io: %v %s", err, out)
	}
	after, _ := os.ReadFile(src)
	if string(before) != string(after) {
		t.Fatal("writing the overlay changed its backing file")
	}
	same, _, err := qemuimg.Compare(ctx, src, "raw", ov, "qcow2")
	if err != nil || same {
		t.Errorf("overlay compares identical after a write: %v", err)
	}
}

func TestErrorsAreClear(t *testing.T) {
	needQemuImg(t)
	ctx := context.Background()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.qcow2")
	os.WriteFile(bad, []byte("QFI\xfbnot really"), 0o644)
	_, err := qemuimg.Info(ctx, bad, "qcow2")
	if err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("Info error = %v, want it to name %s", err, bad)
	}
	if got := qemuimg.Describe(`json:{"file":{"driver":"raw","offset":512,"size":99,"file":{"driver":"file","filename":"/x/y.ova"}}}`); got != "/x/y.ova[offset 512, size 99]" {
		t.Errorf("Describe = %q", got)
	}
}

// Preallocation: metadata writes qcow2's tables first, falloc reserves the
// whole disk (the file takes its virtual size on the file system), off
// leaves it sparse; each output holds the source's bytes. An unknown mode,
// or one with compression, is refused before anything is written.
func TestConvertPreallocation(t *testing.T) {
	needQemuImg(t)
	ctx := context.Background()
	dir := t.TempDir()
	src := source(t, dir)
	for _, c := range []struct {
		format, mode string
		compress     bool
		minBlocks    int64 // bytes allocated at least
		maxBlocks    int64 // and at most (0: no bound)
		arg, err     string
	}{
		{"qcow2", "", false, 1 << 20, 4 << 20, "", ""},
		{"qcow2", "off", false, 1 << 20, 4 << 20, "", ""},
		{"qcow2", "metadata", false, 1 << 20, 4 << 20, "preallocation=metadata", ""},
		{"qcow2", "falloc", false, 16 << 20, 0, "preallocation=falloc", ""},
		{"raw", "falloc", false, 16 << 20, 0, "preallocation=falloc", ""},
		{"qcow2", "metadata", true, 0, 0, "", "cannot be combined with compression"},
		{"qcow2", "full", false, 0, 0, "", `unknown preallocation "full"`},
	} {
		name := c.format + "-" + c.mode
		if c.compress {
			name += "-compressed"
		}
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(dir, name+"."+c.format)
			res, err := qemuimg.Convert(ctx, qemuimg.ConvertOptions{
				Source: src, SourceFormat: "raw", Target: out, TargetFormat: c.format,
				Compress: c.compress, Preallocation: c.mode,
			})
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				if _, serr := os.Lstat(out + ".part"); !errors.Is(serr, os.ErrNotExist) {
					t.Errorf("refused, yet left %s.part", out)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(res.Args, " "); c.arg != "" && !strings.Contains(got, c.arg) || c.arg == "" && strings.Contains(got, "preallocation") {
				t.Errorf("args %s, want %q", got, c.arg)
			}
			var st unix.Stat_t
			if err := unix.Stat(out, &st); err != nil {
				t.Fatal(err)
			}
			if used := st.Blocks * 512; used < c.minBlocks || c.maxBlocks > 0 && used > c.maxBlocks {
				t.Errorf("%d bytes allocated, want %d to %d", used, c.minBlocks, c.maxBlocks)
			}
			if same, detail, err := qemuimg.Compare(ctx, src, "raw", out, c.format); err != nil || !same {
				t.Errorf("compare = %v %q %v", same, detail, err)
			}
		})
	}
}

// Out-of-order writes (-W): for raw and compressed qcow2 (where each
// coroutine compresses a cluster of its own: every core works), not for
// uncompressed qcow2, whose clusters would land out of the guest's order.
func TestOutOfOrder(t *testing.T) {
	for _, c := range []struct {
		format   string
		compress bool
		want     bool
	}{
		{"raw", false, true},
		{"qcow2", true, true},
		{"qcow2", false, false},
		{"vdi", false, false},
	} {
		if got := qemuimg.OutOfOrder(c.format, c.compress); got != c.want {
			t.Errorf("OutOfOrder(%s, compress %v) = %v, want %v", c.format, c.compress, got, c.want)
		}
	}
}

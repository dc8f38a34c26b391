package imgfmt

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
)

// rawWithData writes a raw image of size bytes with data at scattered
// places (so every format allocates blocks near its start, middle and
// end) and zeros elsewhere.
func rawWithData(t *testing.T, dir string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, "src.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 256<<10)
	for i := range chunk {
		chunk[i] = byte(i*7 + i/251) // compresses poorly enough to take room
	}
	for _, off := range []int64{0, size / 3, size / 2, size - int64(len(chunk))} {
		if _, err := f.WriteAt(chunk, off); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// cuts returns the lengths a truncated copy of a size-byte file is cut to.
func cuts(size int64) []int64 {
	set := map[int64]bool{}
	for _, c := range []int64{1, 512, 1536, 64 << 10, 1 << 20, size / 4, size / 2, 3 * size / 4, size - 1536, size - 1024, size - 512, size - 1} {
		if c > 0 && c < size {
			set[c] = true
		}
	}
	var out []int64
	for c := range set {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func cutCopy(t *testing.T, src, dst string, n int64) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b[:n], 0o644); err != nil {
		t.Fatal(err)
	}
}

// trimStream cuts the end-of-stream marker and the zero padding qemu-img
// leaves after a stream's last grain, as qemu-img itself does for some
// streams: a cut inside them leaves every grain in place, which Complete
// rightly accepts, so the fixture ends with its last grain.
func trimStream(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	end := len(bytes.TrimRight(b, "\x00"))
	end = (end + 511) / 512 * 512
	if err := os.Truncate(p, int64(end)); err != nil {
		t.Fatal(err)
	}
}

// makeOVA writes an OVA holding an OVF, the disk and a .mf of both.
func makeOVA(t *testing.T, disk, dst string, badDigest bool) {
	t.Helper()
	diskData, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	ovf := []byte(`<?xml version="1.0"?><Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"/>`)
	sum := func(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }
	diskSum := sum(diskData)
	if badDigest {
		diskSum = sum(append(diskData, 0))
	}
	mf := fmt.Sprintf("SHA256(vm.ovf)= %s\nSHA256(vm-disk1.vmdk)= %s\n", sum(ovf), diskSum)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range []struct {
		name string
		data []byte
	}{{"vm.ovf", ovf}, {"vm-disk1.vmdk", diskData}, {"vm.mf", []byte(mf)}} {
		if err := tw.WriteHeader(&tar.Header{Name: m.name, Mode: 0o644, Size: int64(len(m.data)), Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}); err != nil {
			t.Fatal(err)
		}
		tw.Write(m.data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCompleteTruncated makes an image of each format with qemu-img and
// checks that the whole file is complete and every cut of it is not.
func TestCompleteTruncated(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	src := rawWithData(t, dir, 64<<20)
	convert := func(name string, args ...string) string {
		p := filepath.Join(dir, name)
		cmd := exec.Command("qemu-img", append(append([]string{"convert", "-f", "raw"}, args...), src, p)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
		}
		return p
	}
	stream := convert("stream.vmdk", "-O", "vmdk", "-o", "subformat=streamOptimized")
	trimStream(t, stream)
	// Incompressible data: qemu-img's stream then ends with its last
	// grain, without an end-of-stream marker.
	noise := filepath.Join(dir, "noise.raw")
	b := make([]byte, 4<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(noise, b, 0o644); err != nil {
		t.Fatal(err)
	}
	noisy := filepath.Join(dir, "noisy.vmdk")
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", noise, noisy).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v\n%s", err, out)
	}
	ova := filepath.Join(dir, "vm.ova")
	makeOVA(t, stream, ova, false)
	// A qcow2 whose clusters live in an external data file: only its own
	// tables are in it (qemu-img convert cannot write one; create + dd).
	external := filepath.Join(dir, "ext.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+filepath.Join(dir, "ext.data")+",data_file_raw=on", external, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 32M", external).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		name, path, ext, format, check string
		lastSectorPartial              bool
	}{
		{"vmdk streamOptimized", stream, ".vmdk", VMDK, CheckVMDKStream, false},
		{"vmdk streamOptimized, incompressible", noisy, ".vmdk", VMDK, CheckVMDKStream, false},
		{"vmdk monolithicSparse", convert("sparse.vmdk", "-O", "vmdk"), ".vmdk", VMDK, CheckVMDKTables, false},
		{"vhd dynamic", convert("dyn.vhd", "-O", "vpc"), ".vhd", VPC, "", false},
		{"vhd fixed", convert("fixed.vhd", "-O", "vpc", "-o", "subformat=fixed"), ".vhd", VPC, CheckVHDFooter, false},
		{"vhdx", convert("d.vhdx", "-O", "vhdx"), ".vhdx", VHDX, CheckVHDXTables, false},
		{"qcow2", convert("d.qcow2", "-O", "qcow2"), ".qcow2", QCOW2, CheckQCOW2Tables, false},
		{"qcow2 compressed", convert("c.qcow2", "-O", "qcow2", "-c"), ".qcow2", QCOW2, CheckQCOW2Tables, true},
		{"qcow2 with an external data file", external, ".qcow2", QCOW2, "", false},
		{"ova", ova, ".ova", OVA, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			format, err := Complete(tc.path, tc.ext)
			if err != nil || format != tc.format {
				t.Fatalf("whole file: Complete = %q, %v; want %q, nil", format, err, tc.format)
			}
			st, err := os.Stat(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			cut := filepath.Join(t.TempDir(), "cut"+tc.ext)
			for _, n := range cuts(st.Size()) {
				if tc.lastSectorPartial && n/512 == (st.Size()-1)/512 {
					// The last compressed cluster may end anywhere in
					// the last sector (the qcow2 specification lets it
					// pass the end of the file), so a cut inside that
					// sector cannot be told from a whole file.
					continue
				}
				cutCopy(t, tc.path, cut, n)
				_, err := Complete(cut, tc.ext)
				var ie *IncompleteError
				if !errors.As(err, &ie) {
					t.Errorf("cut at %d of %d: Complete = %v, want an IncompleteError", n, st.Size(), err)
					continue
				}
				if tc.check != "" && ie.Check != tc.check && n > 1536 {
					t.Errorf("cut at %d: check %q, want %q (%v)", n, ie.Check, tc.check, err)
				}
			}
		})
	}
}

// TestCompleteOVAManifest: an OVA whose .mf digest does not match is not
// complete, and says which check failed.
func TestCompleteOVAManifest(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "d.vmdk")
	os.WriteFile(disk, bytes.Repeat([]byte("x"), 5000), 0o644)
	ova := filepath.Join(dir, "vm.ova")
	makeOVA(t, disk, ova, true)
	_, err := Complete(ova, ".ova")
	var ie *IncompleteError
	if !errors.As(err, &ie) || ie.Check != CheckOVAManifest {
		t.Fatalf("Complete = %v, want %q", err, CheckOVAManifest)
	}
}

// TestCompleteRawAndDescriptor: raw images and text descriptors have
// nothing to check and are complete; a raw-looking .vhd is not.
func TestCompleteRawAndDescriptor(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, data, ext string
		ok              bool
	}{
		{"disk.raw", "some bytes\x00\x01", ".raw", true},
		{"notes.raw", "some text, no disk", ".raw", false}, // text is no image
		{"disk.img", "", ".img", true},
		{"d.vmdk", "# Disk DescriptorFile\nversion=1\n", ".vmdk", true},
		{"flat.vmdk", string(make([]byte, 1024)), ".vmdk", true},
		{"d.vhd", "raw bytes, no footer", ".vhd", false},
		{"d.qcow2", "not yet", ".qcow2", false},
		{"d.ova", "\x00\x00\x00", ".ova", false},
	} {
		p := filepath.Join(dir, tc.name)
		os.WriteFile(p, []byte(tc.data), 0o644)
		_, err := Complete(p, tc.ext)
		if (err == nil) != tc.ok {
			t.Errorf("%s: Complete = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// FuzzComplete: no input makes Complete panic or read without bound.
func FuzzComplete(f *testing.F) {
	f.Add([]byte("KDMV\x01\x00\x00\x00\x03\x00\x03\x00"), ".vmdk")
	f.Add(append(make([]byte, 1024), []byte("conectix")...), ".vhd")
	f.Add([]byte("QFI\xfb\x00\x00\x00\x03"), ".qcow2")
	f.Add([]byte("vhdxfile"), ".vhdx")
	f.Add(append(make([]byte, 257), []byte("ustar\x00")...), ".ova")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, ext string) {
		p := filepath.Join(dir, "f")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		Complete(p, ext)
	})
}

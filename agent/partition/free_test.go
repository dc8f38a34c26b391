package partition_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/partition"
)

// TestFreeSpace reads the free space of real filesystems made by their
// own tools and compares it with what those tools' readers say.
func TestFreeSpace(t *testing.T) {
	tests := []struct {
		fs   string
		mkfs []string
		// want is the free bytes as the fs's own tool reports them.
		want func(t *testing.T, img string) int64
	}{
		{"ext4", []string{"mkfs.ext4", "-q", "-F"}, func(t *testing.T, img string) int64 {
			out, err := exec.Command("dumpe2fs", "-h", img).Output()
			if err != nil {
				t.Fatal(err)
			}
			return field(t, out, `Free blocks:\s+(\d+)`) * field(t, out, `Block size:\s+(\d+)`)
		}},
		{"ext2", []string{"mkfs.ext2", "-q", "-F", "-b", "1024"}, func(t *testing.T, img string) int64 {
			out, err := exec.Command("dumpe2fs", "-h", img).Output()
			if err != nil {
				t.Fatal(err)
			}
			return field(t, out, `Free blocks:\s+(\d+)`) * 1024
		}},
		{"xfs", []string{"mkfs.xfs", "-q", "-f"}, func(t *testing.T, img string) int64 {
			out, err := exec.Command("xfs_db", "-r", "-c", "sb 0", "-c", "p fdblocks blocksize", img).Output()
			if err != nil {
				t.Skipf("xfs_db: %v", err)
			}
			return field(t, out, `fdblocks = (\d+)`) * field(t, out, `blocksize = (\d+)`)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.fs, func(t *testing.T) {
			if _, err := exec.LookPath(tc.mkfs[0]); err != nil {
				t.Skipf("%s not installed", tc.mkfs[0])
			}
			img := filepath.Join(t.TempDir(), "fs.img")
			if err := os.WriteFile(img, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, 320<<20); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(tc.mkfs[0], append(tc.mkfs[1:], img)...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", tc.mkfs[0], err, out)
			}
			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fs, err := partition.Probe(f, 0, 320<<20)
			if err != nil || fs.Type != tc.fs || !fs.HasFree {
				t.Fatalf("Probe = %+v, %v", fs, err)
			}
			if want := tc.want(t, img); fs.Free != want || want <= 0 {
				t.Errorf("free %d, the fs's tool says %d", fs.Free, want)
			}
		})
	}
}

func field(t *testing.T, out []byte, re string) int64 {
	t.Helper()
	m := regexp.MustCompile(re).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no %s in:\n%s", re, out)
	}
	n, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return n
}

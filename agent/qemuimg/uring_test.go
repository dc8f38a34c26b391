package qemuimg

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestWithIOUring(t *testing.T) {
	for _, c := range []struct {
		name, in, want string
	}{
		{"a plain path is left alone", "/srv/vm/disk.vmdk", "/srv/vm/disk.vmdk"},
		{"a VMDK's file node", `json:{"driver":"vmdk","file":{"driver":"file","filename":"/proc/self/fd/5"},"backing":null}`,
			`json:{"backing":null,"driver":"vmdk","file":{"aio":"io_uring","driver":"file","filename":"/proc/self/fd/5"}}`},
		{"an OVA member: offsets stay integers", `json:{"driver":"vmdk","file":{"driver":"raw","offset":123456789012345,"size":4096,"file":{"driver":"file","filename":"/a&b<c>.ova"}}}`,
			`json:{"driver":"vmdk","file":{"driver":"raw","file":{"aio":"io_uring","driver":"file","filename":"/a&b<c>.ova"},"offset":123456789012345,"size":4096}}`},
		{"extents in a list", `json:{"driver":"vmdk","file":{"driver":"file","filename":"/d.vmdk"},"extents":[{"driver":"file","filename":"/d-flat.vmdk"}]}`,
			`json:{"driver":"vmdk","extents":[{"aio":"io_uring","driver":"file","filename":"/d-flat.vmdk"}],"file":{"aio":"io_uring","driver":"file","filename":"/d.vmdk"}}`},
		{"an aio of its own is kept", `json:{"driver":"raw","file":{"driver":"file","filename":"/r","aio":"native"}}`,
			`json:{"driver":"raw","file":{"aio":"native","driver":"file","filename":"/r"}}`},
		{"not JSON", `json:{"driver":`, `json:{"driver":`},
		{"two values", `json:{} {}`, `json:{} {}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := withIOUring(c.in); got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
		})
	}
}

// A compressed conversion of a json: source reads it through io_uring
// where this qemu-img and kernel can; the output is the same image.
func TestConvertCompressedReadsThroughIOUring(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed (packaging/deps.txt: qemu-utils)")
	}
	ctx := context.Background()
	dir := t.TempDir()
	raw := filepath.Join(dir, "src.raw")
	data := []byte(strings.Repeat("compressible text, ", 60000))
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(raw, 4<<20); err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(map[string]any{"driver": "raw", "file": map[string]any{"driver": "file", "filename": raw}})
	for _, compress := range []bool{true, false} {
		out := filepath.Join(dir, "out.qcow2")
		if compress {
			out = filepath.Join(dir, "out-c.qcow2")
		}
		res, err := Convert(ctx, ConvertOptions{Source: "json:" + string(spec), SourceFormat: "raw", Target: out, TargetFormat: "qcow2", Compress: compress})
		if err != nil {
			t.Fatal(err)
		}
		args := strings.Join(res.Args, " ")
		want := compress && supportsIOUring(ctx)
		if got := strings.Contains(args, `"aio":"io_uring"`); got != want {
			t.Errorf("compress %v: io_uring in %s: %v, want %v (supported here: %v)", compress, args, got, want, supportsIOUring(ctx))
		}
		if same, detail, err := Compare(ctx, raw, "raw", out, "qcow2"); err != nil || !same {
			t.Errorf("compare = %v %q %v", same, detail, err)
		}
	}
}

// Where io_uring is refused (kernel.io_uring_disabled, a seccomp filter,
// a qemu without liburing) the probe says so and the conversion reads as
// before.
func TestConvertWithoutIOUring(t *testing.T) {
	real, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img not installed (packaging/deps.txt: qemu-utils)")
	}
	bin := t.TempDir()
	script := "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in *io_uring*) echo \"qemu-img: Unable to use io_uring: failed to init linux io_uring ring: Operation not permitted\" >&2; exit 1;; esac; done\nexec " + real + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "qemu-img"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	ctx := context.Background()
	if supportsIOUring(ctx) {
		t.Fatal("the probe says io_uring works where qemu-img refuses it")
	}
	dir := t.TempDir()
	raw := filepath.Join(dir, "src.raw")
	if err := os.WriteFile(raw, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(map[string]any{"driver": "raw", "file": map[string]any{"driver": "file", "filename": raw}})
	res, err := Convert(ctx, ConvertOptions{Source: "json:" + string(spec), SourceFormat: "raw", Target: filepath.Join(dir, "o.qcow2"), TargetFormat: "qcow2", Compress: true})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.Join(res.Args, " "), "io_uring") {
		t.Errorf("args %q", res.Args)
	}
}

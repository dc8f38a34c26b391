package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/config"
)

// TestImages: ListImages lists the disk images under import_dirs by what
// their bytes are, each with the manifest a drop would get, and only those
// the caller can read; text, dot-files, partial files and other files are
// not images.
func TestImages(t *testing.T) {
	imp := t.TempDir()
	e := newEnv(t, func(c *config.Config) { c.ImportDirs = []string{imp} })
	e.start()
	qcow := append([]byte("QFI\xfb\x00\x00\x00\x03"), make([]byte, 1024)...)
	files := map[string][]byte{
		"web01.qcow2":         qcow,
		"vm/disk.img":         make([]byte, 4096),
		"vm/notes.vmdk":       []byte("not a disk\n"),
		"vm/readme.txt":       []byte("hello\n"),
		".hidden.raw":         make([]byte, 512),
		"copying.vmdk.part":   qcow,
		"a/b/c/d/deep.qcow2":  qcow,
		"private/secret.raw":  make([]byte, 512),
		"renamed-qcow2.bin.x": qcow, // bytes say qcow2 whatever the name
	}
	for name, data := range files {
		p := filepath.Join(imp, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(imp, "private"), 0o700)

	got := func(uid int64) map[string]string {
		imgs, dirs := e.a.Images(uid)
		if len(dirs) != 1 || dirs[0] != imp {
			t.Errorf("dirs %v, want [%s]", dirs, imp)
		}
		out := map[string]string{}
		for _, im := range imgs {
			rel := strings.TrimPrefix(im.Path, imp+"/")
			out[rel] = im.Format
			if !strings.Contains(im.Manifest, `"source_path":"`+im.Path+`"`) || !strings.Contains(im.Manifest, `"source_type":"`+im.Format+`"`) || im.Size <= 0 {
				t.Errorf("%s: manifest %s size %d", rel, im.Manifest, im.Size)
			}
		}
		return out
	}
	root := got(0)
	want := map[string]string{"web01.qcow2": "qcow2", "vm/disk.img": "raw", "private/secret.raw": "raw", "renamed-qcow2.bin.x": "qcow2"}
	if len(root) != len(want) {
		t.Errorf("root sees %v, want %v", root, want)
	}
	for k, v := range want {
		if root[k] != v {
			t.Errorf("root: %s is %q, want %q (all: %v)", k, root[k], v, root)
		}
	}
	if os.Geteuid() == 0 {
		if user := got(1000); user["private/secret.raw"] != "" || user["web01.qcow2"] != "qcow2" {
			t.Errorf("uid 1000 sees %v: want web01.qcow2 and not private/", user)
		}
	}
}

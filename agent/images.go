package agent

import (
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/queue"
)

// Bounds of one ListImages: the directories below an import directory
// looked into, and the images answered.
const (
	imageDepth = 3
	maxImages  = 1000
)

// Images is ListImages: the disk images under the configured import
// directories that uid can read (every one for root), each with its
// format as its bytes say, its size and the manifest the drop folder would
// give it; and the directories looked in. Text files, dot-files, partial
// files and symbolic links are left out; so is anything past imageDepth
// directories down or past maxImages images.
func (a *Agent) Images(uid int64) ([]apitype.Image, []string) {
	dirs := append([]string(nil), a.cfg.ImportDirs...)
	var acc *access
	if uid != 0 {
		var err error
		if acc, err = accessFor(uid); err != nil {
			return []apitype.Image{}, dirs
		}
	}
	out := []apitype.Image{}
	for _, dir := range dirs {
		root := filepath.Clean(dir)
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || len(out) >= maxImages {
				return fs.SkipDir
			}
			name := d.Name()
			if p != root && (strings.HasPrefix(name, ".") || queue.Ignored(name)) {
				if d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			if d.IsDir() {
				if strings.Count(strings.TrimPrefix(p, root), "/") >= imageDepth {
					return fs.SkipDir
				}
				if acc != nil && acc.canReach(p) != nil {
					return fs.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() {
				return nil
			}
			if acc != nil && acc.canRead(p) != nil {
				return nil
			}
			if img, ok := a.describeImage(p); ok {
				out = append(out, img)
			}
			return nil
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, dirs
}

// describeImage says what the file at p is, if it is a disk image: its
// bytes decide, then its name (a manifest or an unknown file is not).
func (a *Agent) describeImage(p string) (apitype.Image, bool) {
	fi, err := os.Stat(p)
	if err != nil || fi.Size() == 0 {
		return apitype.Image{}, false
	}
	format, err := imgfmt.Detect(p)
	if err != nil {
		return apitype.Image{}, false
	}
	if format == imgfmt.Raw {
		if k, ok := queue.KindOf(p); !ok || k != queue.Image || imgfmt.NotImage(p) != nil {
			return apitype.Image{}, false // raw bytes without an image's name, or text
		}
	}
	st := manifest.SourceTypeOf(format)
	if st == "" {
		return apitype.Image{}, false
	}
	m, err := a.imageManifestFor(nameFromFile(filepath.Base(p)), filepath.Base(p), p)
	if err != nil {
		return apitype.Image{}, false
	}
	return apitype.Image{Path: p, Format: st, Size: fi.Size(), Manifest: string(m)}, true
}

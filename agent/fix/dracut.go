package fix

import (
	"context"
	"path"
	"sort"
	"strings"
)

// dracutConfDirs are where dracut reads its drop-in configuration; a file
// in /etc overrides one of the same name in /usr/lib, and all are read in
// the order of their names, after /etc/dracut.conf.
var dracutConfDirs = []string{"/usr/lib/dracut/dracut.conf.d", "/etc/dracut.conf.d"}

// dracutHostOnly says whether the guest's dracut builds host-only images
// (RHEL and Fedora do by default). Host-only detection looks at the
// machine dracut runs on: in FIX that is the conversion sandbox or the
// appliance, not the VM the guest will run in, so FIX regenerates such a
// guest's images with --no-hostonly (every driver, virtio included); the
// guest's next kernel update, on KVM, builds host-only images for its
// real hardware again.
func (f *fixer) dracutHostOnly(ctx context.Context) bool {
	var texts []string
	if b, err := f.s.ReadFile(ctx, "/etc/dracut.conf"); err == nil {
		texts = append(texts, string(b))
	}
	byName := map[string]string{}
	for _, dir := range dracutConfDirs {
		ents, _ := f.s.ReadDir(ctx, dir)
		for _, e := range ents {
			if strings.HasSuffix(e.Name, ".conf") && e.Mode.IsRegular() {
				byName[e.Name] = path.Join(dir, e.Name)
			}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if b, err := f.s.ReadFile(ctx, byName[n]); err == nil {
			texts = append(texts, string(b))
		}
	}
	return hostOnly(texts)
}

// hostOnly is the value of dracut's hostonly= after reading the
// configuration texts in order (the last assignment wins; default no).
func hostOnly(texts []string) bool {
	on := false
	for _, t := range texts {
		for _, l := range strings.Split(t, "\n") {
			l = strings.TrimSpace(l)
			if i := strings.Index(l, "#"); i >= 0 {
				l = strings.TrimSpace(l[:i])
			}
			v, ok := strings.CutPrefix(l, "hostonly=")
			if !ok {
				continue
			}
			v = strings.Trim(v, "\"' ")
			on = v == "yes"
		}
	}
	return on
}

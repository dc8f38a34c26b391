package api

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
)

// ImageLister is a Client that lists the agent's import directories (the
// agent's ListImages).
type ImageLister interface {
	ListImages(ctx context.Context) ([]apitype.Image, []string, error)
}

// imageJSON is one image of GET /api/workflow/images.
type imageJSON struct {
	Path     string          `json:"path"`
	Format   string          `json:"format"`
	Size     int64           `json:"size"`
	Manifest json.RawMessage `json:"manifest"`
}

type imagesAnswer struct {
	Images []imageJSON `json:"images"`
	Dirs   []string    `json:"dirs"`
}

// listImages: GET /api/workflow/images, the disk images under the agent's
// import_dirs that the bridge's user can read, each with its format (from
// its bytes), size and the manifest the drop folder would give it, for
// the builder to pick a source from.
func (s *Server) listImages(w http.ResponseWriter, r *http.Request) {
	il, ok := s.client(r).(ImageLister)
	if !ok {
		writeJSON(w, http.StatusOK, imagesAnswer{Images: []imageJSON{}, Dirs: []string{}})
		return
	}
	imgs, dirs, err := il.ListImages(r.Context())
	if err != nil {
		fail(w, r, "list the images", err)
		return
	}
	ans := imagesAnswer{Images: make([]imageJSON, 0, len(imgs)), Dirs: dirs}
	if ans.Dirs == nil {
		ans.Dirs = []string{}
	}
	for _, im := range imgs {
		m := json.RawMessage(im.Manifest)
		if !json.Valid(m) {
			m = json.RawMessage("null")
		}
		ans.Images = append(ans.Images, imageJSON{Path: im.Path, Format: im.Format, Size: im.Size, Manifest: m})
	}
	writeJSON(w, http.StatusOK, ans)
}

// ListImages is the agent's ListImages.
func (l *Lazy) ListImages(ctx context.Context) ([]apitype.Image, []string, error) {
	c, err := l.get(ctx)
	if err != nil {
		return nil, nil, err
	}
	il, ok := c.(ImageLister)
	if !ok {
		return []apitype.Image{}, []string{}, nil
	}
	imgs, dirs, err := il.ListImages(ctx)
	return imgs, dirs, l.check(c, err)
}

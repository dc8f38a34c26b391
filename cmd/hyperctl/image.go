package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

// imageExts are the names the drop folder takes as images.
var imageExts = map[string]bool{".vmdk": true, ".ova": true, ".ovf": true, ".vhd": true, ".vhdx": true, ".raw": true, ".img": true, ".qcow2": true}

// sniffImage says whether the file at p is a disk image to submit as one:
// its bytes decide, not its name. It returns the source_type ("" for a
// manifest to parse as such) and an error for a file named as an image
// whose content is text (or nothing): no disk image, refused before the
// agent is asked.
func sniffImage(p string) (string, error) {
	if p == "-" {
		return "", nil
	}
	f, err := os.Open(p)
	if err != nil {
		return "", nil // reading it as a manifest reports why
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return "", nil
	}
	named := imageExts[strings.ToLower(filepath.Ext(p))]
	if st.Size() == 0 {
		if named {
			return "", usageError("cannot submit %s: the file is empty, not a disk image", p)
		}
		return "", nil
	}
	format, err := imgfmt.DetectReader(f, st.Size())
	if err != nil {
		return "", nil
	}
	if format != imgfmt.Raw {
		return manifest.SourceTypeOf(format), nil
	}
	text, start, err := imgfmt.TextStart(f, st.Size())
	switch {
	case err != nil:
		return "", nil
	case text && named:
		return "", usageError("cannot submit %s: %v", p, &imgfmt.NotImageError{Path: p, Start: start})
	case text:
		return "", nil // a JSON or YAML manifest
	}
	return "raw", nil
}

// absImage is p made absolute for the agent, which does not share the
// caller's working directory.
func absImage(p string) (string, error) {
	a, err := filepath.Abs(p)
	if err != nil {
		return "", fail(exitFailed, "cannot submit %s: %w", p, err)
	}
	if _, err := os.Stat(a); errors.Is(err, os.ErrNotExist) {
		return "", usageError("cannot submit %s: no such file", p)
	}
	return a, nil
}

// imageNotice is what submit says before it submits an image.
func imageNotice(p, sourceType string) string {
	return fmt.Sprintf("%s is a %s disk image, not a manifest: submitting it as the drop folder would, "+
		"with the agent's default pipeline (default_pipeline in agent.yaml).\n", p, sourceType)
}

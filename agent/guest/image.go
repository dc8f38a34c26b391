package guest

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
)

// overlay creates a qcow2 file at dst backed by img, so the session can
// write (a journal replay, a probe) without touching img.
func overlay(ctx context.Context, img Image, dst string) error {
	out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2",
		"-b", img.Path, "-F", img.Format, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cannot create overlay of %s: %v: %s", img.Path, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Node is img as a qemu block node description: a "json:" path is a qemu
// spec already; a plain path gets a file protocol child.
func Node(img Image) (map[string]any, error) {
	var node map[string]any
	if s, ok := strings.CutPrefix(img.Path, "json:"); ok {
		if err := json.Unmarshal([]byte(s), &node); err != nil {
			return nil, fmt.Errorf("cannot parse image spec %q: %w", img.Path, err)
		}
		if _, ok := node["driver"]; !ok {
			node["driver"] = img.Format
		}
		return node, nil
	}
	return map[string]any{
		"driver": img.Format,
		"file":   map[string]any{"driver": "file", "filename": img.Path},
	}, nil
}

// blockdev is the qemu-storage-daemon --blockdev JSON for img, node "disk".
// A "json:" path is a qemu spec already; a plain path gets a file protocol node.
func blockdev(img Image, readOnly bool) (string, error) {
	node, err := Node(img)
	if err != nil {
		return "", err
	}
	node["node-name"] = "disk"
	node["read-only"] = readOnly
	b, err := json.Marshal(node)
	return string(b), err
}

// Package web is the dashboard and manifest builder that the REST bridge
// serves at /: plain HTML, CSS and JavaScript embedded in the binary, with
// no build step and no request to any other site. It talks only to the
// bridge's /api/workflow/* endpoints.
package web

import (
	"embed"
	"io/fs"
)

//go:embed static
var static embed.FS

// FS is the dashboard's file tree, index.html at its root.
func FS() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		// static is embedded at build time; Sub fails only on a bad name.
		panic(err)
	}
	return sub
}

package manifest

import _ "embed"

//go:embed schema.json
var schema []byte

// Schema returns the JSON Schema (draft 2020-12) of manifest v1.0, the file
// agent/manifest/schema.json. A test keeps it in step with the Go model and
// the validator's allowed values. It states the shape and the single-field
// rules; the rules across fields or entries (unique VM names, compare with
// fix) and the normalisation of paths are only approximated there, so
// Parse remains the authority.
func Schema() []byte {
	return append([]byte(nil), schema...)
}

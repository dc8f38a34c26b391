package manifest

import (
	"fmt"
	"io"
	"os"
)

// tooLargeMsg is what every reader says of a manifest over MaxSize.
var tooLargeMsg = fmt.Sprintf("manifest is larger than the limit of %d bytes (1 MiB); split a large batch into several manifests", MaxSize)

// TooLargeError is a manifest refused for being larger than MaxSize,
// found without reading more than MaxSize+1 bytes of it.
type TooLargeError struct {
	Name string // the file, "-" for standard input, or the field it came in
}

func (e *TooLargeError) Error() string {
	if e.Name == "" {
		return "cannot read manifest: " + tooLargeMsg
	}
	return fmt.Sprintf("cannot read manifest %s: %s", e.Name, tooLargeMsg)
}

// Read reads a manifest from r, stopping after MaxSize+1 bytes: a larger
// one is a *TooLargeError naming name, and the rest of r is never read
// (a 200 MiB file costs what a 1 MiB one does).
func Read(r io.Reader, name string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read manifest %s: %w", name, err)
	}
	if len(data) > MaxSize {
		return nil, &TooLargeError{Name: name}
	}
	return data, nil
}

// ReadFile reads the manifest at path with Read.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read manifest: %w", err)
	}
	defer f.Close()
	return Read(f, path)
}

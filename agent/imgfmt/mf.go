package imgfmt

import (
	"bufio"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"regexp"
	"strings"
)

// Digest is one line of an OVF manifest (.mf): "SHA256(disk1.vmdk)= <hex>".
type Digest struct {
	Algorithm string // SHA1 | SHA256 | SHA512
	File      string
	Hex       string // lowercase
}

var mfLine = regexp.MustCompile(`^(SHA1|SHA256|SHA512)\s*\(([^)]+)\)\s*=\s*([0-9a-fA-F]+)$`)

// ParseManifest reads an OVF manifest. Lines it cannot read are errors
// naming the line: a manifest exists to be checked, not guessed at.
func ParseManifest(r io.Reader) ([]Digest, error) {
	var out []Digest
	sc := bufio.NewScanner(io.LimitReader(r, 1<<20))
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		m := mfLine.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("ovf manifest line %d: %q is not ALGORITHM(FILE)= DIGEST", n, line)
		}
		d := Digest{Algorithm: m[1], File: strings.TrimSpace(m[2]), Hex: strings.ToLower(m[3])}
		if want := NewHash(d.Algorithm).Size() * 2; len(d.Hex) != want {
			return nil, fmt.Errorf("ovf manifest line %d: %s digest of %s has %d hex digits, want %d", n, d.Algorithm, d.File, len(d.Hex), want)
		}
		out = append(out, d)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("ovf manifest: %w", err)
	}
	return out, nil
}

// NewHash returns the hash for a manifest algorithm name (SHA1, SHA256,
// SHA512); nil for any other.
func NewHash(algorithm string) hash.Hash {
	switch algorithm {
	case "SHA1":
		return sha1.New()
	case "SHA256":
		return sha256.New()
	case "SHA512":
		return sha512.New()
	}
	return nil
}

// Sum hashes r with the digest's algorithm and returns the lowercase hex.
func (d Digest) Sum(r io.Reader) (string, error) {
	h := NewHash(d.Algorithm)
	if h == nil {
		return "", fmt.Errorf("unknown digest algorithm %q", d.Algorithm)
	}
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

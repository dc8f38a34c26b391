// Package sources is the registry of remote sources a manifest may name in
// load.source: one admin-written file per source,
// /etc/hyper2kvm/sources.d/NAME.yaml, and its password kept apart as an
// encrypted systemd credential, /etc/hyper2kvm/credentials/source-NAME.cred
// (see docs/SOURCES.md). A manifest never holds a credential: it names a
// source, and the admin decides (files and polkit) what a source may reach
// and who may use it. Leaf package: it imports only the YAML parser.
package sources

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Default locations.
const (
	DefaultDir           = "/etc/hyper2kvm/sources.d"
	DefaultCredentialDir = "/etc/hyper2kvm/credentials"
)

// DefaultMaxParallelExports is how many disks of one source are downloaded
// at once when the file does not say.
const DefaultMaxParallelExports = 2

// maxFileSize bounds a source file: a few lines, never megabytes.
const maxFileSize = 64 << 10

// Types are the allowed values of type.
func Types() []string { return []string{"vsphere"} }

var (
	nameRE       = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	thumbprintRE = regexp.MustCompile(`^([0-9A-F]{2}:){31}[0-9A-F]{2}$`)
)

// ValidName says whether name can name a source (and its file and
// credential): lower-case letters, digits, '-' and '_', at most 63.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// Source is one registry entry.
type Source struct {
	Name string `yaml:"-" json:"name"` // from the file name
	File string `yaml:"-" json:"file"` // the file it was read from

	Type     string `yaml:"type" json:"type"`
	URL      string `yaml:"url" json:"url"`
	Username string `yaml:"username" json:"username"`
	// Thumbprint is the SHA-256 fingerprint of the server's certificate,
	// normalised to upper-case hex pairs joined by ':'. The connection is
	// refused when the server shows another certificate.
	Thumbprint string `yaml:"thumbprint" json:"thumbprint,omitempty"`
	// Insecure accepts any certificate; only when the admin writes it.
	Insecure           bool   `yaml:"insecure" json:"insecure,omitempty"`
	Datacenter         string `yaml:"datacenter" json:"datacenter,omitempty"`
	MaxParallelExports int    `yaml:"max_parallel_exports" json:"max_parallel_exports"`
	Description        string `yaml:"description" json:"description,omitempty"`
}

// Host is the host[:port] of the source's URL.
func (s *Source) Host() string {
	u, err := url.Parse(s.URL)
	if err != nil {
		return ""
	}
	return u.Host
}

// CredentialID is the name of the source's password in a unit's
// $CREDENTIALS_DIRECTORY, and the name sealed into its encrypted file.
func CredentialID(name string) string { return "source-" + name }

// CredentialPath is the encrypted password file of source name in dir.
func CredentialPath(dir, name string) string {
	return filepath.Join(dir, CredentialID(name)+".cred")
}

// Error is a problem with a source file, naming the file and the field.
type Error struct {
	File  string
	Field string // "" when the problem is the whole file
	Msg   string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return e.File + ": " + e.Msg
	}
	return e.File + ": " + e.Field + ": " + e.Msg
}

// ErrNotFound is returned (wrapped) by Get for a source with no file.
var ErrNotFound = errors.New("no such source")

// Parse reads one source file's content; file is its path (the name comes
// from the file name). Every problem is reported, one per field.
func Parse(file string, data []byte) (*Source, []error) {
	name := strings.TrimSuffix(filepath.Base(file), ".yaml")
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, &Error{File: file, Field: field, Msg: fmt.Sprintf(format, a...)})
	}
	if !ValidName(name) {
		bad("", "%q is not a valid source name: use lower-case letters, digits, '-' and '_' (at most 63), and name the file NAME.yaml", name)
	}
	if len(data) > maxFileSize {
		bad("", "is larger than %d bytes; a source file is a few lines", maxFileSize)
		return nil, errs
	}
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		bad("", "cannot parse as YAML: %v", err)
		return nil, errs
	}
	for _, secret := range []string{"password", "passwd", "secret"} {
		if _, ok := raw[secret]; ok {
			bad(secret, "a password is never kept in a source file; remove it and run `hyper2kvmd source set-password %s` (it is stored encrypted with systemd-creds)", name)
		}
	}
	s := &Source{Name: name, File: file}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(s); err != nil && !errors.Is(err, io.EOF) {
		msg := strings.ReplaceAll(err.Error(), "not found in type sources.Source", "is not a source key")
		if _, isSecret := raw["password"]; !isSecret || !strings.Contains(msg, "password") {
			bad("", "%s (allowed keys: type, url, username, thumbprint, insecure, datacenter, max_parallel_exports, description)", strings.TrimPrefix(msg, "yaml: "))
		}
	}
	switch s.Type {
	case "":
		bad("type", `is required ("vsphere")`)
	case "vsphere":
	default:
		bad("type", "%q is not supported; allowed: %s", s.Type, strings.Join(Types(), ", "))
	}
	if s.URL == "" {
		bad("url", `is required: the vCenter or ESXi host, e.g. "https://vcenter.example.com/sdk"`)
	} else if u, err := url.Parse(s.URL); err != nil || u.Scheme != "https" || u.Host == "" {
		bad("url", "%q is not an https:// URL with a host (e.g. \"https://vcenter.example.com/sdk\")", s.URL)
	} else if u.User != nil {
		bad("url", "must not hold a user name or password; give username here and the password with `hyper2kvmd source set-password %s`", name)
	}
	if s.Username == "" {
		bad("username", `is required (e.g. "svc-hyper2kvm@vsphere.local")`)
	}
	if s.Thumbprint != "" {
		tp := NormalizeThumbprint(s.Thumbprint)
		if !thumbprintRE.MatchString(tp) {
			bad("thumbprint", "must be the SHA-256 fingerprint of the server's certificate: 32 hexadecimal pairs (as `openssl x509 -noout -fingerprint -sha256` prints)")
		}
		s.Thumbprint = tp
	}
	if s.Thumbprint == "" && !s.Insecure {
		bad("thumbprint", "is required: the server's certificate is pinned by its SHA-256 fingerprint (`hyperctl sources` prints the server's when it does not match; `openssl s_client -connect HOST:443 </dev/null | openssl x509 -noout -fingerprint -sha256`); write `insecure: true` instead only to accept any certificate")
	}
	if s.Thumbprint != "" && s.Insecure {
		bad("insecure", "is true but a thumbprint is also given; keep one (the thumbprint)")
	}
	switch {
	case s.MaxParallelExports == 0:
		s.MaxParallelExports = DefaultMaxParallelExports
	case s.MaxParallelExports < 0 || s.MaxParallelExports > 32:
		bad("max_parallel_exports", "%d is out of range 1..32", s.MaxParallelExports)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return s, nil
}

// NormalizeThumbprint writes a fingerprint as upper-case hex pairs joined
// by ':', whatever separators and case it was given with (and without an
// "SHA256 Fingerprint=" prefix, as openssl prints it).
func NormalizeThumbprint(tp string) string {
	if i := strings.LastIndexByte(tp, '='); i >= 0 {
		tp = tp[i+1:]
	}
	var hex []byte
	for _, c := range strings.ToUpper(tp) {
		switch {
		case c >= '0' && c <= '9', c >= 'A' && c <= 'F':
			hex = append(hex, byte(c))
		case c == ':' || c == ' ' || c == '-':
		default:
			return tp
		}
	}
	if len(hex)%2 != 0 {
		return tp
	}
	var b strings.Builder
	for i := 0; i < len(hex); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.Write(hex[i : i+2])
	}
	return b.String()
}

// Registry is the set of sources read from a directory.
type Registry struct {
	Dir     string
	Sources map[string]*Source
	// Errors are the files that could not be read or are invalid; their
	// sources are left out.
	Errors []error
}

// Load reads every NAME.yaml of dir. A missing dir is an empty registry.
func Load(dir string) (*Registry, error) {
	r := &Registry{Dir: dir, Sources: map[string]*Source{}}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read the sources directory %s: %w", dir, err)
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".yaml") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		file := filepath.Join(dir, e.Name())
		s, errs := readFile(file)
		if len(errs) > 0 {
			r.Errors = append(r.Errors, errs...)
			continue
		}
		r.Sources[s.Name] = s
	}
	return r, nil
}

// Names are the valid sources' names, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.Sources))
	for n := range r.Sources {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Get reads the one source name from dir.
func Get(dir, name string) (*Source, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("%q is not a valid source name (lower-case letters, digits, '-' and '_'): %w", name, ErrNotFound)
	}
	file := filepath.Join(dir, name+".yaml")
	s, errs := readFile(file)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

func readFile(file string) (*Source, []error) {
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		return nil, []error{fmt.Errorf("source %q is not defined: %s does not exist (an admin adds it; see docs/SOURCES.md): %w", name, file, ErrNotFound)}
	}
	if err != nil {
		return nil, []error{fmt.Errorf("cannot read source file: %w", err)}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, []error{fmt.Errorf("cannot read source file %s: %w", file, err)}
	}
	return Parse(file, data)
}

package sources

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The password of a source is a systemd credential: encrypted with
// systemd-creds (the host key, and the TPM2 when there is one) under the
// credential directory, given to a job's unit with LoadCredentialEncrypted=
// (the worker reads it from $CREDENTIALS_DIRECTORY) and decrypted by the
// agent itself to browse. It is passed to and from systemd-creds on
// stdin and stdout only: never in an environment, an argument list or a
// log line.

// maxPassword bounds what is read as a password.
const maxPassword = 4096

// SealPassword encrypts password as source name's credential in dir
// (created 0700), replacing the previous one atomically.
func SealPassword(ctx context.Context, dir, name string, password []byte) error {
	if !ValidName(name) {
		return fmt.Errorf("%q is not a valid source name", name)
	}
	if len(password) == 0 {
		return errors.New("the password is empty")
	}
	if len(password) > maxPassword {
		return fmt.Errorf("the password is longer than %d bytes", maxPassword)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cannot create the credential directory: %w", err)
	}
	dst := CredentialPath(dir, name)
	tmp := dst + ".new"
	os.Remove(tmp)
	cmd := exec.CommandContext(ctx, "systemd-creds", "encrypt", "--name="+CredentialID(name), "-", tmp)
	cmd.Stdin = bytes.NewReader(password)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cannot encrypt the password with systemd-creds: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cannot protect %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cannot store the credential: %w", err)
	}
	return nil
}

// OpenPassword decrypts source name's password from dir (the agent,
// root, to browse the source).
func OpenPassword(ctx context.Context, dir, name string) ([]byte, error) {
	p := CredentialPath(dir, name)
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
		return nil, &NoPasswordError{Name: name, Path: p}
	}
	cmd := exec.CommandContext(ctx, "systemd-creds", "decrypt", "--name="+CredentialID(name), p, "-")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("cannot decrypt the password of source %s (%s): %v: %s; set it again with `hyper2kvmd source set-password %s`", name, p, err, strings.TrimSpace(stderr.String()), name)
	}
	return bytes.TrimRight(stdout.Bytes(), "\n"), nil
}

// UnitPassword reads source name's password from the unit's
// $CREDENTIALS_DIRECTORY (the worker).
func UnitPassword(name string) ([]byte, error) {
	dir := os.Getenv("CREDENTIALS_DIRECTORY")
	if dir == "" {
		return nil, fmt.Errorf("the job's unit was given no credentials ($CREDENTIALS_DIRECTORY is not set): is the password of source %s set (`hyper2kvmd source set-password %s`)?", name, name)
	}
	b, err := os.ReadFile(filepath.Join(dir, CredentialID(name)))
	if err != nil {
		return nil, fmt.Errorf("cannot read the password of source %s from the unit's credentials: %w", name, err)
	}
	return bytes.TrimRight(b, "\n"), nil
}

// NoPasswordError says a source has no password stored.
type NoPasswordError struct{ Name, Path string }

func (e *NoPasswordError) Error() string {
	return fmt.Sprintf("source %s has no password: %s does not exist; set it with `hyper2kvmd source set-password %s`", e.Name, e.Path, e.Name)
}

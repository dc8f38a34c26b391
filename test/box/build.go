package box

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// cacheDir holds the project's binaries built for Install: one build per
// test binary into box-bin-<checkout hash>, shared by every box of the run
// and kept as a cache between runs (two checkouts never share one).
const cacheDir = "/var/tmp/hyper2kvm-cache"

var build struct {
	once sync.Once
	err  error
}

// buildOnce runs `make build BIN=binDir` once per test binary, under a file
// lock so that concurrent test binaries do not write the same files at once.
func buildOnce() (string, error) {
	sum := sha256.Sum256([]byte(repoRoot()))
	binDir := filepath.Join(cacheDir, "box-bin-"+hex.EncodeToString(sum[:6]))
	build.once.Do(func() {
		if err := os.MkdirAll(binDir, 0o755); err != nil {
			build.err = fmt.Errorf("cannot create %s: %w", binDir, err)
			return
		}
		lock, err := os.OpenFile(binDir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			build.err = fmt.Errorf("cannot open build lock: %w", err)
			return
		}
		defer lock.Close()
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
			build.err = fmt.Errorf("cannot lock build: %w", err)
			return
		}
		cmd := exec.Command("make", "-C", repoRoot(), "build", "BIN="+binDir)
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("make build: %v\n%s", err, out)
		}
	})
	return binDir, build.err
}

var repo struct {
	once sync.Once
	dir  string
}

// repoRoot is the checkout the tests run from: the directory of go.mod above
// the test's working directory (go test runs tests in their package directory).
func repoRoot() string {
	repo.once.Do(func() {
		if out, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
			if m := strings.TrimSpace(string(out)); m != "" && m != os.DevNull {
				repo.dir = filepath.Dir(m)
				return
			}
		}
		dir, _ := os.Getwd()
		for d := dir; d != "/"; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				repo.dir = d
				return
			}
		}
		repo.dir = dir
	})
	return repo.dir
}

// RepoRoot is the project checkout the tests run from.
func RepoRoot() string { return repoRoot() }

// Package pgcluster starts a throwaway PostgreSQL cluster for tests:
// Debian's postgresql package, initdb and pg_ctl on a temporary directory
// as the unprivileged user postgres, listening on a Unix socket only,
// with peer authentication (the documented default for the agent's
// fleet store). Test-only.
package pgcluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"
)

// Cluster is a running throwaway cluster.
type Cluster struct {
	// Dir holds the data directory and the socket; bind it into a box at
	// the same path and URL works there too.
	Dir string
	// URL is the store.url of database hyper2kvm, for role root.
	URL string
	bin string
}

// binDir is the newest installed PostgreSQL's bin directory, "" if none.
func binDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(dirs[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(dirs[j]))))
		return vi > vj
	})
	if len(dirs) == 0 {
		return ""
	}
	return filepath.Dir(dirs[0])
}

// Start runs a new cluster for the test and stops it when the test ends.
// It skips the test when PostgreSQL is not installed (packaging/deps.txt
// installs it for the test tier) or the test does not run as root.
func Start(t testing.TB) *Cluster {
	t.Helper()
	return start(t, false)
}

// StartDurable is Start with fsync on, as a production server runs: for
// benchmarks, whose commits then cost what they would there.
func StartDurable(t testing.TB) *Cluster {
	t.Helper()
	return start(t, true)
}

func start(t testing.TB, fsync bool) *Cluster {
	t.Helper()
	bin := binDir()
	if bin == "" {
		t.Skip("PostgreSQL is not installed (apt-get install postgresql)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs the cluster as user postgres")
	}
	pg, err := user.Lookup("postgres")
	if err != nil {
		t.Skipf("no user postgres: %v", err)
	}
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	// Not under /tmp: the agent's unit has PrivateTmp=yes. Nor /run: the
	// boxes mount their own there. The directory is bound into boxes at
	// the same path.
	dir, err := os.MkdirTemp("/var/lib", "h2k-test-pg-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	os.Chown(dir, uid, gid)
	c := &Cluster{Dir: dir, bin: bin, URL: "postgresql:///hyper2kvm?host=" + dir}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := filepath.Join(dir, "data")
	c.run(t, ctx, "initdb", "-D", data, "-U", "postgres", "--auth-local=peer", "--auth-host=reject", "-N", "-E", "UTF8")
	c.run(t, ctx, "pg_ctl", "-D", data, "-l", filepath.Join(dir, "log"), "-w", "-o",
		"-k "+dir+" -c listen_addresses='' -c fsync="+map[bool]string{false: "off", true: "on"}[fsync]+" -c max_connections=100", "start")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		exec.CommandContext(ctx, "runuser", "-u", "postgres", "--", filepath.Join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop").Run()
		os.RemoveAll(dir)
	})
	// Role root (the agent runs as root; peer authentication maps it) owns
	// the database.
	c.run(t, ctx, "psql", "-h", dir, "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", "CREATE ROLE root LOGIN SUPERUSER")
	c.run(t, ctx, "createdb", "-h", dir, "-U", "postgres", "-O", "root", "hyper2kvm")
	return c
}

// run runs a PostgreSQL program as postgres.
func (c *Cluster) run(t testing.TB, ctx context.Context, prog string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", filepath.Join(c.bin, prog)}, args...)...)
	cmd.Dir = c.Dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(c.Dir, "log"))
		t.Fatalf("%s %v: %v\n%s\n%s", prog, args, err, out, log)
	}
	return string(out)
}

// SQL runs a query as root with psql and returns its unaligned output.
func (c *Cluster) SQL(t testing.TB, query string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(c.bin, "psql"), "-h", c.Dir, "-d", "hyper2kvm", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", query).CombinedOutput()
	if err != nil {
		t.Fatalf("psql %q: %v\n%s", query, err, out)
	}
	return string(out)
}

// String names the cluster in messages.
func (c *Cluster) String() string { return fmt.Sprintf("PostgreSQL in %s", c.Dir) }

package agent

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"
	"golang.org/x/sys/unix"
	_ "modernc.org/sqlite" // the pure-Go SQLite driver River's riversqlite runs on

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// The job store is a River database (see doc.go for why River). Every job
// is one river_job row of kind jobKind inserted through River's client, so
// that its priority, scheduled time, attempts and state are River's own
// columns; the agent's whole record (what it needs to finish the job after
// a restart) is the row's args. River has no call that changes a job's
// args or moves a job between states from outside a worker, so the store
// does those two with one UPDATE of River's own columns (jobDB.update);
// docs/AGENT.md says so. A claimed file, which River has no notion of, is
// a row of hyper2kvm_claim beside River's tables.

// jobKind is the River kind of a conversion job.
const jobKind = "hyper2kvm.convert"

// jobQueue is the River queue the agent's jobs are in.
const jobQueue = "hyper2kvm"

// jobArgs is a record as River's args: its JSON is the record's.
type jobArgs struct{ r *record }

func (jobArgs) Kind() string                   { return jobKind }
func (a jobArgs) MarshalJSON() ([]byte, error) { return json.Marshal(a.r) }

// jobDB is the job store's database: River's schema plus the claims.
// One host keeps it in SQLite (db, client); a fleet in PostgreSQL (pool,
// pgClient), each host's jobs and claims marked with its name (host).
type jobDB struct {
	host   string
	db     *sql.DB
	client *river.Client[*sql.Tx]
	lock   *os.File // held while migrating and importing

	pool     *pgxpool.Pool
	pgClient *river.Client[pgx.Tx]
	pgLock   *pgxpool.Conn // holds the advisory lock while migrating and importing
}

// q is the query for this database: SQLite's or PostgreSQL's.
func (d *jobDB) q(sqlite, pg string) string {
	if d.pool != nil {
		return pg
	}
	return sqlite
}

// claimHost is the host the claims and jobs read and written are
// marked with: this host's name in a fleet, "" on one host (SQLite), so
// that a machine renamed keeps its claims.
func (d *jobDB) claimHost() string {
	if d.pool != nil {
		return d.host
	}
	return ""
}

// ts is a time as this database takes it in a parameter.
func (d *jobDB) ts(t time.Time) any {
	if d.pool != nil {
		return t.UTC()
	}
	return sqliteTime(t)
}

// exec runs one statement outside a transaction.
func (d *jobDB) exec(ctx context.Context, query string, args ...any) error {
	if d.pool != nil {
		_, err := d.pool.Exec(ctx, query, args...)
		return err
	}
	_, err := d.db.ExecContext(ctx, query, args...)
	return err
}

// rows runs a query and calls f with each row's scanner.
func (d *jobDB) rows(ctx context.Context, query string, args []any, f func(scan func(...any) error) error) error {
	if d.pool != nil {
		rs, err := d.pool.Query(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			if err := f(rs.Scan); err != nil {
				return err
			}
		}
		return rs.Err()
	}
	rs, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rs.Close()
	for rs.Next() {
		if err := f(rs.Scan); err != nil {
			return err
		}
	}
	return rs.Err()
}

// dbTx is one transaction on either database.
type dbTx struct {
	d  *jobDB
	sq *sql.Tx
	pg pgx.Tx
}

func (d *jobDB) begin(ctx context.Context) (*dbTx, error) {
	if d.pool != nil {
		tx, err := d.pool.Begin(ctx)
		return &dbTx{d: d, pg: tx}, err
	}
	tx, err := d.db.BeginTx(ctx, nil)
	return &dbTx{d: d, sq: tx}, err
}

func (t *dbTx) exec(ctx context.Context, query string, args ...any) error {
	if t.pg != nil {
		_, err := t.pg.Exec(ctx, query, args...)
		return err
	}
	_, err := t.sq.ExecContext(ctx, query, args...)
	return err
}

// execN runs one statement and reports how many rows it changed.
func (t *dbTx) execN(ctx context.Context, query string, args ...any) (int64, error) {
	if t.pg != nil {
		tag, err := t.pg.Exec(ctx, query, args...)
		return tag.RowsAffected(), err
	}
	res, err := t.sq.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (t *dbTx) insertMany(ctx context.Context, params []river.InsertManyParams) ([]*rivertype.JobInsertResult, error) {
	if t.pg != nil {
		return t.d.pgClient.InsertManyTx(ctx, t.pg, params)
	}
	return t.d.client.InsertManyTx(ctx, t.sq, params)
}

func (t *dbTx) commit(ctx context.Context) error {
	if t.pg != nil {
		return t.pg.Commit(ctx)
	}
	return t.sq.Commit()
}

func (t *dbTx) rollback(ctx context.Context) {
	if t.pg != nil {
		t.pg.Rollback(ctx)
		return
	}
	t.sq.Rollback()
}

// openJobDB opens the store named by rawURL for host, brings River's
// schema and the agent's tables up to date (under a lock, so two agents
// starting at once do not migrate twice) and returns it with the lock
// still held: the caller imports the old files under it, then calls
// unlock.
func openJobDB(ctx context.Context, rawURL, host string) (*jobDB, error) {
	if isPostgres(rawURL) {
		d := &jobDB{host: host}
		if err := d.openPostgres(ctx, rawURL); err != nil {
			d.close()
			return nil, err
		}
		return d, nil
	}
	path, err := sqlitePath(rawURL)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("cannot create the job store's directory: %w", err)
	}
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cannot open the job store's lock: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		lock.Close()
		return nil, fmt.Errorf("cannot lock the job store %s: %w", path, err)
	}
	d := &jobDB{host: host, lock: lock}
	if err := d.open(ctx, path); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

// migrateLockKey is the PostgreSQL advisory lock agents take to migrate.
const migrateLockKey = 0x68326b76 // "h2kv"

// openPostgres connects to a fleet's database (peer authentication over
// the Unix socket by default; a password comes as the systemd credential
// pgpassword, never in agent.yaml), takes the migration lock and migrates.
func (d *jobDB) openPostgres(ctx context.Context, rawURL string) error {
	cfg, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return fmt.Errorf("store.url: %w", err)
	}
	if dir := os.Getenv("CREDENTIALS_DIRECTORY"); dir != "" && cfg.ConnConfig.Password == "" {
		if pw, err := os.ReadFile(filepath.Join(dir, "pgpassword")); err == nil {
			cfg.ConnConfig.Password = strings.TrimSpace(string(pw))
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("cannot connect to the job store: %w", err)
	}
	d.pool = pool
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("cannot connect to the job store %s: %w", redactURL(rawURL), err)
	}
	d.pgLock = conn
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrateLockKey); err != nil {
		return fmt.Errorf("cannot lock the job store for its migrations: %w", err)
	}
	driver := riverpgxv5.New(pool)
	m, err := rivermigrate.New(driver, nil)
	if err != nil {
		return fmt.Errorf("cannot prepare the job store's migrations: %w", err)
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("cannot migrate the job store to River's schema: %w", err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS hyper2kvm_claim (host TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (host, name));
CREATE TABLE IF NOT EXISTS hyper2kvm_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hyper2kvm_host (name TEXT PRIMARY KEY, heartbeat_at TIMESTAMPTZ NOT NULL);
ALTER TABLE hyper2kvm_host ADD COLUMN IF NOT EXISTS labels TEXT NOT NULL DEFAULT '{}';
ALTER TABLE hyper2kvm_host ADD COLUMN IF NOT EXISTS busy INTEGER NOT NULL DEFAULT 0;
ALTER TABLE hyper2kvm_host ADD COLUMN IF NOT EXISTS max_workers INTEGER NOT NULL DEFAULT 0;
ALTER TABLE hyper2kvm_host ADD COLUMN IF NOT EXISTS queue TEXT NOT NULL DEFAULT 'running'`); err != nil {
		return fmt.Errorf("cannot create the job store's claim table: %w", err)
	}
	client, err := river.NewClient(driver, &river.Config{Logger: discardLogger()})
	if err != nil {
		return fmt.Errorf("cannot start River: %w", err)
	}
	d.pgClient = client
	return nil
}

// redactURL drops a password from a store URL for messages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "store.url"
	}
	return u.Redacted()
}

// isPostgres reports whether a store URL names PostgreSQL.
func isPostgres(u string) bool {
	return strings.HasPrefix(u, "postgres://") || strings.HasPrefix(u, "postgresql://")
}

func (d *jobDB) open(ctx context.Context, path string) error {
	// River's SQLite driver wants one connection: concurrent writers get
	// SQLITE_BUSY. WAL keeps readers off the writer; synchronous(FULL)
	// makes a commit durable before anything with an outside effect (a
	// unit starting, a file settling) follows it. _txlock=immediate takes
	// the write lock at BEGIN, so a transaction never fails half-way.
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return fmt.Errorf("cannot open the job store %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	d.db = db
	if err := db.PingContext(ctx); err != nil {
		return fmt.Errorf("cannot open the job store %s: %w", path, err)
	}
	os.Chmod(path, 0o600)
	driver := riversqlite.New(db)
	m, err := rivermigrate.New(driver, nil)
	if err != nil {
		return fmt.Errorf("cannot prepare the job store's migrations: %w", err)
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("cannot migrate the job store %s to River's schema: %w", path, err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS hyper2kvm_claim (host TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (host, name));
CREATE TABLE IF NOT EXISTS hyper2kvm_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)`); err != nil {
		return fmt.Errorf("cannot create the job store's claim table: %w", err)
	}
	// An insert-only client: it runs no jobs itself (the agent starts each
	// as a systemd unit), it only puts them into River's table.
	client, err := river.NewClient(driver, &river.Config{Logger: discardLogger()})
	if err != nil {
		return fmt.Errorf("cannot start River: %w", err)
	}
	d.client = client
	return nil
}

// sqlitePath is the file of a sqlite:// store URL.
func sqlitePath(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	switch {
	case err != nil:
		return "", fmt.Errorf("store.url %q: %w", rawURL, err)
	case u.Scheme != "sqlite" || !filepath.IsAbs(u.Path):
		return "", fmt.Errorf("store.url %q: want sqlite:///absolute/path.db", rawURL)
	}
	return u.Path, nil
}

// unlock lets another process migrate or import.
func (d *jobDB) unlock() {
	if d.lock != nil {
		d.lock.Close()
		d.lock = nil
	}
	if d.pgLock != nil {
		d.pgLock.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, migrateLockKey)
		d.pgLock.Release()
		d.pgLock = nil
	}
}

func (d *jobDB) close() {
	d.unlock()
	if d.db != nil {
		d.db.Close()
	}
	if d.pool != nil {
		d.pool.Close()
	}
}

// meta reads a value of hyper2kvm_meta ("" when unset).
func (d *jobDB) meta(ctx context.Context, key string) (string, error) {
	var v string
	err := d.rows(ctx, d.q(`SELECT value FROM hyper2kvm_meta WHERE key = ?`, `SELECT value FROM hyper2kvm_meta WHERE key = $1`), []any{key},
		func(scan func(...any) error) error { return scan(&v) })
	return v, err
}

// setMeta sets a value of hyper2kvm_meta.
func (d *jobDB) setMeta(ctx context.Context, key, value string) error {
	return d.exec(ctx, d.q(`INSERT INTO hyper2kvm_meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`,
		`INSERT INTO hyper2kvm_meta (key, value) VALUES ($1, $2) ON CONFLICT(key) DO UPDATE SET value = excluded.value`), key, value)
}

// load reads every job and claim into a new state.
func (d *jobDB) load(ctx context.Context) (*state, error) {
	s := newState()
	s.db = d
	// On one host every job is this host's, whatever it was called when
	// the job was made (a renamed machine keeps its jobs).
	query, args := `SELECT id, json(args) FROM river_job WHERE kind = ?`, []any{jobKind}
	if d.pool != nil {
		query, args = `SELECT id, args::text FROM river_job WHERE kind = $1 AND metadata ->> 'host' = $2`, []any{jobKind, d.host}
	}
	err := d.rows(ctx, query, args,
		func(scan func(...any) error) error {
			var rowid int64
			var args []byte
			if err := scan(&rowid, &args); err != nil {
				return err
			}
			r := &record{}
			if err := json.Unmarshal(args, r); err != nil || r.ID == "" {
				return fmt.Errorf("job row %d: %v", rowid, err)
			}
			if d.pool != nil && r.Host == "" {
				r.Host = d.host // the row is this host's (the query says so): writes compare with it
			}
			s.Jobs[r.ID] = r
			s.rows[r.ID] = rowid
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("cannot read the job store: %w", err)
	}
	err = d.rows(ctx, d.q(`SELECT data FROM hyper2kvm_claim WHERE host = ?`, `SELECT data FROM hyper2kvm_claim WHERE host = $1`), []any{d.claimHost()},
		func(scan func(...any) error) error {
			var data []byte
			if err := scan(&data); err != nil {
				return err
			}
			c := &claim{}
			if err := json.Unmarshal(data, c); err != nil || c.Name == "" {
				return fmt.Errorf("a claim: %v", err)
			}
			s.Claims[c.Name] = c
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("cannot read the job store's claims: %w", err)
	}
	s.loaded()
	return s, nil
}

// batch is what one save writes, in one transaction.
type batch struct {
	insert      []*record
	update      []*record
	deleteJobs  []int64
	putClaims   []*claim
	claimsGone  []string
	rows        map[string]int64 // the row of each job in update
	metaKey     string           // set in the same transaction (the import marker)
	metaValue   string
	insertedIDs []int64                  // filled in: the rows of insert, in order
	deliveries  []river.InsertManyParams // webhook deliveries (webhooks.go)
	lost        []string                 // filled in: jobs whose row another host of the fleet holds (not written)
}

// write commits b: all of it or nothing.
func (d *jobDB) write(ctx context.Context, b *batch) error {
	tx, err := d.begin(ctx)
	if err != nil {
		return fmt.Errorf("cannot save job store: %w", err)
	}
	defer tx.rollback(ctx)
	if len(b.insert) > 0 {
		params := make([]river.InsertManyParams, len(b.insert))
		for i, r := range b.insert {
			params[i] = river.InsertManyParams{Args: jobArgs{r}, InsertOpts: d.insertOpts(r)}
		}
		res, err := tx.insertMany(ctx, params)
		if err != nil {
			return fmt.Errorf("cannot save job store: inserting %d jobs: %w", len(b.insert), err)
		}
		b.insertedIDs = b.insertedIDs[:0]
		for _, x := range res {
			b.insertedIDs = append(b.insertedIDs, x.Job.ID)
		}
		// River inserts a job as available; the rest of what the
		// record says goes in as for any other change.
		for i, r := range b.insert {
			if r.State == jobs.Pending && r.Attempt == 0 {
				continue // as River inserted it
			}
			if err := d.updateRow(ctx, tx, b.insertedIDs[i], r); err != nil {
				return err
			}
		}
	}
	if len(b.deliveries) > 0 {
		if _, err := tx.insertMany(ctx, b.deliveries); err != nil {
			return fmt.Errorf("cannot save job store: queueing %d webhook deliveries: %w", len(b.deliveries), err)
		}
	}
	for _, r := range b.update {
		if err := d.updateRow(ctx, tx, b.rows[r.ID], r); errors.Is(err, errNotOurs) {
			b.lost = append(b.lost, r.ID) // another host's now: left as it has it
		} else if err != nil {
			return err
		}
	}
	for _, id := range b.deleteJobs {
		if err := tx.exec(ctx, d.q(`DELETE FROM river_job WHERE id = ?`, `DELETE FROM river_job WHERE id = $1`), id); err != nil {
			return fmt.Errorf("cannot save job store: removing a job: %w", err)
		}
	}
	for _, c := range b.putClaims {
		data, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("cannot encode claim %s: %w", c.Name, err)
		}
		if err := tx.exec(ctx, d.q(`INSERT INTO hyper2kvm_claim (host, name, data) VALUES (?, ?, ?) ON CONFLICT(host, name) DO UPDATE SET data = excluded.data`,
			`INSERT INTO hyper2kvm_claim (host, name, data) VALUES ($1, $2, $3) ON CONFLICT(host, name) DO UPDATE SET data = excluded.data`),
			d.claimHost(), c.Name, string(data)); err != nil {
			return fmt.Errorf("cannot save job store: claim %s: %w", c.Name, err)
		}
	}
	for _, name := range b.claimsGone {
		if err := tx.exec(ctx, d.q(`DELETE FROM hyper2kvm_claim WHERE host = ? AND name = ?`, `DELETE FROM hyper2kvm_claim WHERE host = $1 AND name = $2`), d.claimHost(), name); err != nil {
			return fmt.Errorf("cannot save job store: claim %s: %w", name, err)
		}
	}
	if b.metaKey != "" {
		if err := tx.exec(ctx, d.q(`INSERT INTO hyper2kvm_meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`,
			`INSERT INTO hyper2kvm_meta (key, value) VALUES ($1, $2) ON CONFLICT(key) DO UPDATE SET value = excluded.value`), b.metaKey, b.metaValue); err != nil {
			return fmt.Errorf("cannot save job store: %w", err)
		}
	}
	if err := tx.commit(ctx); err != nil {
		return fmt.Errorf("cannot save job store: %w", err)
	}
	return nil
}

// insertOpts are River's columns for a new job.
func (d *jobDB) insertOpts(r *record) *river.InsertOpts {
	// A fleet's job is marked with the host that holds it: "" while no
	// host has taken it (placement names another host, fleetplace.go).
	host := d.host
	if d.pool != nil {
		host = r.Host
	}
	meta, _ := json.Marshal(map[string]string{"job_id": r.ID, "host": host})
	// A job due later is River's "scheduled" until its scheduled_at.
	return &river.InsertOpts{
		Queue:       jobQueue,
		MaxAttempts: maxAttempts,
		Priority:    riverPriority(r.Priority),
		Metadata:    meta,
		ScheduledAt: r.NotBefore,
	}
}

// riverPriority maps a job's priority (any integer, higher first) onto
// River's four (1 first): River's fetch order is coarser than the
// agent's, which still orders jobs of one River priority itself.
func riverPriority(p int) int {
	switch {
	case p > 0:
		return 1
	case p == 0:
		return 2
	case p > -10:
		return 3
	default:
		return 4
	}
}

// riverState is the River state a job in state s has.
func riverState(s jobs.State) string {
	switch s {
	case jobs.Pending:
		return "available"
	case jobs.Running:
		return "running"
	case jobs.Completed:
		return "completed"
	case jobs.Cancelled:
		return "cancelled"
	default:
		return "discarded"
	}
}

// rowState is the River state of r's row: a pending job with a
// not_before is River's "scheduled" (its scheduled_at).
func rowState(r *record) string {
	if r.State == jobs.Pending && !r.NotBefore.IsZero() {
		return "scheduled"
	}
	return riverState(r.State)
}

// updateRow writes r over its row: the args, and the River columns the
// record decides (state, attempts, when it started and ended).
func (d *jobDB) updateRow(ctx context.Context, tx *dbTx, rowid int64, r *record) error {
	args, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("cannot encode job %s: %w", r.ID, err)
	}
	var finalized, attempted any
	if r.State.Ready() {
		at := r.FinishedAt
		if at.IsZero() {
			at = r.CreatedAt
		}
		finalized = d.ts(at)
	}
	if !r.StartedAt.IsZero() {
		attempted = d.ts(r.StartedAt)
	}
	if d.pool != nil {
		// A fleet's row is written only while it is still this record's
		// host's (compare-and-set on metadata.host): a host that was
		// cut off past its lease, whose job another host took and runs,
		// must not overwrite that host's row (fencing, fleetfence.go).
		n, err := tx.execN(ctx, `UPDATE river_job SET args = $1::jsonb, state = $2::river_job_state, attempt = $3, attempted_at = $4, finalized_at = $5, priority = $6
WHERE id = $7 AND metadata ->> 'host' = $8`,
			string(args), rowState(r), r.Attempt, attempted, finalized, riverPriority(r.Priority), rowid, r.Host)
		if err != nil {
			return fmt.Errorf("cannot save job %s: %w", r.ID, err)
		}
		if n == 0 {
			return errNotOurs
		}
		return nil
	}
	err = tx.exec(ctx, `UPDATE river_job SET args = jsonb(?), state = ?, attempt = ?, attempted_at = ?, finalized_at = ?, priority = ? WHERE id = ?`,
		string(args), rowState(r), r.Attempt, attempted, finalized, riverPriority(r.Priority), rowid)
	if err != nil {
		return fmt.Errorf("cannot save job %s: %w", r.ID, err)
	}
	return nil
}

// sqliteTime is a time as River's SQLite driver writes it (its only
// format that compares right in SQL).
func sqliteTime(t time.Time) string {
	return t.UTC().Round(time.Millisecond).Format("2006-01-02 15:04:05.000")
}

// discardLogger silences River's own logging: the agent's insert-only
// client has nothing to say that the agent does not log itself.
func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openStore opens the job store named by storeURL, migrates it, imports
// the old files in stateDir once, and loads it.
func openStore(storeURL, host, stateDir string, log *Logger) (*state, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	d, err := openJobDB(ctx, storeURL, host)
	if err != nil {
		return nil, err
	}
	n, err := importLegacy(ctx, d, stateDir)
	if err != nil {
		d.close()
		return nil, err
	}
	if n > 0 {
		log.Infof(nil, "imported %d jobs from the old job store (state.json, changes.jsonl, history.jsonl; kept beside as *%s)", n, legacySuffix)
	}
	d.unlock()
	s, err := d.load(ctx)
	if err != nil {
		d.close()
		return nil, err
	}
	return s, nil
}

// shared reports whether other hosts use this store (PostgreSQL).
func (d *jobDB) shared() bool { return d != nil && d.pool != nil }

// hostBeat is what a heartbeat says of this host besides being alive.
type hostBeat struct {
	labels    map[string]string
	busy, max int
	queue     string
}

// errLeaseLost is a heartbeat's answer when another host took this
// host's jobs (its lease ran out while it was cut off).
var errLeaseLost = errors.New("lost its lease: another host took its unfinished jobs")

// heartbeat tells the fleet this host is alive. It fails with
// errLeaseLost when another host took this host's jobs (its row was
// deleted): the caller gives up what it no longer holds (fleetfence.go)
// and joins again with first set.
func (d *jobDB) heartbeat(ctx context.Context, first bool, b hostBeat) error {
	labels, _ := json.Marshal(b.labels)
	if first {
		_, err := d.pool.Exec(ctx, `INSERT INTO hyper2kvm_host (name, heartbeat_at, labels, busy, max_workers, queue) VALUES ($1, now(), $2, $3, $4, $5)
ON CONFLICT (name) DO UPDATE SET heartbeat_at = now(), labels = excluded.labels, busy = excluded.busy, max_workers = excluded.max_workers, queue = excluded.queue`,
			d.host, string(labels), b.busy, b.max, b.queue)
		return err
	}
	tag, err := d.pool.Exec(ctx, `UPDATE hyper2kvm_host SET heartbeat_at = now(), labels = $2, busy = $3, max_workers = $4, queue = $5 WHERE name = $1`,
		d.host, string(labels), b.busy, b.max, b.queue)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("host %s %w", d.host, errLeaseLost)
	}
	return nil
}

// takenJob is a job of a host that died, now this host's.
type takenJob struct {
	rowid int64
	r     *record
	from  string
}

// takeOver takes the unfinished jobs of every host whose heartbeat is
// older than lease. The DELETE of the dead host's row decides, in one
// transaction, which live host takes them: exactly one does.
func (d *jobDB) takeOver(ctx context.Context, lease time.Duration) ([]takenJob, error) {
	tx, err := d.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(ctx)
	rows, err := tx.Query(ctx, `DELETE FROM hyper2kvm_host WHERE name <> $1 AND heartbeat_at < now() - make_interval(secs => $2) RETURNING name`, d.host, lease.Seconds())
	if err != nil {
		return nil, err
	}
	var dead []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, err
		}
		dead = append(dead, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []takenJob
	for _, host := range dead {
		rows, err := tx.Query(ctx, `UPDATE river_job SET metadata = jsonb_set(metadata, '{host}', to_jsonb($1::text))
WHERE kind = $2 AND metadata ->> 'host' = $3 AND state IN ('available', 'running') RETURNING id, args::text`, d.host, jobKind, host)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var rowid int64
			var args []byte
			if err := rows.Scan(&rowid, &args); err != nil {
				rows.Close()
				return nil, err
			}
			r := &record{}
			if err := json.Unmarshal(args, r); err != nil {
				rows.Close()
				return nil, fmt.Errorf("job row %d: %w", rowid, err)
			}
			out = append(out, takenJob{rowid: rowid, r: r, from: host})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, err
	}
	return out, nil
}

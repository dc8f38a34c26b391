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
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
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
type jobDB struct {
	db     *sql.DB
	client *river.Client[*sql.Tx]
	lock   *os.File // held while migrating and importing
}

// openJobDB opens the store named by rawURL, brings River's schema and
// the agent's table up to date (under a lock, so two agents starting at
// once do not migrate twice) and returns it with the lock still held:
// the caller imports the old files under it, then calls unlock.
func openJobDB(ctx context.Context, rawURL string) (*jobDB, error) {
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
	d := &jobDB{lock: lock}
	if err := d.open(ctx, path); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
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
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS hyper2kvm_claim (name TEXT PRIMARY KEY, data TEXT NOT NULL);
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
	case u.Scheme == "postgres" || u.Scheme == "postgresql":
		return "", fmt.Errorf("store.url %q: a PostgreSQL store is not supported by this agent yet; use sqlite:///var/lib/hyper2kvm/jobs.db", rawURL)
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
}

func (d *jobDB) close() {
	d.unlock()
	if d.db != nil {
		d.db.Close()
	}
}

// meta reads a value of hyper2kvm_meta ("" when unset).
func (d *jobDB) meta(ctx context.Context, key string) (string, error) {
	var v string
	err := d.db.QueryRowContext(ctx, `SELECT value FROM hyper2kvm_meta WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return v, err
}

// load reads every job and claim into a new state.
func (d *jobDB) load(ctx context.Context) (*state, error) {
	s := newState()
	s.db = d
	rows, err := d.db.QueryContext(ctx, `SELECT id, json(args) FROM river_job WHERE kind = ?`, jobKind)
	if err != nil {
		return nil, fmt.Errorf("cannot read the job store: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var rowid int64
		var args []byte
		if err := rows.Scan(&rowid, &args); err != nil {
			return nil, fmt.Errorf("cannot read the job store: %w", err)
		}
		r := &record{}
		if err := json.Unmarshal(args, r); err != nil || r.ID == "" {
			return nil, fmt.Errorf("cannot read job row %d of the job store: %v", rowid, err)
		}
		s.Jobs[r.ID] = r
		s.rows[r.ID] = rowid
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot read the job store: %w", err)
	}
	crows, err := d.db.QueryContext(ctx, `SELECT data FROM hyper2kvm_claim`)
	if err != nil {
		return nil, fmt.Errorf("cannot read the job store's claims: %w", err)
	}
	defer crows.Close()
	for crows.Next() {
		var data []byte
		if err := crows.Scan(&data); err != nil {
			return nil, fmt.Errorf("cannot read the job store's claims: %w", err)
		}
		c := &claim{}
		if err := json.Unmarshal(data, c); err != nil || c.Name == "" {
			return nil, fmt.Errorf("cannot read a claim of the job store: %v", err)
		}
		s.Claims[c.Name] = c
	}
	if err := crows.Err(); err != nil {
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
	insertedIDs []int64 // filled in: the rows of insert, in order
}

// write commits b: all of it or nothing.
func (d *jobDB) write(ctx context.Context, b *batch) error {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("cannot save job store: %w", err)
	}
	defer tx.Rollback()
	if len(b.insert) > 0 {
		params := make([]river.InsertManyParams, len(b.insert))
		for i, r := range b.insert {
			params[i] = river.InsertManyParams{Args: jobArgs{r}, InsertOpts: insertOpts(r)}
		}
		res, err := d.client.InsertManyTx(ctx, tx, params)
		if err != nil {
			return fmt.Errorf("cannot save job store: inserting %d jobs: %w", len(b.insert), err)
		}
		b.insertedIDs = b.insertedIDs[:0]
		for _, x := range res {
			b.insertedIDs = append(b.insertedIDs, x.Job.ID)
		}
		// River inserts a job as available or scheduled; the rest of
		// what the record says goes in as for any other change.
		for i, r := range b.insert {
			if r.State == jobs.Pending && r.Attempt == 0 {
				continue // as River inserted it
			}
			if err := updateRow(ctx, tx, b.insertedIDs[i], r); err != nil {
				return err
			}
		}
	}
	for _, r := range b.update {
		if err := updateRow(ctx, tx, b.rows[r.ID], r); err != nil {
			return err
		}
	}
	for _, id := range b.deleteJobs {
		if _, err := tx.ExecContext(ctx, `DELETE FROM river_job WHERE id = ?`, id); err != nil {
			return fmt.Errorf("cannot save job store: removing a job: %w", err)
		}
	}
	for _, c := range b.putClaims {
		data, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("cannot encode claim %s: %w", c.Name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO hyper2kvm_claim (name, data) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET data = excluded.data`, c.Name, string(data)); err != nil {
			return fmt.Errorf("cannot save job store: claim %s: %w", c.Name, err)
		}
	}
	for _, name := range b.claimsGone {
		if _, err := tx.ExecContext(ctx, `DELETE FROM hyper2kvm_claim WHERE name = ?`, name); err != nil {
			return fmt.Errorf("cannot save job store: claim %s: %w", name, err)
		}
	}
	if b.metaKey != "" {
		if _, err := tx.ExecContext(ctx, `INSERT INTO hyper2kvm_meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`, b.metaKey, b.metaValue); err != nil {
			return fmt.Errorf("cannot save job store: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("cannot save job store: %w", err)
	}
	return nil
}

// insertOpts are River's columns for a new job.
func insertOpts(r *record) *river.InsertOpts {
	return &river.InsertOpts{
		Queue:       jobQueue,
		MaxAttempts: maxAttempts,
		Priority:    riverPriority(r.Priority),
		Metadata:    []byte(fmt.Sprintf(`{"job_id":%q}`, r.ID)),
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

// updateRow writes r over its row: the args, and the River columns the
// record decides (state, attempts, when it started and ended).
func updateRow(ctx context.Context, tx *sql.Tx, rowid int64, r *record) error {
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
		finalized = sqliteTime(at)
	}
	if !r.StartedAt.IsZero() {
		attempted = sqliteTime(r.StartedAt)
	}
	_, err = tx.ExecContext(ctx, `UPDATE river_job SET args = jsonb(?), state = ?, attempt = ?, attempted_at = ?, finalized_at = ?, priority = ? WHERE id = ?`,
		string(args), riverState(r.State), r.Attempt, attempted, finalized, riverPriority(r.Priority), rowid)
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
func openStore(storeURL, stateDir string, log *Logger) (*state, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	d, err := openJobDB(ctx, storeURL)
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

// Package agent is the hyper2kvm daemon: it watches the drop folder, claims
// manifests, keeps the job store, runs each job as a transient systemd unit,
// follows the units over D-Bus and settles every manifest into processed/ or
// failed/. dbusapi exports it on the bus; it never imports the engine.
//
// The job store is River (github.com/riverqueue/river) rather than files
// of the agent's own: claiming a job exactly once, priorities, scheduled
// times, attempts with backoff, a lease on running jobs and leader
// election are what a job queue already does, and River does them on
// SQLite for one host (riversqlite on modernc.org/sqlite, no cgo) and on
// PostgreSQL for a fleet with the same code. The agent still starts each
// job as its own transient systemd unit and follows it there; River keeps
// the rows (jobdb.go, store.go). docs/AGENT.md says where River on SQLite
// falls short and what the agent does instead.
package agent

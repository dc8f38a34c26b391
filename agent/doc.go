// Package agent is the hyper2kvm daemon: it watches the drop folder, claims
// manifests, keeps the job store, runs each job as a transient systemd unit,
// follows the units over D-Bus and settles every manifest into processed/ or
// failed/. dbusapi exports it on the bus; it never imports the engine.
package agent

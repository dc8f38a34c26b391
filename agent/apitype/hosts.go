package apitype

import "time"

// Host is one host of a fleet as its heartbeat says (ListHosts): its
// labels, how many job units it runs of how many it may, its queue
// control state and when it last beat. On one host (SQLite) the list is
// this host alone.
type Host struct {
	Name       string            `json:"name"`
	Labels     map[string]string `json:"labels,omitempty"`
	Busy       int               `json:"busy"`
	MaxWorkers int               `json:"max_workers"`
	Queue      string            `json:"queue"`
	// HeartbeatAt is its last heartbeat; Alive is false once it is older
	// than the lease (the host is taken for dead, its jobs run elsewhere).
	HeartbeatAt time.Time `json:"heartbeat_at"`
	Alive       bool      `json:"alive"`
}

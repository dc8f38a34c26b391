package agent

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/queue"
)

// RuntimeDir is the agent's runtime directory, RuntimeDirectory= of
// hyper2kvmd.service with RuntimeDirectoryPreserve=yes: kept while the
// machine runs, however often the agent stops and starts, and gone after
// every boot, because /run is a tmpfs made at boot on hosts and in
// containers alike.
const RuntimeDir = "/run/hyper2kvm/agent"

// BootMarker is the file in RuntimeDir holding the id of this boot.
const BootMarker = "boot-id"

// readBootID identifies this boot of the machine or container, so that
// recovery tells a job whose worker died in an earlier boot (run it again)
// from one whose worker died in this one (a failure). The kernel's
// boot_id is not enough: a container rebooting on a running host keeps
// it, unless its manager fakes one (systemd-nspawn does, others do not).
// So the id is a random marker in the runtime directory, made when it is
// missing: a missing marker is a new boot.
func readBootID() string {
	dir := RuntimeDir
	if d, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":"); d != "" {
		dir = d // as systemd set it up for the unit
	}
	return bootIDIn(dir)
}

func bootIDIn(dir string) string {
	p := filepath.Join(dir, BootMarker)
	if b, err := os.ReadFile(p); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id
		}
	}
	var b [16]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	if os.MkdirAll(dir, 0o755) == nil && queue.WriteFileAtomic(p, []byte(id+"\n"), 0o644) == nil {
		return id
	}
	// No place for a marker (the agent runs outside its unit): the
	// kernel's boot id, right on a host.
	k, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(k))
}

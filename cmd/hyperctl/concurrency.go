package main

import (
	"encoding/json"
	"fmt"

	"go.yaml.in/yaml/v3"
)

// withConcurrency is the batch manifest data (JSON or YAML, already
// parsed and valid) with its "concurrency" set to n, as JSON: submit -j N
// says how many of the batch's VMs the agent runs at once.
func withConcurrency(data []byte, n int) ([]byte, error) {
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("cannot set the batch's concurrency: %w", err)
	}
	if b, _ := m["batch"].(bool); !b {
		return nil, usageError("-j %d: the manifest is not a batch (\"batch\": true with \"vms\"); a single VM runs as one job", n)
	}
	m["concurrency"] = n
	out, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("cannot set the batch's concurrency: %w", err)
	}
	return out, nil
}

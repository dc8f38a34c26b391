package main

import "github.com/hyper2kvm/hyper2kvm/agent/config"

// diskParallelism is limits.disk_parallelism from the agent's
// configuration file; 0 (the engine's default, one disk per CPU the
// process may use) when it cannot be read.
func diskParallelism() int {
	cfg, err := config.Load(config.DefaultPath)
	if err != nil {
		return 0
	}
	return max(cfg.Limits.DiskParallelism, 0)
}

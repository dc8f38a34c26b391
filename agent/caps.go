package agent

import (
	"fmt"

	"github.com/hyper2kvm/hyper2kvm/agent/config"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

// checkCaps refuses a manifest of a submitter other than root (uid > 0)
// whose resources ask for more than limits.user_max allows: the polkit
// rule lets any member of group hyper2kvm queue jobs, and a job unit with
// memory_max: infinity or tasks_max: 100000 would let them take the
// machine. Root's manifests (and jobs of no known user) are not capped.
// physical is the machine's RAM, for memory_max percentages.
func checkCaps(m *manifest.Manifest, uid int64, caps config.UserMax, physical uint64) []string {
	if uid <= 0 || m == nil {
		return nil
	}
	var problems []string
	check := func(path string, r *manifest.Resources) {
		if r == nil {
			return
		}
		over := func(field, asked, limit string) {
			problems = append(problems, fmt.Sprintf("%s.%s: %s is more than a user other than root may ask for (limits.user_max.%s: %s in agent.yaml); ask for at most %s or have root submit it",
				path, field, asked, field, limit, limit))
		}
		if max, err := config.ParseSize(caps.MemoryMax); err == nil && max > 0 && r.MemoryMax != "" {
			if b, ok := r.MemoryMaxBytes(physical); ok && b > max {
				over("memory_max", fmt.Sprintf("%q", r.MemoryMax), caps.MemoryMax)
			}
		}
		if pct, err := config.ParsePercent(caps.CPUQuota); err == nil && pct > 0 && r.CPUQuota != "" {
			if us, ok := r.CPUQuotaPerSecUSec(); ok && us > uint64(pct)*10000 {
				over("cpu_quota", fmt.Sprintf("%q", r.CPUQuota), caps.CPUQuota)
			}
		}
		if caps.TasksMax > 0 && r.TasksMax > caps.TasksMax {
			over("tasks_max", fmt.Sprint(r.TasksMax), fmt.Sprint(caps.TasksMax))
		}
		if caps.RuntimeMaxSec > 0 && r.RuntimeMaxSec > caps.RuntimeMaxSec {
			over("runtime_max_sec", fmt.Sprint(r.RuntimeMaxSec), fmt.Sprint(caps.RuntimeMaxSec))
		}
	}
	check("resources", m.Resources)
	for i := range m.VMs {
		check(fmt.Sprintf("vms[%d].resources", i), m.VMs[i].Resources)
	}
	return problems
}

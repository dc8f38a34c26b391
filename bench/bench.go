// Package bench measures hyper2kvm against its baselines, side by side in
// one run: the benchmarks are its _test.go files (`make bench` runs them
// through the scripts in this directory; `go test` alone runs none of them).
// This file holds what they share: percentiles, the machine's facts and
// the JSON results written under bench/results/.
package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Stats summarises latencies in milliseconds.
type Stats struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
}

// Summarise computes Stats of ds (nearest-rank percentiles).
func Summarise(ds []time.Duration) Stats {
	if len(ds) == 0 {
		return Stats{}
	}
	ms := make([]float64, len(ds))
	sum := 0.0
	for i, d := range ds {
		ms[i] = float64(d) / float64(time.Millisecond)
		sum += ms[i]
	}
	sort.Float64s(ms)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(ms)))) - 1
		return round(ms[max(0, min(i, len(ms)-1))])
	}
	return Stats{N: len(ms), P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), Max: round(ms[len(ms)-1]), Mean: round(sum / float64(len(ms)))}
}

func round(f float64) float64 { return math.Round(f*1000) / 1000 }

// Machine is what a result depends on besides the code.
type Machine struct {
	Cores       int     `json:"cores"`
	CPU         string  `json:"cpu"`
	MemoryMiB   int     `json:"memory_mib"`
	Kernel      string  `json:"kernel"`
	Qemu        string  `json:"qemu"`
	Accelerator string  `json:"accelerator"` // kvm | tcg
	Load1       float64 `json:"load1_at_start"`
	Systemd     string  `json:"systemd"`
	Cgroup      string  `json:"cgroup"` // v1 | v2 | hybrid
}

// MachineFacts reads the machine's facts.
func MachineFacts() Machine {
	m := Machine{Cores: runtime.NumCPU(), Accelerator: "tcg"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		fmt.Sscanf(string(b), "MemTotal: %d kB", &kb)
		m.MemoryMiB = kb >> 10
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Sscanf(string(b), "%f", &m.Load1)
	}
	if out, err := exec.Command("uname", "-r").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("qemu-img", "--version").Output(); err == nil {
		m.Qemu = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	if out, err := exec.Command("systemctl", "--version").Output(); err == nil {
		m.Systemd = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	m.Cgroup = "v1"
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		m.Cgroup = "v2"
	} else if _, err := os.Stat("/sys/fs/cgroup/unified"); err == nil {
		m.Cgroup = "hybrid"
	}
	if kvmUsable() {
		m.Accelerator = "kvm"
	}
	return m
}

// kvmUsable opens /dev/kvm read-write, which is what qemu needs.
func kvmUsable() bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// Result is one benchmark's JSON file.
type Result struct {
	Benchmark string    `json:"benchmark"`
	Time      time.Time `json:"time"`
	Commit    string    `json:"commit"`
	Machine   Machine   `json:"machine"`
	Config    any       `json:"config,omitempty"`
	Cases     any       `json:"cases"`
	Notes     []string  `json:"notes,omitempty"`
}

// ResultsDir is bench/results of the checkout.
func ResultsDir() string {
	dir, _ := os.Getwd() // go test runs in the package directory: bench/
	return filepath.Join(dir, "results")
}

// Write stores r as results/<benchmark>-<UTC stamp>.json and returns the path.
func Write(r Result) (string, error) {
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		r.Commit = strings.TrimSpace(string(out))
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", fmt.Errorf("cannot encode result: %w", err)
	}
	if err := os.MkdirAll(ResultsDir(), 0o755); err != nil {
		return "", fmt.Errorf("cannot write result: %w", err)
	}
	p := filepath.Join(ResultsDir(), fmt.Sprintf("%s-%s.json", r.Benchmark, r.Time.UTC().Format("20060102T150405Z")))
	if err := os.WriteFile(p, append(data, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("cannot write result: %w", err)
	}
	return p, nil
}

// Table prints rows under a title, columns padded to their widest cell.
func Table(title string, rows [][]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s\n", title)
	width := map[int]int{}
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len(c))
		}
	}
	for n, r := range rows {
		for i, c := range r {
			if i == 0 {
				fmt.Fprintf(&b, "%-*s", width[i], c)
			} else {
				fmt.Fprintf(&b, "  %*s", width[i], c)
			}
		}
		b.WriteString("\n")
		if n == 0 {
			total := 0
			for i := range r {
				total += width[i] + 2
			}
			b.WriteString(strings.Repeat("-", total-2) + "\n")
		}
	}
	return b.String()
}

// Ms formats milliseconds.
func Ms(f float64) string { return fmt.Sprintf("%.1f ms", f) }

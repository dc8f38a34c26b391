package apitype

import "time"

// Schedule is one file of /etc/hyper2kvm/schedules.d as the agent sees it
// (ListSchedules, hyperctl schedules).
type Schedule struct {
	Name     string `json:"name"`
	File     string `json:"file"`
	Cron     string `json:"cron"`
	Manifest string `json:"manifest,omitempty"`
	Template string `json:"template,omitempty"`
	// Next is its next firing; zero for a schedule that does not parse.
	Next time.Time `json:"next_run,omitzero"`
	// LastRun is the firing last run (on any host of a fleet).
	LastRun time.Time `json:"last_run,omitzero"`
	// LastJobs are the ids of the jobs the last firing submitted.
	LastJobs []string `json:"last_jobs,omitempty"`
	// Error is why the last firing submitted nothing, or why the file
	// does not parse (naming the file and the field).
	Error string `json:"error,omitempty"`
}

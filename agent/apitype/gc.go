package apitype

// GCItem is one file or directory housekeeping removes (or, in a dry
// run, would remove): GarbageCollect's answer, hyperctl gc's lines.
type GCItem struct {
	Path   string `json:"path"`
	Kind   string `json:"kind"`   // settled-file | dropped-image | output-dir | empty-day
	Reason string `json:"reason"` // which retention rule, and the age
	Size   int64  `json:"size"`   // bytes (a directory: everything below it)
	// Deleted is set when it was removed; Error says why it could not be.
	Deleted bool   `json:"deleted,omitempty"`
	Error   string `json:"error,omitempty"`
}

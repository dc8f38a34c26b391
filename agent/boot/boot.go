// Package boot boots a converted image under qemu-system on virtio disk and
// network with a serial console, and reports whether the guest reached its
// login prompt. It uses KVM when a probe shows KVM works and TCG otherwise.
package boot

import (
	"context"
	"errors"
	"time"
)

// Options describes one boot test.
type Options struct {
	Image    string
	Format   string
	Firmware string        // bios | efi
	Timeout  time.Duration // default 300s
	Marker   string        // default "login:"
	Console  string        // file to keep the serial console log in, optional
}

// Result is what a boot test saw.
type Result struct {
	Booted      bool    `json:"booted"`
	Accelerator string  `json:"accelerator"` // kvm | tcg
	Seconds     float64 `json:"seconds"`
	Marker      string  `json:"marker"`
	ConsoleTail string  `json:"console_tail,omitempty"`
}

// Test boots o.Image and waits for o.Marker on the serial console.
func Test(ctx context.Context, o Options) (*Result, error) {
	return nil, errors.New("boot: not implemented yet")
}

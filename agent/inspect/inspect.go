// Package inspect looks inside a disk image: partition table, filesystems,
// guest OS, kernels, boot loader, fstab, network style and VMware tools.
package inspect

import (
	"context"
	"errors"

	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// Image is a disk image qemu can open: a path (or a qemu "json:" spec) and its format.
type Image struct {
	Path   string
	Format string
}

// Guest inspects img through the named guest-access backend (native | guestfs).
func Guest(ctx context.Context, img Image, backend string, detectOS bool) (*report.Guest, error) {
	return nil, errors.New("inspect: not implemented yet")
}

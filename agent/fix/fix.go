// Package fix adapts a Linux guest to KVM: stable ids in fstab and crypttab,
// root= in the boot loader, virtio drivers in the initramfs, network
// configuration and VMware tools. It works only on a writable overlay or the
// converted output, never on the source.
package fix

import (
	"context"
	"errors"

	"github.com/hyper2kvm/hyper2kvm/agent/inspect"
	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// Apply applies spec to the writable image img, whose inspection is g, through
// the named backend, and returns every change made.
func Apply(ctx context.Context, img inspect.Image, backend string, spec *manifest.Fix, g *report.Guest) ([]report.Change, error) {
	return nil, errors.New("fix: not implemented yet")
}

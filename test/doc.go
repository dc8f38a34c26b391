// Package test holds hyper2kvm's end-to-end tests: real qemu-img and
// qemu-system, a real systemd with dbus-daemon, polkitd and journald in a
// throwaway box (test/box), and headless Chromium. `make test-e2e` runs them
// as root; docs/TESTING.md says how they work.
package test

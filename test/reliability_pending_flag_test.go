//go:build reliability_pending

package test

// relPending: see reliability_flag_test.go.
const relPending = true

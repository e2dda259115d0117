//go:build !linux

package pgtest

import "syscall"

// setDeathSignal has no portable equivalent outside Linux; t.Cleanup stops
// the server.
func setDeathSignal(*syscall.SysProcAttr) {}

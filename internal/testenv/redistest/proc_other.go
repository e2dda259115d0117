//go:build !linux

package redistest

import "os/exec"

// setDeathSignal has no portable equivalent outside Linux; t.Cleanup still
// stops the server on a normal test exit.
func setDeathSignal(*exec.Cmd) {}

package pgtest

import "syscall"

// setDeathSignal makes the kernel kill the server if the test binary dies
// without running its cleanups (a panic on -timeout, a SIGKILL), so no
// orphaned servers pile up on CI machines.
func setDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }

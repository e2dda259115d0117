package pipelinetest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a program the test runs as a child process: its own pid, its own sockets, and it can be
// killed with SIGKILL as a crash would kill it. Its stdout and stderr are kept (Output).
type Process struct {
	t      testing.TB
	name   string
	cmd    *exec.Cmd
	out    *SyncBuffer
	exited chan struct{}
	mu     sync.Mutex
	err    error // from Wait, once exited
}

// StartProcess runs bin with args and an environment made of env plus PATH, HOME and TMPDIR (nothing
// else of the test's own environment leaks in). The process is killed by t.Cleanup if still running, and
// the test fails if its output reports a data race.
func StartProcess(t testing.TB, name, bin string, args []string, env map[string]string) *Process {
	t.Helper()
	p := &Process{t: t, name: name, out: &SyncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.CommandContext(context.Background(), bin, args...) //nolint:gosec // runs the program the test names, as a test helper must
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "GORACE"} {
		if _, set := env[k]; !set && os.Getenv(k) != "" {
			p.cmd.Env = append(p.cmd.Env, k+"="+os.Getenv(k))
		}
	}
	for _, k := range keys {
		p.cmd.Env = append(p.cmd.Env, k+"="+env[k])
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	setDeathSignal(p.cmd)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		err := p.cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.Kill()
		if strings.Contains(p.Output(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race:\n%s", name, p.Output())
		}
	})
	return p
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Output is everything the process wrote to stdout and stderr so far.
func (p *Process) Output() string { return p.out.String() }

// Exited is closed once the process has exited and been reaped.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err is the process's exit status once it has exited.
func (p *Process) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Kill sends SIGKILL, as a crash or the OOM killer would, and waits until the process is reaped.
func (p *Process) Kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Stop sends SIGTERM, as Kubernetes does, and waits up to timeout for a clean exit; it returns the exit
// status (nil for exit 0) or fails the test if the process does not exit in time.
func (p *Process) Stop(timeout time.Duration) error {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.Err()
	case <-time.After(timeout):
		p.Kill()
		p.t.Fatalf("%s did not exit within %s of SIGTERM", p.name, timeout)
		return nil
	}
}

// WaitLog waits until the process has logged a JSON line whose "message" is msg and returns that line's
// fields. It fails the test if the process exits first or timeout passes.
func (p *Process) WaitLog(timeout time.Duration, msg string) map[string]any {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if f := p.logLine(msg); f != nil {
			return f
		}
		select {
		case <-p.exited:
			if f := p.logLine(msg); f != nil {
				return f
			}
			p.t.Fatalf("%s exited (%v) before logging %q:\n%s", p.name, p.Err(), msg, p.Output())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not log %q within %s:\n%s", p.name, msg, timeout, p.Output())
		}
	}
}

func (p *Process) logLine(msg string) map[string]any {
	sc := bufio.NewScanner(strings.NewReader(p.Output()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var f map[string]any
		if json.Unmarshal(sc.Bytes(), &f) == nil && f["message"] == msg {
			return f
		}
	}
	return nil
}

// BuildPrograms builds the main packages pkgs (import paths) into dir; each binary is named after its
// package's last element. With the race detector on in the test, the programs are built with -race too,
// which also reuses the test's compiled dependencies.
func BuildPrograms(dir string, pkgs ...string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("building the programs needs the go command on PATH: %w", err)
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(context.Background(), gobin, append(args, pkgs...)...) //nolint:gosec // go build of the packages the test names
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(cmd.Args[1:], " "), err, out)
	}
	return nil
}

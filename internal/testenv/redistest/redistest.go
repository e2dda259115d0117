// Package redistest gives a test a real Redis: a redis-server it starts on a
// free loopback port, or the server named by REDIS_URL when that is set, so
// tests exercise Redis itself rather than a mock.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// EnvURL names the variable that points tests at an existing server instead
// of a local redis-server. Start flushes that server's database.
const EnvURL = "REDIS_URL"

const (
	// waitTimeout bounds every wait on a condition (PING answered, process
	// reaped, port refused); it is generous for loaded CI machines.
	waitTimeout = 10 * time.Second
	// pollInterval is how often a condition is checked while waiting on it.
	pollInterval = 5 * time.Millisecond
	// startAttempts covers the window between finding a free port and
	// redis-server binding it, in which another process may take the port.
	startAttempts = 5
)

// Server is a Redis server owned by one test. Its methods must be called from
// the test's goroutine, as they may call t.Fatal.
type Server struct {
	t        testing.TB
	external bool // from REDIS_URL: cannot be stopped or restarted

	mu   sync.Mutex
	url  string
	addr string

	// Local redis-server only.
	bin    string
	dir    string
	port   int
	args   []string      // extra command-line arguments (StartArgs), kept across Restart
	cmd    *exec.Cmd     // nil while stopped
	exited chan struct{} // closed once cmd has been reaped
	// password is the server's requirepass, which the readiness check authenticates with.
	password string
	// conf, for a sentinel, writes its configuration file for a port and returns its path: a sentinel
	// reads its settings from a file it may rewrite, not from the command line alone.
	conf func(port int) (string, error)
}

// Start returns a Redis server for t and registers t.Cleanup to stop it.
//
// Without REDIS_URL it runs redis-server from PATH on a free 127.0.0.1 port,
// with persistence off and its working directory in t.TempDir(), and returns
// once the server answers PING. With REDIS_URL it uses that server and
// flushes the URL's database first; tests sharing such a server must not run
// in parallel, and Stop and Restart fail the test.
//
// If neither is available Start fails the test rather than skipping it, so CI
// cannot pass by running nothing.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, nil)
}

// StartArgs is Start for a redis-server run with extra command-line
// arguments, e.g. "--cluster-enabled", "yes". They configure the server, so
// an existing server from REDIS_URL cannot stand in: the test fails.
func StartArgs(t testing.TB, args ...string) *Server {
	t.Helper()
	if os.Getenv(EnvURL) != "" {
		t.Fatalf("redistest: this test starts redis-server with %v, which a server from %s cannot honour; "+
			"unset %s (and install redis-server)", args, EnvURL, EnvURL)
	}
	return start(t, args)
}

func start(t testing.TB, args []string) *Server {
	t.Helper()
	if raw := os.Getenv(EnvURL); raw != "" {
		return startExternal(t, raw)
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redistest: redis-server is not on PATH and %s is not set: "+
			"install redis-server (apt-get install redis-server, brew install redis) "+
			"or set %s to a server whose database the tests may flush", EnvURL, EnvURL)
	}
	return startLocal(t, &Server{t: t, bin: bin, dir: t.TempDir(), args: args})
}

// startLocal starts s, a local server whose bin, dir and arguments are set, on a free port.
func startLocal(t testing.TB, s *Server) *Server {
	t.Helper()
	// Registered after t.TempDir, so it runs before the directory is removed
	// and the log can still be read.
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("redistest: cleanup: %v", err)
		}
		if t.Failed() {
			t.Logf("redistest: %s output:\n%s", filepath.Base(s.bin), s.output())
		}
	})
	var errs []error
	for range startAttempts {
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: find a free port: %v", err)
		}
		err = s.start(port)
		if err == nil {
			return s
		}
		errs = append(errs, err)
	}
	t.Fatalf("redistest: start %s (%d attempts): %v", filepath.Base(s.bin), startAttempts, errors.Join(errs...))
	return nil
}

func startExternal(t testing.TB, raw string) *Server {
	t.Helper()
	opt, err := redis.ParseURL(raw)
	if err != nil {
		t.Fatalf("redistest: %s: %v", EnvURL, withoutURL(err))
	}
	c := redis.NewClient(opt)
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := c.FlushDB(ctx).Err(); err != nil {
		t.Fatalf("redistest: flush database %d at %s (from %s): %v", opt.DB, opt.Addr, EnvURL, err)
	}
	return &Server{t: t, external: true, url: raw, addr: opt.Addr}
}

// Addr returns the server's host:port.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// URL returns a redis:// URL for the server, suitable for redis.ParseURL.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// Stop kills the server, as a crash would, and returns once its port refuses
// connections. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.t.Helper()
	s.mustControl("Stop")
	if err := s.stop(); err != nil {
		s.t.Fatalf("redistest: Stop: %v", err)
	}
}

// Restart stops the server if it runs and starts a fresh one, with an empty
// dataset, on the same port, returning once it answers PING.
func (s *Server) Restart() {
	s.t.Helper()
	s.mustControl("Restart")
	if err := s.stop(); err != nil {
		s.t.Fatalf("redistest: Restart: %v", err)
	}
	if err := s.start(s.port); err != nil {
		s.t.Fatalf("redistest: Restart on port %d: %v", s.port, err)
	}
}

func (s *Server) mustControl(op string) {
	s.t.Helper()
	if s.external {
		s.t.Fatalf("redistest: %s needs a redis-server started by the test, but this one comes from %s; "+
			"unset %s (and install redis-server) to run tests that stop or restart Redis", op, EnvURL, EnvURL)
	}
}

func (s *Server) logPath() string { return filepath.Join(s.dir, "redis-server.log") }

// start runs redis-server on port and waits until it answers PING.
func (s *Server) start(port int) error {
	logf, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer func() { _ = logf.Close() }() // the child keeps its own descriptor
	args := []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
	}
	if s.conf != nil {
		path, err := s.conf(port)
		if err != nil {
			return err
		}
		args = []string{path, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", s.dir}
	}
	cmd := exec.Command(s.bin, append(args, s.args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // a killed server's exit status is expected, not news
		close(exited)
	}()

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s.mu.Lock()
	s.cmd, s.exited, s.port = cmd, exited, port
	s.addr, s.url = addr, "redis://"+addr
	s.mu.Unlock()

	if err := waitReady(addr, s.password, cmd.Process.Pid, exited); err != nil {
		_ = s.stop()
		return err
	}
	return nil
}

// stop kills the server, waits for it to be reaped and for its port to
// refuse connections.
func (s *Server) stop() error {
	s.mu.Lock()
	cmd, exited, addr := s.cmd, s.exited, s.addr
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Kill() // fails only if it already exited, which is the goal
	select {
	case <-exited:
	case <-time.After(waitTimeout):
		return fmt.Errorf("redis-server (pid %d) not reaped %v after SIGKILL", cmd.Process.Pid, waitTimeout)
	}
	return waitFor(waitTimeout, nil, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return nil // refused: nothing listens any more
		}
		_ = c.Close()
		return fmt.Errorf("%s still accepts connections", addr)
	})
}

func (s *Server) output() string {
	b, err := os.ReadFile(s.logPath())
	if err != nil {
		return fmt.Sprintf("(no output: %v)", err)
	}
	return string(b)
}

// waitReady waits until the redis-server with the given pid answers PING on
// addr. It checks the pid because, if another process took the port first,
// our server exits while the other one may well answer.
func waitReady(addr, password string, pid int, exited <-chan struct{}) error {
	return waitFor(waitTimeout, exited, func() error { return ping(addr, password, pid) })
}

// waitFor polls cond until it returns nil, gone is closed, or timeout passes.
func waitFor(timeout time.Duration, gone <-chan struct{}, cond func() error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %v: %w", timeout, err)
		}
		select {
		case <-gone:
			return fmt.Errorf("redis-server exited: %w", err)
		case <-tick.C:
		}
	}
}

// ping sends PING and INFO server over RESP (after AUTH when password is set)
// and checks the answers come from the process pid.
func ping(addr, password string, pid int) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	if password != "" {
		if _, err := fmt.Fprintf(c, "*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n", len(password), password); err != nil {
			return err
		}
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if line != "+OK\r\n" {
			return fmt.Errorf("AUTH answered %q", strings.TrimSpace(line))
		}
	}
	if _, err := io.WriteString(c, "*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	line, err = r.ReadString('\n')
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "$")))
	if !strings.HasPrefix(line, "$") || err != nil {
		return fmt.Errorf("INFO answered %q", strings.TrimSpace(line))
	}
	info := make([]byte, n)
	if _, err := io.ReadFull(r, info); err != nil {
		return err
	}
	if want := "\nprocess_id:" + strconv.Itoa(pid) + "\r\n"; !strings.Contains(string(info), want) {
		return fmt.Errorf("%s is answered by another process than redis-server pid %d", addr, pid)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// withoutURL drops the URL that url.Parse puts in its errors, since a
// REDIS_URL may carry a password.
func withoutURL(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err
	}
	return err
}

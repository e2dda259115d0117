// Package pgtest gives a test a real PostgreSQL database: a private server it
// starts from the PostgreSQL binaries on a free loopback port, or a fresh
// database on the server named by PG_URL or DATABASE_URL when one is set, so
// tests exercise PostgreSQL itself rather than a mock.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The variables that point tests at an existing server instead of a private
// one, in the order they are read. Start creates a database of its own there
// and drops it afterwards, so the server's other databases are not touched.
const (
	EnvURL         = "PG_URL"
	EnvDatabaseURL = "DATABASE_URL"
)

const (
	// waitTimeout bounds every wait on a condition (connections accepted,
	// process gone); generous for loaded CI machines.
	waitTimeout = 30 * time.Second
	// pollInterval is how often a condition is checked while waiting.
	pollInterval = 20 * time.Millisecond
	// startAttempts covers the window between finding a free port and the
	// server binding it.
	startAttempts = 3
)

// DB is a database owned by one test.
type DB struct {
	url string
}

// URL is a postgres:// URL of the database, for pgx.Connect or
// pgxpool.New.
func (d *DB) URL() string { return d.url }

// Start returns a database of its own for t and registers t.Cleanup to
// remove it.
//
// With PG_URL or DATABASE_URL set, it creates a database with a random name
// on that server (the URL's user needs CREATEDB) and drops it at cleanup.
// Otherwise it runs initdb and postgres from the PostgreSQL binaries (PATH,
// else the newest /usr/lib/postgresql/*/bin, Debian's place) in a temporary
// directory, listening on a free 127.0.0.1 port only, with durability off
// for speed, as an unprivileged user when the test runs as root (postgres
// refuses root), and stops it and removes the directory at cleanup. A
// PostgreSQL already running on the machine is not used.
//
// Without either the test is skipped, except under CI (CI=true), where it
// fails, so that CI cannot pass by running nothing.
func Start(t testing.TB) *DB {
	t.Helper()
	for _, env := range []string{EnvURL, EnvDatabaseURL} {
		if raw := os.Getenv(env); raw != "" {
			return startExternal(t, env, raw)
		}
	}
	bin, err := binDir()
	if err != nil {
		msg := fmt.Sprintf("pgtest: %v; install PostgreSQL (apt-get install postgresql) or set %s", err, EnvURL)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	s, err := newServer(bin)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pgtest: postgres log:\n%s", s.log())
		}
		if err := s.stop(); err != nil {
			t.Errorf("pgtest: cleanup: %v", err)
		}
	})
	var errs []error
	for range startAttempts {
		if err := s.start(); err != nil {
			errs = append(errs, err)
			continue
		}
		return &DB{url: s.url("postgres")}
	}
	t.Fatalf("pgtest: start postgres (%d attempts): %v\n%s", startAttempts, errors.Join(errs...), s.log())
	return nil
}

func startExternal(t testing.TB, env, raw string) *DB {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("pgtest: %s is not a URL", env) // the URL may carry a password: not quoted
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, raw)
	if err != nil {
		t.Fatalf("pgtest: connect to %s (from %s): %v", u.Redacted(), env, err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	name := "pgtest_" + randomHex(6)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database on %s (from %s): %v", u.Redacted(), env, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		conn, err := pgx.Connect(ctx, raw)
		if err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
			return
		}
		defer func() { _ = conn.Close(context.Background()) }()
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	u.Path = "/" + name
	return &DB{url: u.String()}
}

// server is a private postgres under a test's control.
type server struct {
	bin  string // directory of initdb and postgres
	dir  string // data directory and log, removed by stop
	cred *syscall.Credential
	port int
	cmd  *exec.Cmd
	gone chan struct{}
}

// newServer prepares a data directory with initdb.
func newServer(bin string) (*server, error) {
	var cred *syscall.Credential
	base := os.TempDir()
	if os.Geteuid() == 0 {
		var err error
		if cred, err = unprivileged(); err != nil {
			return nil, err
		}
		if !traversable(base) {
			base = "/tmp" // a private TMPDIR of root's would lock the server out of its own directory
		}
	}
	dir, err := os.MkdirTemp(base, "pgtest-")
	if err != nil {
		return nil, err
	}
	s := &server{bin: bin, dir: dir, cred: cred}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	}
	initdb := s.command("initdb", "-D", s.dataDir(), "-U", "postgres", "--auth=trust", "-E", "UTF8",
		"--locale=C", "--no-sync", "--no-instructions")
	if out, err := initdb.CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	return s, nil
}

// traversable reports whether every directory from the root to dir lets
// other users through.
func traversable(dir string) bool {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

func (s *server) dataDir() string { return filepath.Join(s.dir, "data") }
func (s *server) logPath() string { return filepath.Join(s.dir, "postgres.log") }

func (s *server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...) //nolint:gosec // PostgreSQL's own programs, found by binDir
	cmd.Dir = s.dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "TZ=UTC"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	setDeathSignal(cmd.SysProcAttr)
	return cmd
}

// start runs postgres on a free port and waits until it accepts
// connections.
func (s *server) start() error {
	port, err := freePort()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer func() { _ = logf.Close() }() // the child keeps its own descriptor
	cmd := s.command("postgres", "-D", s.dataDir(), "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=50", "-c", "shared_buffers=32MB")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	gone := make(chan struct{})
	go func() {
		_ = cmd.Wait() // a stopped server's exit status is expected, not news
		close(gone)
	}()
	s.cmd, s.gone, s.port = cmd, gone, port

	deadline := time.Now().Add(waitTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, s.url("postgres"))
		cancel()
		if err == nil {
			_ = conn.Close(context.Background())
			return nil
		}
		select {
		case <-gone:
			s.cmd = nil
			return fmt.Errorf("postgres exited before accepting connections on port %d", port)
		case <-time.After(pollInterval):
		}
		if time.Now().After(deadline) {
			_ = s.stop()
			return fmt.Errorf("postgres did not accept connections within %s: %w", waitTimeout, err)
		}
	}
}

func (s *server) url(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

// stop shuts the server down (fast shutdown, then SIGKILL) and removes its
// directory.
func (s *server) stop() error {
	defer func() { _ = os.RemoveAll(s.dir) }()
	if s.cmd == nil {
		return nil
	}
	cmd := s.cmd
	s.cmd = nil
	_ = cmd.Process.Signal(syscall.SIGINT) // PostgreSQL's fast shutdown: disconnect clients, stop
	select {
	case <-s.gone:
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = cmd.Process.Kill()
	select {
	case <-s.gone:
		return nil
	case <-time.After(waitTimeout):
		return fmt.Errorf("postgres (pid %d) not reaped %s after SIGKILL", cmd.Process.Pid, waitTimeout)
	}
}

func (s *server) log() string {
	b, err := os.ReadFile(s.logPath())
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// binDir finds the directory holding initdb and postgres: PATH first, then
// the newest of Debian's /usr/lib/postgresql/<version>/bin.
func binDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("no initdb and postgres on PATH or in /usr/lib/postgresql/*/bin")
}

// version reads the major version from /usr/lib/postgresql/<version>/bin.
func version(dir string) int {
	v, _ := strconv.Atoi(strings.Split(filepath.Base(filepath.Dir(dir)), ".")[0])
	return v
}

// unprivileged returns the user to run PostgreSQL as when the test runs as
// root: "postgres" if the machine has it, else "nobody".
func unprivileged() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, errors.New("running as root and found neither a postgres nor a nobody user to run PostgreSQL as")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand never fails on supported platforms
	return hex.EncodeToString(b)
}

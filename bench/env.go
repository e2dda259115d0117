package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/redis/go-redis/v9"

	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
)

// mchid is the one merchant every system under test is configured for.
const mchid = "1900000100"

// natsServer is a JetStream server on a random loopback port with file storage in a temporary
// directory, the way the receiver runs against a local nats-server in production: either embedded in
// this process (-nats embedded) or, by default, in a child process of its own (-nats process), this
// binary started again in natsChildEnv's mode, so that the server's heap, collections and CPU time are
// not the measured process's.
type natsServer struct {
	srv *server.Server // embedded
	cmd *exec.Cmd      // child process
	url string
	dir string
	// exited is closed when the child has exited.
	exited chan struct{}
}

// The ways the bench runs nats-server.
const (
	natsProcess  = "process"
	natsEmbedded = "embedded"
)

// natsChildEnv, set in a child's environment to its store directory, makes this binary serve
// nats-server and nothing else (see serveNATSChild).
const natsChildEnv = "WXPAY_BENCH_NATS_STORE"

func natsOptions(dir string) *server.Options {
	return &server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  dir,
		NoLog:     true,
		NoSigs:    true,
	}
}

func startNATS(mode string) (*natsServer, error) {
	dir, err := os.MkdirTemp("", "wxpay-bench-nats-")
	if err != nil {
		return nil, err
	}
	if mode == natsProcess {
		n, err := startNATSChild(dir)
		if err != nil {
			_ = os.RemoveAll(dir)
		}
		return n, err
	}
	srv, err := server.NewServer(natsOptions(dir))
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("nats-server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		_ = os.RemoveAll(dir)
		return nil, errors.New("nats-server: not ready after 10s")
	}
	return &natsServer{srv: srv, url: srv.ClientURL(), dir: dir}, nil
}

// startNATSChild starts this binary again as a nats-server storing in dir, and reads the client URL
// the child prints once it accepts connections.
func startNATSChild(dir string) (*natsServer, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("nats-server child: %w", err)
	}
	n := &natsServer{dir: dir, exited: make(chan struct{})}
	//nolint:gosec // self is this very binary; the child mode is chosen by the environment
	n.cmd = exec.CommandContext(context.Background(), self)
	n.cmd.Env = append(os.Environ(), natsChildEnv+"="+dir)
	n.cmd.Stderr = os.Stderr
	out, err := n.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("nats-server child: %w", err)
	}
	setDeathSignal(n.cmd)
	if err := n.cmd.Start(); err != nil {
		return nil, fmt.Errorf("nats-server child: %w", err)
	}
	// One goroutine reads the child's stdout to its end and only then waits for it, as os/exec asks
	// of a StdoutPipe: the first line is the URL, anything after it is discarded.
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		_, _ = io.Copy(io.Discard, out)
		_ = n.cmd.Wait()
		close(n.exited)
	}()
	select {
	case u, ok := <-line:
		if ok && strings.HasPrefix(u, "nats://") {
			n.url = u
			return n, nil
		}
		n.kill()
		return nil, fmt.Errorf("nats-server child: printed %q, not its URL", u)
	case <-time.After(15 * time.Second):
		n.kill()
		return nil, errors.New("nats-server child: not ready after 15s")
	}
}

// serveNATSChild is the child's whole life: serve JetStream from dir, print the client URL on stdout,
// and run until killed (by the parent's Stop or, should the parent die, by the death signal).
func serveNATSChild(dir string) int {
	srv, err := server.NewServer(natsOptions(dir))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: nats-server child:", err)
		return 1
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		fmt.Fprintln(os.Stderr, "bench: nats-server child: not ready after 10s")
		return 1
	}
	fmt.Println(srv.ClientURL())
	srv.WaitForShutdown()
	return 0
}

func (n *natsServer) URL() string { return n.url }

// Pid is the child's process id, or 0 when the server is embedded (its CPU is this process's).
func (n *natsServer) Pid() int {
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

func (n *natsServer) kill() {
	_ = n.cmd.Process.Kill()
	<-n.exited
}

func (n *natsServer) Stop() {
	if n.cmd != nil {
		n.kill()
	} else {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
	}
	_ = os.RemoveAll(n.dir)
}

// redisServer is a redis-server child process on a free loopback port, persistence off, started as
// internal/testenv/redistest does (which needs a testing.TB, so the driver has its own).
type redisServer struct {
	cmd    *exec.Cmd
	dir    string
	addr   string
	exited chan struct{}
}

func startRedis() (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server is not on PATH: install it (apt-get install redis-server, brew install redis)")
	}
	dir, err := os.MkdirTemp("", "wxpay-bench-redis-")
	if err != nil {
		return nil, err
	}
	var errs []error
	for range 5 { // another process may take the free port before redis-server binds it
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		r := &redisServer{dir: dir, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), exited: make(chan struct{})}
		//nolint:gosec // bin is redis-server as found on PATH; the arguments are ours
		r.cmd = exec.CommandContext(context.Background(), bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
		setDeathSignal(r.cmd)
		if err := r.cmd.Start(); err != nil {
			return nil, fmt.Errorf("redis-server: %w", err)
		}
		go func() { _ = r.cmd.Wait(); close(r.exited) }()
		if err = r.waitReady(); err == nil {
			return r, nil
		}
		errs = append(errs, err)
		r.kill()
	}
	_ = os.RemoveAll(dir)
	return nil, fmt.Errorf("redis-server: %w", errors.Join(errs...))
}

func (r *redisServer) waitReady() error {
	c := redis.NewClient(&redis.Options{Addr: r.addr, MaxRetries: -1})
	defer func() { _ = c.Close() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := c.Info(ctx, "server").Result()
		cancel()
		if err == nil {
			if !containsLine(info, "process_id:"+strconv.Itoa(r.cmd.Process.Pid)) {
				return fmt.Errorf("%s is answered by another process", r.addr)
			}
			return nil
		}
		select {
		case <-r.exited:
			return fmt.Errorf("redis-server exited: %w", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server not ready after 10s: %w", err)
		}
	}
}

func (r *redisServer) URL() string { return "redis://" + r.addr }

// Pid is the server's process id, for reading its CPU time.
func (r *redisServer) Pid() int { return r.cmd.Process.Pid }

func (r *redisServer) kill() {
	_ = r.cmd.Process.Kill()
	<-r.exited
}

func (r *redisServer) Stop() {
	r.kill()
	_ = os.RemoveAll(r.dir)
}

func freePort() (int, error) {
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func containsLine(text, line string) bool {
	for len(text) > 0 {
		i := 0
		for i < len(text) && text[i] != '\n' {
			i++
		}
		l := text[:i]
		if len(l) > 0 && l[len(l)-1] == '\r' {
			l = l[:len(l)-1]
		}
		if l == line {
			return true
		}
		if i == len(text) {
			break
		}
		text = text[i+1:]
	}
	return false
}

// account is the receiver's and the consumer's configuration of the simulated merchant: the WeChat Pay
// public key (which signs), the platform certificate and the APIv3 key.
func account(p *wechatsim.Platform) config.Account {
	return config.Account{
		MchID:        p.MchID,
		PublicKeyID:  p.PublicKeyID,
		PublicKey:    &p.Key.PublicKey,
		Certificates: []*x509.Certificate{p.Cert},
		APIv3Key:     config.Secret(p.APIv3Key),
		Origin:       "bench",
	}
}

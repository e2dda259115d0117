package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelOptions shape a Sentinel deployment. Zero values take the defaults.
type SentinelOptions struct {
	// MasterName is the master set the sentinels monitor; default "mymaster".
	MasterName string
	// Replicas of the master; default 1.
	Replicas int
	// Sentinels watching it; default 3, with a quorum of a majority of them.
	Sentinels int
	// Password is every data node's requirepass and masterauth (REDIS_PASSWORD); empty for none.
	Password string
	// SentinelPassword is every sentinel's requirepass (REDIS_SENTINEL_PASSWORD); empty for none.
	SentinelPassword string
	// DownAfter is how long the master must be unreachable before a sentinel considers it down;
	// default 1 s, short enough for a test and long enough not to fail over on a busy CI machine.
	DownAfter time.Duration
}

// Sentinel is a Redis Sentinel deployment owned by one test: a master, its replicas and the sentinels
// watching them, real redis-server and redis-sentinel processes on free loopback ports, stopped by
// t.Cleanup. Its methods must be called from the test's goroutine.
type Sentinel struct {
	t          testing.TB
	o          SentinelOptions
	nodes      []*Server // data nodes; nodes[0] was the first master
	sentinels  []*Server
	MasterName string
}

// StartSentinel starts the deployment and returns once every replica is in sync, every sentinel
// knows every replica and every other sentinel — so that a failover can happen at once — and the
// master is the first node.
//
// It needs redis-sentinel (Debian's redis-sentinel package; the same program as redis-server, which
// it also accepts when started with --sentinel) and fails the test without it, so that CI cannot pass
// by running nothing.
func StartSentinel(t testing.TB, o SentinelOptions) *Sentinel {
	t.Helper()
	if os.Getenv(EnvURL) != "" {
		t.Fatalf("redistest: a Sentinel deployment needs servers the test starts and kills; unset %s", EnvURL)
	}
	if o.MasterName == "" {
		o.MasterName = "mymaster"
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Sentinels == 0 {
		o.Sentinels = 3
	}
	if o.DownAfter == 0 {
		o.DownAfter = time.Second
	}
	server, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redistest: redis-server is not on PATH: install redis-server (apt-get install redis-server)")
	}
	sentinelBin, sentinelArgs := "", []string(nil)
	if bin, err := exec.LookPath("redis-sentinel"); err == nil {
		sentinelBin = bin
	} else {
		// Debian's redis-sentinel is a link to the same program; --sentinel selects the mode.
		sentinelBin, sentinelArgs = server, []string{"--sentinel"}
	}

	s := &Sentinel{t: t, o: o, MasterName: o.MasterName}
	auth := func() []string {
		// Redis waits 5 s by default before a diskless full sync, hoping for more replicas to share it.
		args := []string{"--repl-diskless-sync-delay", "0"}
		if o.Password == "" {
			return args
		}
		return append(args, "--requirepass", o.Password, "--masterauth", o.Password)
	}
	master := startLocal(t, &Server{t: t, bin: server, dir: t.TempDir(), args: auth(), password: o.Password})
	s.nodes = append(s.nodes, master)
	host, port, _ := net.SplitHostPort(master.Addr())
	for range o.Replicas {
		args := append(auth(), "--replicaof", host, port)
		s.nodes = append(s.nodes, startLocal(t, &Server{t: t, bin: server, dir: t.TempDir(), args: args, password: o.Password}))
	}
	// Sentinels learn the replicas from the master's INFO; start them once the replicas are connected,
	// or the first of those INFOs, and a failover, could miss them for 10 s.
	s.waitFor(20*time.Second, "every replica in sync with the master", func() error {
		return s.replicasInSync(master)
	})
	quorum := o.Sentinels/2 + 1
	for range o.Sentinels {
		dir := t.TempDir()
		conf := func(p int) (string, error) {
			var b strings.Builder
			fmt.Fprintf(&b, "port %d\nbind 127.0.0.1\n", p)
			fmt.Fprintf(&b, "sentinel monitor %s %s %s %d\n", o.MasterName, host, port, quorum)
			fmt.Fprintf(&b, "sentinel down-after-milliseconds %s %d\n", o.MasterName, o.DownAfter.Milliseconds())
			fmt.Fprintf(&b, "sentinel failover-timeout %s %d\n", o.MasterName, max(10*o.DownAfter.Milliseconds(), 5000))
			fmt.Fprintf(&b, "sentinel parallel-syncs %s 1\n", o.MasterName)
			if o.Password != "" {
				fmt.Fprintf(&b, "sentinel auth-pass %s %s\n", o.MasterName, o.Password)
			}
			if o.SentinelPassword != "" {
				// requirepass protects this sentinel; sentinel-pass is what it presents to the others.
				fmt.Fprintf(&b, "requirepass %s\nsentinel sentinel-pass %s\n", o.SentinelPassword, o.SentinelPassword)
			}
			path := filepath.Join(dir, "sentinel.conf")
			return path, os.WriteFile(path, []byte(b.String()), 0o600)
		}
		s.sentinels = append(s.sentinels, startLocal(t, &Server{t: t, bin: sentinelBin, dir: dir, args: sentinelArgs,
			password: o.SentinelPassword, conf: conf}))
	}
	s.waitFor(30*time.Second, "every sentinel knowing every replica and every other sentinel", func() error {
		for _, sen := range s.sentinels {
			m, err := s.sentinelMaster(sen)
			if err != nil {
				return err
			}
			if m["num-slaves"] != strconv.Itoa(o.Replicas) || m["num-other-sentinels"] != strconv.Itoa(o.Sentinels-1) {
				return fmt.Errorf("sentinel %s knows %s replicas and %s other sentinels", sen.Addr(), m["num-slaves"], m["num-other-sentinels"])
			}
		}
		return nil
	})
	return s
}

// Addrs are the sentinels' addresses, as REDIS_ADDRS lists them.
func (s *Sentinel) Addrs() []string {
	out := make([]string, len(s.sentinels))
	for i, sen := range s.sentinels {
		out[i] = sen.Addr()
	}
	return out
}

// Master is the address the sentinels currently give for the master ("" when none answers).
func (s *Sentinel) Master() string {
	for _, sen := range s.sentinels {
		c := s.sentinelClient(sen)
		addr, err := c.GetMasterAddrByName(context.Background(), s.MasterName).Result()
		_ = c.Close()
		if err == nil && len(addr) == 2 {
			return net.JoinHostPort(addr[0], addr[1])
		}
	}
	return ""
}

// Node is the data node at addr, nil if there is none.
func (s *Sentinel) Node(addr string) *Server {
	for _, n := range s.nodes {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// KillMaster kills the current master (SIGKILL, as a crashed machine) and returns its address. It does
// not come back: a returning master would rejoin as a replica, which is another test.
func (s *Sentinel) KillMaster() string {
	s.t.Helper()
	addr := s.Master()
	n := s.Node(addr)
	if n == nil {
		s.t.Fatalf("redistest: the sentinels name %q as master, which is none of the nodes", addr)
	}
	n.Stop()
	return addr
}

// WaitFailover waits until the sentinels name a master other than old and that node answers as a
// master, and returns its address.
func (s *Sentinel) WaitFailover(old string, timeout time.Duration) string {
	s.t.Helper()
	var now string
	s.waitFor(timeout, "a replica promoted in place of "+old, func() error {
		now = s.Master()
		if now == "" || now == old {
			return fmt.Errorf("the sentinels still name %q", now)
		}
		n := s.Node(now)
		if n == nil {
			return fmt.Errorf("the sentinels name %q, which is none of the nodes", now)
		}
		c := s.dataClient(n)
		defer func() { _ = c.Close() }()
		info, err := c.Info(context.Background(), "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "role:master") {
			return fmt.Errorf("%s is named master but is not one yet", now)
		}
		return nil
	})
	return now
}

// replicasInSync reports nil once the master has every replica connected and in sync.
func (s *Sentinel) replicasInSync(master *Server) error {
	c := s.dataClient(master)
	defer func() { _ = c.Close() }()
	info, err := c.Info(context.Background(), "replication").Result()
	if err != nil {
		return err
	}
	if !strings.Contains(info, "connected_slaves:"+strconv.Itoa(s.o.Replicas)) {
		return fmt.Errorf("master replication: %s", strings.TrimSpace(info))
	}
	for i := range s.o.Replicas {
		if !strings.Contains(info, fmt.Sprintf("slave%d:", i)) || strings.Contains(info, "state=wait_bgsave") {
			return fmt.Errorf("master replication: %s", strings.TrimSpace(info))
		}
	}
	return nil
}

// sentinelMaster is SENTINEL MASTER <name> as a map.
func (s *Sentinel) sentinelMaster(sen *Server) (map[string]string, error) {
	c := s.sentinelClient(sen)
	defer func() { _ = c.Close() }()
	return c.Master(context.Background(), s.MasterName).Result()
}

func (s *Sentinel) sentinelClient(sen *Server) *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: sen.Addr(), Password: s.o.SentinelPassword,
		MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second})
}

func (s *Sentinel) dataClient(n *Server) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: n.Addr(), Password: s.o.Password,
		MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second})
}

func (s *Sentinel) waitFor(timeout time.Duration, what string, cond func() error) {
	s.t.Helper()
	if err := waitFor(timeout, nil, cond); err != nil {
		s.t.Fatalf("redistest: waiting for %s: %v", what, err)
	}
}

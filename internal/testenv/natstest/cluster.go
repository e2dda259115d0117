package natstest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is a JetStream cluster of embedded servers on 127.0.0.1, each with its own store directory.
// Nodes can be stopped and started again on the same ports and stores, so that clients given every URL
// (URLs) fail over and come back as they would against a real cluster.
type Cluster struct {
	t     testing.TB
	nodes []*Server
}

// StartCluster runs an n-node JetStream cluster and waits until it has a meta leader and every node is
// current. Every node is stopped by t.Cleanup.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("natstest: cluster of %d nodes", n)
	}
	// Routes name every peer up front, so the ports are chosen before any node starts; a port taken
	// between choosing and binding makes the start fail, and the whole cluster is tried again.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		c, err := tryCluster(t, n)
		if err == nil {
			t.Cleanup(c.stopAll)
			c.WaitReady(30 * time.Second)
			return c
		}
		lastErr = err
	}
	t.Fatalf("natstest: start cluster: %v", lastErr)
	return nil
}

func tryCluster(t testing.TB, n int) (*Cluster, error) {
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	c := &Cluster{t: t}
	name := "wxpay-test-" + strconv.Itoa(ports[0])
	for i := 0; i < n; i++ {
		var routes []*url.URL
		for j := 0; j < n; j++ {
			if j != i {
				routes = append(routes, &url.URL{Scheme: "nats-route", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2*j+1]))})
			}
		}
		c.nodes = append(c.nodes, &Server{t: t, opts: server.Options{
			ServerName:         fmt.Sprintf("n%d", i+1),
			Host:               "127.0.0.1",
			Port:               ports[2*i],
			JetStream:          true,
			JetStreamMaxMemory: 64 << 20,
			JetStreamMaxStore:  1 << 30,
			StoreDir:           t.TempDir(),
			NoLog:              true,
			NoSigs:             true,
			Cluster:            server.ClusterOpts{Name: name, Host: "127.0.0.1", Port: ports[2*i+1]},
			Routes:             routes,
		}})
	}
	for _, s := range c.nodes {
		if err := s.tryStart(); err != nil {
			c.stopAll()
			return nil, err
		}
	}
	return c, nil
}

// freePorts finds n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (s *Server) tryStart() error {
	opts := s.opts
	srv, err := server.NewServer(&opts)
	if err != nil {
		return err
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("%s not ready for connections", s.opts.ServerName)
	}
	s.srv = srv
	return nil
}

// Size is the number of nodes.
func (c *Cluster) Size() int { return len(c.nodes) }

// URLs is every node's client URL, comma-separated, as NATS_URL takes them.
func (c *Cluster) URLs() string {
	var u []string
	for _, s := range c.nodes {
		u = append(u, "nats://"+net.JoinHostPort(s.opts.Host, strconv.Itoa(s.opts.Port)))
	}
	return strings.Join(u, ",")
}

// Node is node i (0-based); its Server() is nil while it is stopped.
func (c *Cluster) Node(i int) *Server { return c.nodes[i] }

// Name is the server name of node i, as stream and consumer cluster info report leaders.
func (c *Cluster) Name(i int) string { return c.nodes[i].opts.ServerName }

// Index is the node whose server name is name, or -1.
func (c *Cluster) Index(name string) int {
	for i, s := range c.nodes {
		if s.opts.ServerName == name {
			return i
		}
	}
	return -1
}

// Stop shuts node i down (its clients are disconnected and fail over to the others).
func (c *Cluster) Stop(i int) { c.nodes[i].Stop() }

// Start starts the stopped node i again on its ports and store and waits until it has caught up with
// the meta leader.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	s := c.nodes[i]
	if s.srv != nil {
		return
	}
	s.start()
	c.WaitReady(30 * time.Second)
}

// Restart stops node i and starts it again.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.Stop(i)
	c.Start(i)
}

// WaitReady waits until a running node is the JetStream meta leader and every running node is current.
func (c *Cluster) WaitReady(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		leader, current := false, true
		for _, s := range c.nodes {
			if s.srv == nil {
				continue
			}
			leader = leader || s.srv.JetStreamIsLeader()
			current = current && s.srv.JetStreamIsCurrent()
		}
		if leader && current {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("natstest: cluster not ready after %s (meta leader: %v, all current: %v)", timeout, leader, current)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *Cluster) stopAll() {
	for _, s := range c.nodes {
		s.Stop()
	}
}

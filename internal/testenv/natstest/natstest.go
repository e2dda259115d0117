// Package natstest starts an embedded nats-server with JetStream for tests: random port, temporary file
// storage, stopped by t.Cleanup, and restartable on the same port and store to test outages.
package natstest

import (
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server is an embedded JetStream server under a test's control.
type Server struct {
	t    testing.TB
	opts server.Options
	srv  *server.Server
}

// Start runs a JetStream server on 127.0.0.1 with a random port and a temporary store directory.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartIn(t, t.TempDir())
}

// StartIn is Start with the store in storeDir, for a test that prepares a store another program then
// opens (stop the server first).
func StartIn(t testing.TB, storeDir string) *Server {
	t.Helper()
	s := &Server{t: t, opts: server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  storeDir,
		NoLog:     true,
		NoSigs:    true,
	}}
	s.start()
	// From now on the port is fixed, so that clients reconnect to the same address after Restart.
	s.opts.Port = s.srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	opts := s.opts
	srv, err := server.NewServer(&opts)
	if err != nil {
		s.t.Fatalf("natstest: new server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		s.t.Fatalf("natstest: server not ready")
	}
	s.srv = srv
}

// URL is the client URL of the server.
func (s *Server) URL() string { return s.srv.ClientURL() }

// Server is the running nats-server, for in-process connections and introspection.
func (s *Server) Server() *server.Server { return s.srv }

// Stop shuts the server down and waits until it is gone. Stopping twice is harmless.
func (s *Server) Stop() {
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.srv = nil
}

// Restart starts the server again on the same port with the same store: streams and messages survive.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

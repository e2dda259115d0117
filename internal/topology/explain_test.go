package topology_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-events/wxpay-events/internal/topology"
)

// A NATS server without JetStream answers "no responders available"; the error says what that means and
// which server said it.
func TestEnsureWithoutJetStreamSaysSo(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = topology.Ensure(ctx, js, topology.Options{Replicas: 1})
	if err == nil || !strings.Contains(err.Error(), "is JetStream enabled") || !strings.Contains(err.Error(), s.ClientURL()) {
		t.Fatalf("Ensure on a server without JetStream: %v", err)
	}
	if err := topology.Check(ctx, js); err == nil || !strings.Contains(err.Error(), "-js") {
		t.Fatalf("Check: %v", err)
	}
}

package subscribe_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-events/wxpay-events/wxevents"
)

// natsURL is the embedded server the examples connect to, as a service would
// to its NATS_URL. Each test starts its own (startJetStream).
var natsURL string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	// The examples log through slog.Default (given-up events at error level); keep test output clean.
	// Tests that look at logs pass subscribe.Logger.
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	dir, err := os.MkdirTemp("", "subscribe-example-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	srv, err := runServer(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer srv.WaitForShutdown()
	defer srv.Shutdown()
	natsURL = srv.ClientURL()
	if err := exampleEvents(natsURL); err != nil {
		fmt.Fprintln(os.Stderr, "example events:", err)
		return 1
	}
	return m.Run()
}

// runServer starts an embedded JetStream server on a free port, storing in
// dir, with the events stream as `wxpayctl streams apply` creates it.
func runServer(dir string) (*server.Server, error) {
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true,
	})
	if err != nil {
		return nil, err
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("nats-server not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		srv.Shutdown()
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		srv.Shutdown()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       wxevents.Stream,
		Subjects:   []string{wxevents.SubjectPrefix + ">"},
		Duplicates: 10 * time.Minute,
	})
	if err != nil {
		srv.Shutdown()
		return nil, err
	}
	return srv, nil
}

// startJetStream gives a test a server of its own with the events stream.
func startJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := runServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

var eventSeq atomic.Int64

// publish stores an event of typ for mchid and sub with data (a JSON object) the way the producer does,
// and returns its id.
func publish(ctx context.Context, js jetstream.JetStream, typ wxevents.Type, mchid, sub, data string) (string, error) {
	id := fmt.Sprintf("00000000-0000-5000-8000-%012d", eventSeq.Add(1))
	e := wxevents.Event{
		SpecVersion: wxevents.SpecVersion, ID: id, Source: wxevents.SourcePrefix + mchid,
		Type: typ.CloudEventType(), Subject: "subject-" + id[len(id)-4:], Time: time.Now(),
		DataContentType: wxevents.DataContentType, DataSchema: typ.DataSchema(),
		NotificationID: "EV-" + strconv.FormatInt(eventSeq.Load(), 10), WechatEventType: "TEST", SubMchID: sub,
		Data: []byte(data),
	}
	raw, err := e.MarshalJSON()
	if err != nil {
		return "", err
	}
	_, err = js.Publish(ctx, wxevents.Subject(typ, mchid, sub), raw, jetstream.WithMsgID(id))
	return id, err
}

// mustPublish is publish for tests.
func mustPublish(t *testing.T, js jetstream.JetStream, typ wxevents.Type, mchid, sub, data string) string {
	t.Helper()
	id, err := publish(context.Background(), js, typ, mchid, sub, data)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// exampleEvents are what the examples find in the stream: one payment, one refund of an order the example
// service does not know, and an event of a type a newer producer added.
func exampleEvents(url string) error {
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, ev := range []struct {
		typ  wxevents.Type
		data string
	}{
		{wxevents.TypePaymentSucceeded, `{"mchid":"1900000100","out_trade_no":"order-1001","transaction_id":"4200000001202401010000000001","trade_state":"SUCCESS","amount":{"total":100,"currency":"CNY"}}`},
		{wxevents.TypeRefundSucceeded, `{"mchid":"1900000100","out_trade_no":"order-9999","refund_id":"50300000012024010100000000001","refund_status":"SUCCESS","amount":{"total":100,"refund":100}}`},
		{"transfer.finished", `{"mchid":"1900000100","out_batch_no":"batch-1"}`},
	} {
		if _, err := publish(ctx, js, ev.typ, "1900000100", "", ev.data); err != nil {
			return err
		}
	}
	return nil
}

// eventually polls cond until it holds, failing the test after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

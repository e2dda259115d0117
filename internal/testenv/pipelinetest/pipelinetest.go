// Package pipelinetest runs the whole pipeline for tests: an embedded JetStream server, a real
// redis-server, a simulated WeChat Pay platform, a real receiver over HTTP and any number of consumers.
package pipelinetest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/consumer"
	"github.com/wxpay-events/wxpay-events/internal/receiver"
	"github.com/wxpay-events/wxpay-events/internal/testenv/natstest"
	"github.com/wxpay-events/wxpay-events/internal/testenv/redistest"
	"github.com/wxpay-events/wxpay-events/internal/testenv/wait"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
	"github.com/wxpay-events/wxpay-events/wxevents"
)

// MchID is the merchant every pipeline is configured for.
const MchID = "1900000100"

var (
	platformOnce sync.Once
	platform     *wechatsim.Platform
)

// SharedPlatform is one simulated platform per test binary (RSA key generation is slow).
func SharedPlatform() *wechatsim.Platform {
	platformOnce.Do(func() {
		p, err := wechatsim.NewPlatform(MchID)
		if err != nil {
			panic(err)
		}
		platform = p
	})
	return platform
}

// Pipeline is a running receiver with its servers; consumers are started on demand.
type Pipeline struct {
	t        testing.TB
	NATS     *natstest.Server
	Redis    *redistest.Server
	Platform *wechatsim.Platform
	Env      map[string]string
	URL      string // the receiver's notify URL for MchID
	Logs     *SyncBuffer
	client   *http.Client
	nc       *nats.Conn
	js       jetstream.JetStream
}

// SyncBuffer is a concurrency-safe log sink.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start runs NATS, Redis and a receiver. extraEnv overrides the generated configuration.
func Start(t testing.TB, extraEnv map[string]string) *Pipeline {
	t.Helper()
	p := &Pipeline{t: t, Platform: SharedPlatform(), Logs: &SyncBuffer{}, client: &http.Client{Timeout: 10 * time.Second}}
	files, err := p.Platform.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p.NATS = natstest.Start(t)
	p.Redis = redistest.Start(t)
	p.Env = p.Platform.Env(files)
	p.Env["NATS_URL"] = p.NATS.URL()
	p.Env["REDIS_URL"] = p.Redis.URL()
	p.Env["RECEIVER_ADDR"] = "127.0.0.1:0"
	p.Env["ADMIN_ADDR"] = "127.0.0.1:0"
	for k, v := range extraEnv {
		p.Env[k] = v
	}

	rcfg, err := config.LoadReceiver(nil, p.getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r, err := receiver.New(ctx, rcfg, zerolog.New(p.Logs), receiver.Deps{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	p.URL = "http://" + r.Addr().String() + "/notify/" + MchID

	p.nc, err = nats.Connect(p.NATS.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.nc.Close)
	p.js, _ = jetstream.New(p.nc)
	return p
}

func (p *Pipeline) getenv(k string) string { return p.Env[k] }

// ConsumerOptions tune one consumer.
type ConsumerOptions struct {
	Dedupe         consumer.Deduper
	TracerProvider trace.TracerProvider // nil is tracing off
}

// StartConsumer runs one consumer process in-process; the returned function stops it and waits.
func (p *Pipeline) StartConsumer(o ConsumerOptions) (stop func()) {
	p.t.Helper()
	stop, _ = p.StartConsumerAdmin(o)
	return stop
}

// StartConsumerAdmin is StartConsumer that also returns the base URL of the consumer's admin server
// (/metrics, /healthz, /readyz).
func (p *Pipeline) StartConsumerAdmin(o ConsumerOptions) (stop func(), adminURL string) {
	p.t.Helper()
	ccfg, err := config.LoadConsumer(nil, p.getenv, io.Discard)
	if err != nil {
		p.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c, err := consumer.New(ctx, ccfg, zerolog.New(p.Logs), consumer.Deps{Dedupe: o.Dedupe, TracerProvider: o.TracerProvider})
	if err != nil {
		cancel()
		p.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				p.t.Errorf("consumer stopped with %v", err)
			}
		})
	}
	p.t.Cleanup(stop)
	return stop, "http://" + c.AdminAddr().String()
}

// Post sends a notification to the receiver and returns the status code.
func (p *Pipeline) Post(n wechatsim.Notification) int {
	p.t.Helper()
	req, err := http.NewRequest(http.MethodPost, p.URL, bytes.NewReader(n.Body))
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header = n.Header.Clone()
	resp, err := p.client.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// Build makes a signed notification of eventType with plaintext.
func (p *Pipeline) Build(eventType string, plaintext []byte, o wechatsim.Options) wechatsim.Notification {
	p.t.Helper()
	n, err := p.Platform.Build(eventType, plaintext, o)
	if err != nil {
		p.t.Fatal(err)
	}
	return n
}

// JetStream is a client for inspecting the streams.
func (p *Pipeline) JetStream() jetstream.JetStream { return p.js }

// stream looks a stream and its current state up, failing the test if it cannot.
func (p *Pipeline) stream(ctx context.Context, name string) (jetstream.Stream, *jetstream.StreamInfo) {
	p.t.Helper()
	s, err := p.js.Stream(ctx, name)
	if err != nil {
		p.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		p.t.Fatal(err)
	}
	return s, info
}

// Messages returns every message currently in stream, in order.
func (p *Pipeline) Messages(stream string) []*jetstream.RawStreamMsg {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, info := p.stream(ctx, stream)
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		out = append(out, m)
	}
	return out
}

// Count is the number of messages in stream.
func (p *Pipeline) Count(stream string) uint64 {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, info := p.stream(ctx, stream)
	return info.State.Msgs
}

// Settled reports whether the durable consumer has nothing pending and nothing unacknowledged.
func (p *Pipeline) Settled() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := p.js.Consumer(ctx, topology.InboundStream, topology.ConsumerName)
	if err != nil {
		return false
	}
	info, err := c.Info(ctx)
	if err != nil {
		return false
	}
	return info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0
}

// ArchiveCaughtUp reports whether WECHATPAY_ARCHIVE holds a copy of everything WECHATPAY_INBOUND
// stored: the archive consumer has nothing pending and nothing unacknowledged. The copies follow the
// stored notifications through the server's sourcing, seconds later on a loaded machine; a test that
// reads the archive waits for this first.
func (p *Pipeline) ArchiveCaughtUp() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := p.js.PushConsumer(ctx, topology.InboundStream, topology.ArchiveConsumerName)
	if err != nil {
		return false
	}
	info, err := c.Info(ctx)
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0
}

// WaitFor polls cond until it holds or timeout passes.
func (p *Pipeline) WaitFor(timeout time.Duration, what string, cond func() bool) {
	p.t.Helper()
	wait.For(p.t, what, cond, wait.Options{Timeout: timeout, OnTimeout: func() string {
		logs := p.Logs.String()
		if len(logs) > 4000 {
			logs = "…" + logs[len(logs)-4000:]
		}
		return "last log lines:\n" + logs
	}})
}

// Event is a published event as downstream services read it (wxevents.Parse, the one reader of the
// CloudEvent), with where JetStream stored it.
type Event struct {
	wxevents.Event
	NATSSubject string // the event's subject in WECHATPAY_EVENTS
	MsgID       string // its Nats-Msg-Id header
	Raw         []byte // the message's bytes, for schema checks
}

// Events parses every message in WECHATPAY_EVENTS; one that wxevents.Parse refuses fails the test.
func (p *Pipeline) Events() []Event {
	p.t.Helper()
	var out []Event
	for _, m := range p.Messages(topology.EventsStream) {
		ce, err := wxevents.Parse(m.Data)
		if err != nil {
			p.t.Fatalf("event %d: %v", m.Sequence, err)
		}
		out = append(out, Event{Event: ce, NATSSubject: m.Subject, MsgID: m.Header.Get(jetstream.MsgIDHeader), Raw: m.Data})
	}
	return out
}

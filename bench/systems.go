package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/verifiers"
	"github.com/wechatpay-apiv3/wechatpay-go/core/notify"
	"github.com/wechatpay-apiv3/wechatpay-go/services/payments"

	"github.com/wxpay-events/wxpay-events/internal/admin"
	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/consumer"
	"github.com/wxpay-events/wxpay-events/internal/receiver"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/verify"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
)

// served is an http.Handler listening on loopback with the same http.Server settings as the receiver.
type served struct {
	URL  string
	stop func() error
}

func serve(h http.Handler) (*served, error) {
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- admin.Serve(ctx, admin.Server(h), ln, 5*time.Second) }()
	return &served{URL: "http://" + ln.Addr().String() + "/notify/" + mchid, stop: func() error { cancel(); return <-done }}, nil
}

// nullHandler reads the body and answers 204: the cost of HTTP and of the load generator alone, for
// reading the CPU figures of the others.
func nullHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	})
}

// bareHandler only verifies the signature (internal/verify) and answers 204: the floor any receiver pays.
// It reads bodies into pooled buffers, as the receiver does, so that the floor is not set too low.
func bareHandler(v *verify.Verifier) http.Handler {
	bufs := sync.Pool{New: func() any { return new(bytes.Buffer) }}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := bufs.Get().(*bytes.Buffer)
		buf.Reset()
		defer bufs.Put(buf)
		if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, 64<<10)); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if err := v.Verify(r.Context(), verify.HeadersFrom(r.Header), buf.Bytes()); err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

func newVerifier(p *wechatsim.Platform, opts ...verify.Option) (*verify.Verifier, error) {
	return verify.New(account(p).KeySet(), opts...)
}

// inlineHandler is what most merchants run today: wechatpay-go's notify.Handler verifies and decrypts
// in the request, then the business step (update the order, call fulfilment) runs before the answer.
// The downstream step is simulated by waiting delay; pool > 0 bounds how many run at once, as a thread
// pool or a database connection pool does.
func inlineHandler(p *wechatsim.Platform, delay time.Duration, pool int) (http.Handler, error) {
	h, err := notify.NewRSANotifyHandler(string(p.APIv3Key), verifiers.NewSHA256WithRSAPubkeyVerifier(p.PublicKeyID, p.Key.PublicKey))
	if err != nil {
		return nil, err
	}
	var slots chan struct{}
	if pool > 0 {
		slots = make(chan struct{}, pool)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var tx payments.Transaction
		if _, err := h.ParseNotifyRequest(r.Context(), r, &tx); err != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"code":"FAIL","message":"invalid notification"}`)
			return
		}
		if slots != nil {
			select {
			case slots <- struct{}{}:
				defer func() { <-slots }()
			case <-r.Context().Done(): // the caller gave up waiting
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
		}
		if delay > 0 {
			time.Sleep(delay)
		}
		w.WriteHeader(http.StatusNoContent)
	}), nil
}

// receiverConfig is the receiver's production configuration with loopback listeners.
func receiverConfig(natsURL string, p *wechatsim.Platform) config.Receiver {
	return config.Receiver{
		Common:          config.Common{NATSURL: natsURL, AdminAddr: "127.0.0.1:0", Streams: config.Streams{StreamReplicas: 1}, LogLevel: "info", LogFormat: "json"},
		Addr:            "127.0.0.1:0",
		MaxBody:         64 << 10,
		PublishTimeout:  2 * time.Second,
		ShutdownTimeout: 10 * time.Second,
		// Signing 100,000 notifications takes minutes, so some are older than WeChat's 5 minutes when they
		// are sent; the skew check costs the same whatever its bound.
		MaxSkew:  time.Hour,
		Accounts: []config.Account{account(p)},
	}
}

// runningReceiver is receiver.New + Serve against an embedded nats-server over loopback TCP.
type runningReceiver struct {
	URL  string
	stop func() error
}

// benchLog is the programs' logger: JSON at info, one line per notification, written nowhere. The
// encoding is paid; the write to stdout is not.
func benchLog() zerolog.Logger { return zerolog.New(io.Discard).Level(zerolog.InfoLevel) }

func startReceiver(natsURL string, p *wechatsim.Platform) (*runningReceiver, error) {
	ctx, cancel := context.WithCancel(context.Background())
	r, err := receiver.New(ctx, receiverConfig(natsURL, p), benchLog(), receiver.Deps{})
	if err != nil {
		cancel()
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	return &runningReceiver{
		URL:  "http://" + r.Addr().String() + "/notify/" + mchid,
		stop: func() error { cancel(); return <-done },
	}, nil
}

// runningConsumer is consumer.New + Serve with a real Redis.
type runningConsumer struct{ stop func() error }

func startConsumer(natsURL, redisURL string, p *wechatsim.Platform, pc pipelineConfig) (*runningConsumer, error) {
	cfg := config.Consumer{
		Common:          config.Common{NATSURL: natsURL, AdminAddr: "127.0.0.1:0", Streams: config.Streams{StreamReplicas: 1}, LogLevel: "info", LogFormat: "json"},
		Redis:           config.Redis{URL: redisURL},
		DedupeTTL:       config.DefaultDedupeTTL,
		Workers:         pc.workers,
		Batch:           pc.batch,
		ShutdownTimeout: 10 * time.Second,
		Accounts:        []config.Account{account(p)},
	}
	ctx, cancel := context.WithCancel(context.Background())
	c, err := consumer.New(ctx, cfg, benchLog(), consumer.Deps{})
	if err != nil {
		cancel()
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx) }()
	return &runningConsumer{stop: func() error { cancel(); return <-done }}, nil
}

// pipeline is receiver → JetStream → consumer (Redis dedupe) → WECHATPAY_EVENTS, with a downstream
// reader of the events stream that records when each notification's event arrives.
type pipeline struct {
	p       *wechatsim.Platform
	nats    *natsServer
	redis   *redisServer
	recv    *runningReceiver
	cons    *runningConsumer
	nc      *nats.Conn
	js      jetstream.JetStream
	reader  jetstream.ConsumeContext
	cfg     pipelineConfig
	tracker *tracker
	// wantEvents counts the notifications posted so far, each a distinct fact: one event each.
	wantEvents int
	stopOnce   sync.Once
}

// pipelineConfig is how the bench runs a pipeline: the consumer's workers and batch size, and where
// nats-server runs (natsProcess or natsEmbedded).
type pipelineConfig struct {
	workers, batch int
	nats           string
}

func startPipeline(p *wechatsim.Platform, pc pipelineConfig, withConsumer bool) (pl *pipeline, err error) {
	pl = &pipeline{p: p, cfg: pc, tracker: newTracker()}
	defer func() {
		if err != nil {
			pl.stop()
		}
	}()
	if pl.nats, err = startNATS(pc.nats); err != nil {
		return nil, err
	}
	if pl.redis, err = startRedis(); err != nil {
		return nil, err
	}
	if pl.recv, err = startReceiver(pl.nats.URL(), p); err != nil {
		return nil, err
	}
	if withConsumer {
		if err = pl.startConsumer(); err != nil {
			return nil, err
		}
	}
	if pl.nc, err = nats.Connect(pl.nats.URL(), nats.Name("bench-downstream")); err != nil {
		return nil, err
	}
	if pl.js, err = jetstream.New(pl.nc); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A downstream service reading the published CloudEvents, as any subscriber of the stream would.
	oc, err := pl.js.OrderedConsumer(ctx, topology.EventsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("events reader: %w", err)
	}
	if pl.reader, err = oc.Consume(pl.tracker.onEvent); err != nil {
		return nil, fmt.Errorf("events reader: %w", err)
	}
	return pl, nil
}

func (pl *pipeline) startConsumer() error {
	c, err := startConsumer(pl.nats.URL(), pl.redis.URL(), pl.p, pl.cfg)
	if err != nil {
		return err
	}
	pl.cons = c
	return nil
}

func (pl *pipeline) URL() string { return pl.recv.URL }

// cpu reads this process's CPU time with redis-server's and a nats-server child's.
func (pl *pipeline) cpu() cpuMeter { return cpuMeter{pids: []int{pl.redis.Pid()}, nats: pl.nats.Pid()} }

func (pl *pipeline) stop() {
	pl.stopOnce.Do(func() {
		if pl.reader != nil {
			pl.reader.Stop()
		}
		if pl.nc != nil {
			pl.nc.Close()
		}
		if pl.cons != nil {
			_ = pl.cons.stop()
		}
		if pl.recv != nil {
			_ = pl.recv.stop()
		}
		if pl.nats != nil {
			pl.nats.Stop()
		}
		if pl.redis != nil {
			pl.redis.Stop()
		}
	})
}

// streamCount is the number of messages in a stream.
func (pl *pipeline) streamCount(name string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := pl.js.Stream(ctx, name)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// settled reports whether the durable consumer has nothing pending, unacknowledged or redelivered.
func (pl *pipeline) settled() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pl.js.Consumer(ctx, topology.InboundStream, topology.ConsumerName)
	if err != nil {
		return false
	}
	info, err := c.Info(ctx)
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0
}

// tracker matches published events to the notifications that caused them, by notification id.
type tracker struct {
	mu      sync.RWMutex
	slot    map[string]int // notification id → index in the current batch
	fact    map[string]int // notification id → business fact
	arrived []atomic.Int64 // unix nanos of the first event per index; 0 until it arrives
	seen    map[int]int    // business fact → events received
	events  atomic.Int64
	foreign atomic.Int64 // events for no registered notification
	last    atomic.Int64 // unix nanos of the latest event
}

func newTracker() *tracker { return &tracker{seen: map[int]int{}} }

// expect registers a batch; events for it are recorded by index.
func (t *tracker) expect(notes []note) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.slot = make(map[string]int, len(notes))
	t.fact = make(map[string]int, len(notes))
	t.arrived = make([]atomic.Int64, len(notes))
	t.seen = map[int]int{}
	t.events.Store(0)
	t.foreign.Store(0)
	for i, n := range notes {
		t.slot[n.id] = i
		t.fact[n.id] = n.fact
	}
}

var notificationIDField = []byte(`"wxnotificationid":"`)

func (t *tracker) onEvent(m jetstream.Msg) {
	now := time.Now().UnixNano()
	data := m.Data()
	id := ""
	if i := bytes.Index(data, notificationIDField); i >= 0 {
		rest := data[i+len(notificationIDField):]
		if j := bytes.IndexByte(rest, '"'); j >= 0 {
			id = string(rest[:j])
		}
	}
	if id == "" {
		// Fall back to a full decode should the encoder ever add spaces.
		var ce struct {
			ID string `json:"wxnotificationid"`
		}
		_ = json.Unmarshal(data, &ce)
		id = ce.ID
	}
	t.mu.Lock()
	i, ok := t.slot[id]
	if ok {
		t.seen[t.fact[id]]++
	}
	t.mu.Unlock()
	if !ok {
		t.foreign.Add(1)
		return
	}
	t.arrived[i].CompareAndSwap(0, now)
	t.events.Add(1)
	t.last.Store(now)
}

// counts returns events received, distinct facts among them and duplicates (events beyond one per fact).
func (t *tracker) counts() (events, distinct, dups int) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, n := range t.seen {
		events += n
		distinct++
		dups += n - 1
	}
	return events, distinct, dups
}

// waitDistinct waits until want distinct facts have an event, or timeout passes.
func (t *tracker) waitDistinct(want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, d, _ := t.counts()
		if d >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d facts published after %s", d, want, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// e2e returns, per index, the time from sched[i] to its event (only for indexes whose event arrived).
func (t *tracker) e2e(sched []time.Time) (lat []time.Duration, missing int) {
	for i := range sched {
		a := t.arrived[i].Load()
		if a == 0 {
			missing++
			continue
		}
		lat = append(lat, time.Unix(0, a).Sub(sched[i]))
	}
	return lat, missing
}

package main

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxpay-events/wxpay-events/internal/decrypt"
	"github.com/wxpay-events/wxpay-events/internal/envelope"
	"github.com/wxpay-events/wxpay-events/internal/events"
	"github.com/wxpay-events/wxpay-events/internal/receiver"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/verify"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
)

// goBench holds what the Go benchmarks share: the platform, a growing pool of distinct notifications
// (the receiver must not see a duplicate, which JetStream would answer without storing) and an embedded
// JetStream server. Everything runs in this process, so allocations per op include the nats-server's.
type goBench struct {
	p    *wechatsim.Platform
	f    *factory
	nats *natsServer

	mu       sync.Mutex
	used     atomic.Int64 // notifications of pool already stored by the receiver benchmarks
	pool     []note
	fresh    []note // for the SDK, whose clock is time.Now: rebuilt when older than freshFor
	freshAt  time.Time
	freshFor time.Duration
}

func newGoBench(p *wechatsim.Platform, f *factory, n *natsServer) *goBench {
	return &goBench{p: p, f: f, nats: n, freshFor: 3 * time.Minute}
}

// distinct returns the first n notifications of the pool, building more when it is short.
func (g *goBench) distinct(b *testing.B, n int) []note {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.pool) < n {
		b.StopTimer()
		more, err := g.f.fresh(n - len(g.pool))
		if err != nil {
			b.Fatal(err)
		}
		g.pool = append(g.pool, more...)
		b.StartTimer()
	}
	return g.pool[:n]
}

// current returns a small pool stamped within the last few minutes.
func (g *goBench) current(b *testing.B) []note {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fresh == nil || time.Since(g.freshAt) > g.freshFor {
		b.StopTimer()
		fresh, err := g.f.fresh(512)
		if err != nil {
			b.Fatal(err)
		}
		g.fresh, g.freshAt = fresh, time.Now()
		b.StartTimer()
	}
	return g.fresh
}

// nopWriter is a reusable ResponseWriter, so that only the handler's allocations are counted.
type nopWriter struct {
	h    http.Header
	code int
}

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(code int)        { w.code = code }

// requests prepares one request per op, outside the timer, as the server would have read it.
func requests(b *testing.B, notes []note, n int) []*http.Request {
	b.StopTimer()
	defer b.StartTimer()
	reqs := make([]*http.Request, n)
	for i := range reqs {
		r, err := notes[i%len(notes)].request()
		if err != nil {
			b.Fatal(err)
		}
		reqs[i] = r
	}
	return reqs
}

func serveAll(b *testing.B, h http.Handler, reqs []*http.Request) {
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		clear(w.h)
		w.code = 0
		h.ServeHTTP(w, reqs[i])
		if w.code != http.StatusNoContent {
			b.Fatalf("request %d answered %d", i, w.code)
		}
	}
}

// benchBareVerify: read the body, verify the signature, answer 204.
func (g *goBench) benchBareVerify(b *testing.B) {
	v, err := newVerifier(g.p, verify.WithMaxSkew(24*time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	pool := g.current(b)
	serveAll(b, bareHandler(v), requests(b, pool, b.N))
}

// benchInlineSDK: wechatpay-go's notify.Handler, verify and decrypt, no downstream step.
func (g *goBench) benchInlineSDK(b *testing.B) {
	h, err := inlineHandler(g.p, 0, 0)
	if err != nil {
		b.Fatal(err)
	}
	pool := g.current(b)
	serveAll(b, h, requests(b, pool, b.N))
}

// receiverHandler is the receiver's handler with a real JetStream store on the embedded server.
func (g *goBench) receiverHandler(b *testing.B) *receiver.Handler {
	nc, err := nats.Connect(g.nats.URL(), nats.Name("bench-receiver"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := topology.Ensure(ctx, js, topology.Options{Replicas: 1}); err != nil {
		b.Fatal(err)
	}
	v, err := newVerifier(g.p, verify.WithMaxSkew(24*time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	return receiver.NewHandler(receiver.HandlerOptions{
		Verifiers:      map[string]receiver.Verifier{mchid: v},
		Store:          receiver.NewJetStreamStore(nc, js),
		MaxBody:        64 << 10,
		PublishTimeout: 2 * time.Second,
		Log:            benchLog(),
		Metrics:        receiver.NewMetrics(prometheus.NewRegistry()),
	})
}

// benchReceiverHandler: verify, parse, store in JetStream (file storage) and wait for the PubAck, one
// request at a time.
func (g *goBench) benchReceiverHandler(b *testing.B) {
	h := g.receiverHandler(b)
	// Each round uses notifications the server has not seen: skip those earlier rounds stored.
	offset := g.used.Load()
	notes := g.distinct(b, int(offset)+b.N)[offset:]
	g.used.Add(int64(b.N))
	serveAll(b, h, requests(b, notes, b.N))
}

// benchReceiverHandlerParallel: the same with GOMAXPROCS×4 requests in flight, as under load, where
// concurrent publishes share round trips to the server.
func (g *goBench) benchReceiverHandlerParallel(b *testing.B) {
	h := g.receiverHandler(b)
	offset := g.used.Load()
	notes := g.distinct(b, int(offset)+b.N)[offset:]
	g.used.Add(int64(b.N))
	reqs := requests(b, notes, b.N)
	var next atomic.Int64
	var failed atomic.Int64
	b.SetParallelism(4)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := &nopWriter{h: http.Header{}}
		for pb.Next() {
			i := next.Add(1) - 1
			clear(w.h)
			w.code = 0
			h.ServeHTTP(w, reqs[i])
			if w.code != http.StatusNoContent {
				failed.Add(1)
			}
		}
	})
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d requests not answered 204", n)
	}
}

// The steps below are what the profiles of the receiver and the consumer spend most in, one at a time.

// benchStepVerify: internal/verify alone (RSA-2048 PKCS#1 v1.5 through wechatpay-go's verifier).
func (g *goBench) benchStepVerify(b *testing.B) {
	v, err := newVerifier(g.p, verify.WithMaxSkew(24*time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	n := g.current(b)[0]
	r, err := n.request()
	if err != nil {
		b.Fatal(err)
	}
	h, body := verify.HeadersFrom(r.Header), n.body()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := v.Verify(context.Background(), h, body); err != nil {
			b.Fatal(err)
		}
	}
}

// benchStepEnvelope: internal/envelope.Parse, which both the receiver and the consumer run.
func (g *goBench) benchStepEnvelope(b *testing.B) {
	body := g.current(b)[0].body()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := envelope.Parse(body); err != nil {
			b.Fatal(err)
		}
	}
}

// benchStepDecrypt: internal/decrypt, AES-256-GCM of the resource.
func (g *goBench) benchStepDecrypt(b *testing.B) {
	n := g.current(b)[0]
	env, err := envelope.Parse(n.body())
	if err != nil {
		b.Fatal(err)
	}
	c, err := decrypt.New(g.p.APIv3Key)
	if err != nil {
		b.Fatal(err)
	}
	r := env.Resource
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Open(r.Algorithm, r.Nonce, r.AssociatedData, r.Ciphertext); err != nil {
			b.Fatal(err)
		}
	}
}

// benchStepEvent: internal/events, mapping the plaintext to a typed event and encoding its CloudEvent.
func (g *goBench) benchStepEvent(b *testing.B) {
	plain := g.f.plaintext(1)
	n := events.Notification{ID: wechatsim.NewUUID(), EventType: g.f.eventType, CreateTime: "2015-05-20T13:29:35+08:00", MchID: mchid}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		evs, err := events.Build(n, plain)
		if err != nil {
			b.Fatal(err)
		}
		for _, ev := range evs {
			if _, err := ev.CloudEvent(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

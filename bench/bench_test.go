package main

import (
	"context"
	"io"
	"os"
	"sync"
	"testing"

	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
)

// TestSmoke runs every part of the load driver with a handful of requests: each system answers them,
// the pipeline publishes one event per notification and drains a small backlog with retries in it
// without a duplicate or a loss, and the capacity part measures every key format and every sample. It
// asserts correctness only; the figures of so short a run mean little (the capacity ones are exact sizes,
// but of 2,000 keys and 2 notifications per sample).
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server and redis-server")
	}
	o, err := parseOptions([]string{"-smoke", "-suite", "null,bare,receiver,inline,pipeline,backlog,capacity", "-backlog", "200"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	out := &logWriter{t: t}
	s, err := newSuite(context.Background(), o, out, "go test -run TestSmoke ./bench")
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.run()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"bare", "receiver", inlineName(0, 0), inlineName(20e6, 0), inlineName(200e6, 0), "pipeline"} {
		if sat, ok := res.Sat[name]; !ok || sat.RPS <= 0 {
			t.Errorf("%s: no saturation result", name)
		}
		if open, ok := res.Open[name]; !ok || open.Lat.N == 0 {
			t.Errorf("%s: no fixed-rate result", name)
		}
	}
	if open, ok := res.Open[bareAtReceiverRate]; !ok || open.Lat.N == 0 || open.Rate != res.Open["receiver"].Rate {
		t.Errorf("no fixed-rate result of bare at the receiver's rate: %+v", open)
	}
	if p := res.Pipeline; p == nil || p.E2E.N == 0 || p.Missing != 0 || p.Events != uint64(p.WantEvents) || p.DLQ != 0 {
		t.Errorf("pipeline: %+v", p)
	}
	if b := res.Backlog; b == nil || !b.OK() || b.Distinct >= b.N {
		t.Errorf("backlog: %+v", b)
	}
	checkCapacity(t, res.Capacity)
}

func checkCapacity(t *testing.T, c *capacityResult) {
	t.Helper()
	if c == nil || len(c.Keys) != 5 {
		t.Fatalf("capacity: %+v", c)
	}
	previous, adopted, viaDeduper := c.Keys[0], c.Keys[2], c.Keys[4]
	if adopted.PerFact > previous.PerFact-32 || adopted.Usage > previous.Usage-32 {
		t.Errorf("capacity: the adopted format costs %.0f B/fact (MEMORY USAGE %.0f), the previous one %.0f (%.0f)",
			adopted.PerFact, adopted.Usage, previous.PerFact, previous.Usage)
	}
	if viaDeduper.Example != adopted.Example || viaDeduper.Usage != adopted.Usage {
		t.Errorf("capacity: the deduper writes %q (%.0f B), the measured format is %q (%.0f B)",
			viaDeduper.Example, viaDeduper.Usage, adopted.Example, adopted.Usage)
	}
	if len(c.Samples) < 2 {
		t.Fatalf("capacity: %d samples", len(c.Samples))
	}
	for i, sc := range c.Samples {
		deadLettered := i == len(c.Samples)-1
		if sc.Per[topology.ArchiveStream] <= float64(sc.Body) || (sc.Per[topology.EventsStream] > 0) == deadLettered ||
			(sc.Per[topology.DLQStream] > 0) != deadLettered {
			t.Errorf("capacity: %s: %+v", sc.Name, sc)
		}
	}
	if c.DLQ.Msgs == 0 || c.Streams[topology.EventsStream].Msgs == 0 {
		t.Errorf("capacity: streams %+v, DLQ %+v", c.Streams, c.DLQ)
	}
}

// logWriter sends the driver's report to the test log, shown with -v or on failure.
type logWriter struct{ t *testing.T }

func (w *logWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// The Go benchmarks share one platform and one embedded nats-server, started on first use.
var (
	benchOnce sync.Once
	benchEnv  *goBench
	benchErr  error
)

func goBenchEnv(b *testing.B) *goBench {
	benchOnce.Do(func() {
		p, err := wechatsim.NewPlatform(mchid)
		if err != nil {
			benchErr = err
			return
		}
		f, err := newFactory(p)
		if err != nil {
			benchErr = err
			return
		}
		n, err := startNATS(natsEmbedded)
		if err != nil {
			benchErr = err
			return
		}
		benchEnv = newGoBench(p, f, n)
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchEnv
}

func TestMain(m *testing.M) {
	// The test binary serves as the bench's nats-server child, as the bench binary does.
	if dir := os.Getenv(natsChildEnv); dir != "" {
		os.Exit(serveNATSChild(dir))
	}
	code := m.Run()
	if benchEnv != nil {
		benchEnv.nats.Stop()
	}
	os.Exit(code)
}

// BenchmarkBareVerify: read the body, verify the signature (internal/verify), answer 204.
func BenchmarkBareVerify(b *testing.B) { goBenchEnv(b).benchBareVerify(b) }

// BenchmarkInlineSDK: wechatpay-go's notify.Handler, verify and decrypt, no downstream step.
func BenchmarkInlineSDK(b *testing.B) { goBenchEnv(b).benchInlineSDK(b) }

// BenchmarkReceiverHandler: the receiver's handler storing each notification in JetStream (file
// storage, embedded server over loopback) and waiting for its PubAck; one request at a time.
func BenchmarkReceiverHandler(b *testing.B) { goBenchEnv(b).benchReceiverHandler(b) }

// BenchmarkReceiverHandlerParallel: the same with 4×GOMAXPROCS requests in flight.
func BenchmarkReceiverHandlerParallel(b *testing.B) { goBenchEnv(b).benchReceiverHandlerParallel(b) }

// BenchmarkStepVerify: internal/verify alone.
func BenchmarkStepVerify(b *testing.B) { goBenchEnv(b).benchStepVerify(b) }

// BenchmarkStepEnvelope: envelope.Parse, run by the receiver and again by the consumer.
func BenchmarkStepEnvelope(b *testing.B) { goBenchEnv(b).benchStepEnvelope(b) }

// BenchmarkStepDecrypt: AES-256-GCM of the resource (consumer).
func BenchmarkStepDecrypt(b *testing.B) { goBenchEnv(b).benchStepDecrypt(b) }

// BenchmarkStepEvent: events.Build and the CloudEvent encoding (consumer).
func BenchmarkStepEvent(b *testing.B) { goBenchEnv(b).benchStepEvent(b) }

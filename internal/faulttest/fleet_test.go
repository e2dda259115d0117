package faulttest

import (
	"context"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/consumer"
	"github.com/wxpay-events/wxpay-events/internal/dedupe"
	"github.com/wxpay-events/wxpay-events/internal/testenv/audit"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
)

// gateDedupe holds every claim until the gate opens, counting the claims waiting at once: a worker
// stopped there holds its message, so the count is the fleet's parallelism.
type gateDedupe struct {
	consumer.Deduper
	open    chan struct{}
	waiting *atomic.Int64
	peak    *atomic.Int64
}

func (g gateDedupe) Claim(ctx context.Context, key string) (dedupe.Claim, error) {
	n := g.waiting.Add(1)
	for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
	}
	select {
	case <-g.open:
	case <-ctx.Done():
	}
	g.waiting.Add(-1)
	return g.Deduper.Claim(ctx, key)
}

// The durable consumer's fleet-wide settings have one owner, the configuration that `wxpayctl streams
// apply` and every consumer process read alike (CONSUMER_MAX_ACK_PENDING, CONSUMER_ACK_WAIT,
// CONSUMER_MAX_DELIVER): N processes of W workers hold N×W notifications at once, and the durable keeps
// the configured limit whatever each process's workers. Each process used to set MaxAckPending to
// max(64, 8×its own workers), which capped this fleet of 10×8 at 64.
func TestFleetInFlight(t *testing.T) {
	const procs, workers, maxAckPending = 10, 8, 200
	p := pipelinetest.StartWith(t, pipelinetest.Options{Env: map[string]string{
		"CONSUMER_WORKERS":         strconv.Itoa(workers),
		"CONSUMER_MAX_ACK_PENDING": strconv.Itoa(maxAckPending),
		"CONSUMER_ACK_WAIT":        "30s", // the gate holds messages for seconds; none may be redelivered meanwhile
		"CONSUMER_MAX_DELIVER":     "7",
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// What the init container does before every consumer pod: the same variables, the same code.
	sc, err := config.LoadStreams(nil, func(k string) string { return p.Env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	report, err := topology.Apply(ctx, p.JetStream(), sc.Topology(), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("streams apply: %v", report.Changes)
	durable := func() (maxAck, maxDeliver int, ackWait time.Duration, ackPending int) {
		t.Helper()
		c, err := p.JetStream().Consumer(ctx, topology.InboundStream, topology.ConsumerName)
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.Config.MaxAckPending, info.Config.MaxDeliver, info.Config.AckWait, info.NumAckPending
	}

	rc, err := dedupe.NewUniversalClient(dedupe.ClientOptions{URL: p.Redis.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	gate := gateDedupe{Deduper: dedupe.NewRedis(rc, dedupe.Options{}), open: make(chan struct{}), waiting: new(atomic.Int64), peak: new(atomic.Int64)}
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(gate.open) }) })
	for range procs {
		p.StartConsumer(pipelinetest.ConsumerOptions{Dedupe: gate})
		if got, _, _, _ := durable(); got != maxAckPending {
			t.Fatalf("a consumer process set MaxAckPending to %d; CONSUMER_MAX_ACK_PENDING is %d", got, maxAckPending)
		}
	}

	// More facts than the fleet can hold, so that every worker gets one.
	a := audit.New(nil)
	l := newLoad(t, p.Pipeline, a)
	facts := procs*workers + 40
	l.start(ctx, 0, facts, 8)()
	if n := l.gaveUp.Load(); n > 0 {
		t.Fatalf("%d notifications not acknowledged", n)
	}
	want := int64(procs * workers)
	waitFor(t, 30*time.Second, 10*time.Millisecond, "every worker of every process holding a notification", func() bool {
		return gate.waiting.Load() == want
	})
	maxAck, maxDeliver, ackWait, held := durable()
	if held < procs*workers {
		t.Errorf("the durable consumer counts %d messages unacknowledged while %d workers each hold one", held, procs*workers)
	}
	if maxAck != maxAckPending || maxDeliver != 7 || ackWait != 30*time.Second {
		t.Errorf("durable: MaxAckPending %d, MaxDeliver %d, AckWait %s; want the configuration's %d, 7, 30s", maxAck, maxDeliver, ackWait, maxAckPending)
	}
	release.Do(func() { close(gate.open) })

	r := settle(t, p.Pipeline, a, time.Minute, p.Logs.String)
	if r.Events != facts || r.DLQ != 0 {
		t.Errorf("%d events and %d dead letters for %d facts", r.Events, r.DLQ, facts)
	}
	if peak := gate.peak.Load(); peak > want {
		t.Errorf("%d claims waited at once with %d workers in all", peak, want)
	}
	t.Logf("%d processes × %d workers: %d notifications held at once (peak %d), %d unacknowledged in the durable; MaxAckPending %d, MaxDeliver %d, AckWait %s",
		procs, workers, want, gate.peak.Load(), held, maxAck, maxDeliver, ackWait)
}

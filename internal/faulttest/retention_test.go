package faulttest

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/testenv/audit"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
)

// Only unprocessed notifications can make the receiver refuse. With a small INBOUND_MAX_BYTES, many
// times the cap is stored and processed and the receiver keeps answering 204: processed notifications
// leave WECHATPAY_INBOUND (their copies stay in WECHATPAY_ARCHIVE). With the consumer stopped the cap
// fills with unprocessed work and the receiver answers 503 at once; nothing stored is evicted, and
// when the consumer is back every notification answered 204 becomes its event. The inbound stream used
// to keep processed notifications for 7 days, so the cap was reached by finished work and every later
// notification refused.
func TestInboundHoldsOnlyUnprocessed(t *testing.T) {
	const limit = 256 << 10
	p := pipelinetest.StartWith(t, pipelinetest.Options{Env: map[string]string{
		"INBOUND_MAX_BYTES": strconv.Itoa(limit),
		"CONSUMER_WORKERS":  "8",
	}})
	stop := p.StartConsumer(fastConsumer(t, p.Pipeline))
	a := audit.New(nil)
	l := newLoad(t, p.Pipeline, a)
	l.give = 10 * time.Second // a full stream of finished work would never take another one
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Many times the cap through a consumer that keeps up.
	facts := size(480, 4000)
	l.start(ctx, 0, facts, 4)()
	if n := l.gaveUp.Load(); n > 0 {
		t.Fatalf("%d notifications were refused until the sender gave up: finished work fills the inbound stream", n)
	}
	waitFor(t, 30*time.Second, 20*time.Millisecond, "every notification processed and copied", func() bool {
		return p.Count(topology.ArchiveStream) == uint64(l.sent.Load()) && p.Settled() && p.Count(topology.InboundStream) == 0
	})
	archived := streamBytes(t, p.Pipeline, topology.ArchiveStream)
	if archived < 4*limit {
		t.Fatalf("only %d bytes went through a %d-byte inbound stream; the test means many times the cap", archived, limit)
	}
	steady := a.Codes()

	// The consumer stops: the unprocessed work fills the cap, and the receiver refuses at once.
	stop()
	refusedFrom := time.Now()
	more := facts + size(200, 1000)
	wait := l.start(ctx, facts, more, 4)
	waitFor(t, time.Minute, 10*time.Millisecond, "the inbound stream full of unprocessed work", func() bool {
		return a.Codes()[http.StatusServiceUnavailable] >= steady[http.StatusServiceUnavailable]+20
	})
	var slowest503 time.Duration
	for _, ans := range a.Answers() {
		if ans.Code == http.StatusServiceUnavailable && ans.At.After(refusedFrom) {
			slowest503 = max(slowest503, ans.Latency)
		}
	}
	if slowest503 > time.Second {
		t.Errorf("a full inbound stream took %s to refuse; it should answer at once, not wait for the publish timeout", slowest503)
	}
	held := streamBytes(t, p.Pipeline, topology.InboundStream)
	if held > limit {
		t.Errorf("the inbound stream holds %d bytes, over its %d-byte cap", held, limit)
	}

	// The consumer comes back: WeChat's retries are stored as room is made, nothing stored is lost.
	p.StartConsumer(fastConsumer(t, p.Pipeline))
	wait()
	if n := l.gaveUp.Load(); n > 0 {
		t.Fatalf("%d notifications not acknowledged after the consumer came back", n)
	}
	onlyCodes(t, a, http.StatusNoContent, http.StatusServiceUnavailable)
	r := settle(t, p.Pipeline, a, time.Minute, p.Logs.String)
	if r.Facts != more || r.Events != more || r.DLQ != 0 {
		t.Errorf("%d facts accepted, %d events, %d dead letters; want %d, %d, 0", r.Facts, r.Events, r.DLQ, more, more)
	}
	t.Logf("cap %d B: %d notifications (%d B) stored and processed with %d×503 while the consumer ran; stopped, the cap filled with %d B of unprocessed work and the receiver refused within %s",
		limit, notifications(facts), archived, steady[http.StatusServiceUnavailable], held, slowest503.Round(time.Microsecond))
}

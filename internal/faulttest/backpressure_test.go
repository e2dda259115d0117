package faulttest

import (
	"context"
	"net/http"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/consumer"
	"github.com/wxpay-events/wxpay-events/internal/dedupe"
	"github.com/wxpay-events/wxpay-events/internal/testenv/audit"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
)

// slowDedupe makes every claim take d: a downstream that keeps up badly.
type slowDedupe struct {
	consumer.Deduper
	d time.Duration
}

func (s slowDedupe) Claim(ctx context.Context, key string) (dedupe.Claim, error) {
	select {
	case <-time.After(s.d):
	case <-ctx.Done():
		return dedupe.Claim{}, ctx.Err()
	}
	return s.Deduper.Claim(ctx, key)
}

// A slow consumer does not slow the receiver down; with no consumer at all and a small inbound limit,
// the receiver stays fast until the stream is full and then answers 503 (DiscardNew), never 204.
func TestSlowAndStuckDownstream(t *testing.T) {
	const limit = 128 << 10
	p := pipelinetest.StartWith(t, pipelinetest.Options{Env: map[string]string{
		"INBOUND_MAX_BYTES": strconv.Itoa(limit),
		"CONSUMER_WORKERS":  "1",
	}})
	a := audit.New(nil)
	run := newLoad(t, p.Pipeline, a).run
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	post := func(i int) (int, time.Duration) {
		eventType, plain := factPlaintext(run, i)
		fact, _ := audit.FactOf(eventType, plain)
		n, err := p.Platform.Build(eventType, plain, wechatsim.Options{})
		if err != nil {
			t.Fatal(err)
		}
		a.Expect(n.ID, fact, true)
		start := time.Now()
		code := a.Post(ctx, p.URL, n)
		return code, time.Since(start)
	}

	// Slow: the consumer needs 100 ms a message; the receiver's answers do not wait for it.
	slow := fastConsumer(t, p.Pipeline)
	slow.Dedupe = slowDedupe{slow.Dedupe, 100 * time.Millisecond}
	stopSlow := p.StartConsumer(slow)
	var fast []time.Duration
	i := 0
	for ; i < 20; i++ {
		code, d := post(i)
		if code != http.StatusNoContent {
			t.Fatalf("notification %d with a slow consumer: %d", i, code)
		}
		fast = append(fast, d)
	}
	stopSlow()

	// Stuck: no consumer. Fill the stream until the receiver refuses.
	first503 := -1
	var refused []time.Duration
	for ; i < 2000 && len(refused) < 20; i++ {
		code, d := post(i)
		switch {
		case code == http.StatusNoContent && first503 < 0:
			fast = append(fast, d)
		case code == http.StatusServiceUnavailable:
			if first503 < 0 {
				first503 = i
			}
			refused = append(refused, d)
		default:
			t.Fatalf("notification %d: %d after the stream filled up at %d; want 503", i, code, first503)
		}
	}
	if first503 < 0 {
		t.Fatalf("the receiver never refused although the inbound stream is limited to %d bytes", limit)
	}
	sort.Slice(fast, func(i, j int) bool { return fast[i] < fast[j] })
	sort.Slice(refused, func(i, j int) bool { return refused[i] < refused[j] })
	p99, slowest := fast[len(fast)*99/100], fast[len(fast)-1]
	if slowest > time.Second || refused[len(refused)-1] > time.Second {
		t.Errorf("answers were not fast: slowest 204 %s, slowest 503 %s", slowest, refused[len(refused)-1])
	}
	bytes := streamBytes(t, p.Pipeline, topology.InboundStream)
	if bytes > limit {
		t.Errorf("inbound stream holds %d bytes, over its %d limit", bytes, limit)
	}

	// Back to normal: everything that was acknowledged is processed, nothing else.
	p.StartConsumer(fastConsumer(t, p.Pipeline))
	r := settle(t, p.Pipeline, a, time.Minute, p.Logs.String)
	if r.Accepted != first503 || r.Events != first503 {
		t.Errorf("%d accepted and %d events; want the %d answered before the stream filled", r.Accepted, r.Events, first503)
	}
	code, _ := post(i)
	t.Logf("stream full at %d notifications (%d bytes of %d); 204s p50 %s p99 %s max %s; 503s max %s; after the backlog was processed a new notification got %d",
		first503, bytes, limit, fast[len(fast)/2].Round(time.Microsecond), p99.Round(time.Microsecond), slowest.Round(time.Microsecond),
		refused[len(refused)-1].Round(time.Microsecond), code)
}

func streamBytes(t *testing.T, p *pipelinetest.Pipeline, stream string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := p.JetStream().Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Bytes
}

package faulttest

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/consumer"
	"github.com/wxpay-events/wxpay-events/internal/dedupe"
	"github.com/wxpay-events/wxpay-events/internal/events"
	"github.com/wxpay-events/wxpay-events/internal/testenv/audit"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
)

// Redis dies in the middle of the load and comes back empty (redistest restarts without persistence, the
// worst case: every "done" mark is forgotten). Consumers retry while it is down; the facts already
// published are not published again, because the event ids are deterministic and WECHATPAY_EVENTS drops
// a repeated id within its duplicate window.
func TestRedisRestartDuringLoad(t *testing.T) {
	facts := size(400, 3000)
	p := pipelinetest.StartWith(t, pipelinetest.Options{Env: map[string]string{"CONSUMER_WORKERS": "4"}})
	co := fastConsumer(t, p.Pipeline)
	p.StartConsumer(co)
	p.StartConsumer(co)
	a := audit.New(nil)
	l := newLoad(t, p.Pipeline, a)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	wait := l.start(ctx, 0, facts, 8)

	waitFor(t, time.Minute, 5*time.Millisecond, "a quarter of the facts published", func() bool { return eventCount(p.Pipeline) >= uint64(facts/4) })
	p.Redis.Stop()
	stopped := time.Now()
	atStop := eventCount(p.Pipeline)
	// While Redis is down nothing can be claimed: the consumers retry (what was claimed before may finish).
	retried := func() int { return strings.Count(p.Logs.String(), `"outcome":"retried"`) }
	before := retried()
	waitFor(t, 30*time.Second, 20*time.Millisecond, "20 retries during the outage", func() bool { return retried() >= before+20 })
	duringOutage := eventCount(p.Pipeline) - atStop
	p.Redis.Restart()
	outage := time.Since(stopped)
	wait()
	if n := l.gaveUp.Load(); n > 0 {
		t.Fatalf("%d notifications not acknowledged", n)
	}
	onlyCodes(t, a, http.StatusNoContent) // the receiver never needs Redis
	r := settle(t, p.Pipeline, a, 2*time.Minute, p.Logs.String)
	if r.Events != facts {
		t.Errorf("%d events for %d facts", r.Events, facts)
	}
	t.Logf("%d facts, %d notifications in %s; Redis down %s at %d events, %d published meanwhile (claimed before), %d retries logged in all",
		facts, l.sent.Load(), time.Since(start).Round(time.Millisecond), outage.Round(time.Millisecond), atStop, duringOutage, retried())
}

// Redis fills up under load, configured as the manifests configure it: maxmemory with maxmemory-policy
// noeviction. Claims of new facts then fail with OOM; the consumer retries them with its delays (it neither
// drops them nor burns its deliveries), publishes nothing it has not claimed, and still finishes the facts
// it had claimed. Once maxmemory is raised every fact is published exactly once.
func TestRedisFullRefusesClaimsAndLosesNothing(t *testing.T) {
	facts := size(240, 3000)
	const warm = 40
	p := pipelinetest.StartWith(t, pipelinetest.Options{Env: map[string]string{"CONSUMER_WORKERS": "4"}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	raw := redis.NewClient(&redis.Options{Addr: p.Redis.Addr()})
	t.Cleanup(func() { _ = raw.Close() })

	// The consumer as the program builds it: its own Redis client and start-up check, the default lease.
	cfg, err := config.LoadConsumer(nil, func(k string) string { return p.Env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c, err := consumer.New(ctx, cfg, zerolog.New(p.Logs), consumer.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- c.Serve(cctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("consumer stopped with %v", err)
		}
	})
	admin := "http://" + c.AdminAddr().String()
	oomClaims := func() float64 {
		return metricValue(scrape(t, admin), `wxpay_consumer_dedupe_errors_total{kind="oom",op="claim"}`)
	}

	// Every fact's Redis key, to check that whatever is published was claimed first.
	a := audit.New(nil)
	l := newLoad(t, p.Pipeline, a)
	keyOf := map[string]string{} // event id → Redis key of its fact
	for i := range facts {
		eventType, plain := factPlaintext(l.run, i)
		evs, err := events.Build(events.Notification{ID: "n", EventType: eventType, CreateTime: time.Now().Format(time.RFC3339), MchID: pipelinetest.MchID}, plain)
		if err != nil || len(evs) != 1 {
			t.Fatalf("fact %d: %v", i, err)
		}
		keyOf[evs[0].ID] = dedupe.Key(dedupe.DefaultPrefix, evs[0].DedupeKey)
	}
	publishedWereClaimed := func() int {
		t.Helper()
		msgs, err := audit.ReadStream(ctx, p.JetStream(), topology.EventsStream)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			id := m.Header.Get(jetstream.MsgIDHeader)
			key, ok := keyOf[id]
			if !ok {
				t.Fatalf("event %s is none of the facts sent", id)
			}
			v, err := raw.Get(ctx, key).Result()
			if err != nil || (v != "1" && !strings.HasPrefix(v, "processing:")) {
				t.Fatalf("event %s is published but its fact is not claimed in Redis (%q, %v)", id, v, err)
			}
		}
		return len(msgs)
	}

	// Warm up with memory to spare: connections pooled, scripts loaded.
	l.start(ctx, 0, warm, 8)()
	waitFor(t, time.Minute, 20*time.Millisecond, "the warm-up facts published", func() bool { return eventCount(p.Pipeline) == warm })

	// Full at once: maxmemory well below what Redis uses. A few kilobytes of room above used_memory did not
	// stay a few kilobytes: within seconds Redis frees idle clients' query buffers (100 KB and more here),
	// and the room grew to hundreds of facts, sometimes all of them.
	info, err := raw.InfoMap(ctx, "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	used, err := strconv.ParseInt(info["Memory"]["used_memory"], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.ConfigSet(ctx, "maxmemory", strconv.FormatInt(used/2, 10)).Err(); err != nil {
		t.Fatal(err)
	}
	loadAt := time.Now()
	wait := l.start(ctx, warm, facts, 8)

	waitFor(t, time.Minute, 20*time.Millisecond, "claims refused with OOM", func() bool { return oomClaims() > 0 })
	fullAt := time.Now()
	// Wait until some notification has been refused three times: with the consumer's retry delays (1 s,
	// then 2 s) that takes seconds; without them it would take milliseconds.
	deliveries := regexp.MustCompile(`"deliveries":(\d+),"outcome":"retried"`)
	maxDeliveries := func() int {
		n := 0
		for _, m := range deliveries.FindAllStringSubmatch(p.Logs.String(), -1) {
			d, _ := strconv.Atoi(m[1])
			n = max(n, d)
		}
		return n
	}
	waitFor(t, time.Minute, 20*time.Millisecond, "a notification refused three times", func() bool { return maxDeliveries() >= 3 })
	if d := time.Since(fullAt); d < 2*time.Second {
		t.Errorf("three deliveries within %s of the first OOM: the retries are not delayed", d)
	}
	wait() // every notification is stored: the receiver does not need Redis
	if n := l.gaveUp.Load(); n > 0 {
		t.Fatalf("%d notifications not acknowledged by the receiver", n)
	}
	onlyCodes(t, a, http.StatusNoContent)
	publishedWhileFull := publishedWereClaimed()
	if n := p.Count(topology.DLQStream); n != 0 {
		t.Fatalf("%d notifications dead-lettered while Redis was full", n)
	}
	if !strings.Contains(p.Logs.String(), "OOM command not allowed") {
		t.Fatal("no retry names Redis's OOM reply")
	}
	oom, worst, full := oomClaims(), maxDeliveries(), time.Since(fullAt)
	if allowed := retryLadderDeliveries(time.Since(loadAt)); worst > allowed {
		t.Errorf("a notification was delivered %d times within %s; the retry delays allow %d", worst, time.Since(loadAt).Round(time.Millisecond), allowed)
	}

	// Room again: what waited is published, once.
	if err := raw.ConfigSet(ctx, "maxmemory", "64mb").Err(); err != nil {
		t.Fatal(err)
	}
	r := settle(t, p.Pipeline, a, 2*time.Minute, p.Logs.String)
	if r.Events != facts || r.DLQ != 0 {
		t.Errorf("%d events and %d DLQ entries for %d facts", r.Events, r.DLQ, facts)
	}
	publishedWereClaimed()
	t.Logf("%d facts; %d published before Redis was full, "+
		"%d claims refused with OOM, at most %d deliveries of one notification in %s of full Redis",
		facts, publishedWhileFull, int(oom), worst, full.Round(time.Millisecond))
}

// retryLadderDeliveries is how many deliveries of one notification the consumer's retry delays (1 s, 2 s,
// 5 s, 10 s, 30 s, then every minute) allow within d of its first, with a second of slack.
func retryLadderDeliveries(d time.Duration) int {
	n, at := 1, time.Duration(0)
	for _, step := range []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second} {
		if at += step; at > d+time.Second {
			return n
		}
		n++
	}
	return n + int((d+time.Second-at)/time.Minute)
}

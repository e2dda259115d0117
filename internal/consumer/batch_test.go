package consumer_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/consumer"
	"github.com/wxpay-events/wxpay-events/internal/decrypt"
	"github.com/wxpay-events/wxpay-events/internal/dedupe"
	"github.com/wxpay-events/wxpay-events/internal/dlq"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
)

var _ consumer.BatchDeduper = (*dedupe.Redis)(nil)

// failingJS is the real JetStream, except that the event of one transaction is published to a subject
// no stream stores, so that the server refuses it (no responders) as it would a misrouted event.
type failingJS struct {
	jetstream.JetStream
	fail string // a transaction id
}

func (f failingJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	if bytes.Contains(m.Data, []byte(f.fail)) {
		m.Subject = "nowhere." + f.fail
	}
	return f.JetStream.PublishMsgAsync(m, opts...)
}

func payment(i string) []byte {
	return fmt.Appendf(nil, `{"mchid":"%s","transaction_id":"%s","out_trade_no":"o","trade_state":"SUCCESS","success_time":"2026-11-11T00:00:00+08:00","amount":{"total":1,"payer_total":1,"currency":"CNY","payer_currency":"CNY"}}`, mchid, i)
}

// outcomes reads the processor's log: notification id → the outcome (and reason) of its last line.
func outcomes(t *testing.T, logs string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var l struct {
			Message        string `json:"message"`
			NotificationID string `json:"notification_id"`
			Outcome        string `json:"outcome"`
			Reason         string `json:"reason"`
		}
		if json.Unmarshal([]byte(line), &l) != nil || l.Message != "notification processed" {
			continue
		}
		out[l.NotificationID] = strings.TrimSuffix(l.Outcome+" "+l.Reason, " ")
	}
	return out
}

// One batch through real Redis and real JetStream, each message settled on its own: a new fact is
// published and acknowledged; a fact already done is acknowledged without an event; the same new fact
// twice in the batch is published once, its second copy busy and retried; a fact whose publish the
// server refuses is retried with its claim given back; an unparsable notification is dead-lettered.
// The retried ones then go through a consumer, and every fact ends with exactly one event.
func TestBatchSettlesEachMessageOnItsOwn(t *testing.T) {
	p := pipelinetest.Start(t, nil)
	ctx := t.Context()
	cfg, err := config.LoadConsumer(nil, func(k string) string { return p.Env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	layout := cfg.Topology()
	if err := topology.Ensure(ctx, p.JetStream(), layout); err != nil {
		t.Fatal(err)
	}
	cons, err := topology.EnsureConsumer(ctx, p.JetStream(), layout)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := dedupe.NewUniversalClient(dedupe.ClientOptions{URL: p.Redis.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	ci, err := decrypt.New(p.Platform.APIv3Key)
	if err != nil {
		t.Fatal(err)
	}
	logs := &pipelinetest.SyncBuffer{}
	proc := &consumer.Processor{
		Ciphers:     map[string]consumer.Cipher{mchid: ci},
		Dedupe:      dedupe.NewRedis(rc, dedupe.Options{}),
		JS:          failingJS{JetStream: p.JetStream(), fail: "T-FAIL"},
		Log:         zerolog.New(logs),
		Metrics:     consumer.NewMetrics(prometheus.NewRegistry()),
		MaxDeliver:  20,
		CallTimeout: 3 * time.Second,
	}
	if !proc.Batches() {
		t.Fatal("a Processor on *dedupe.Redis does not batch")
	}
	handle := func(notes ...wechatsim.Notification) {
		t.Helper()
		for _, n := range notes {
			if code := p.Post(n); code != http.StatusNoContent {
				t.Fatalf("receiver answered %d", code)
			}
		}
		batch, err := cons.Fetch(len(notes), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if len(msgs) != len(notes) {
			t.Fatalf("fetched %d of %d messages", len(msgs), len(notes))
		}
		proc.HandleBatch(ctx, msgs)
	}

	done := p.Build("TRANSACTION.SUCCESS", payment("T-DONE"), wechatsim.Options{})
	handle(done)

	var (
		fresh     = p.Build("TRANSACTION.SUCCESS", payment("T-NEW"), wechatsim.Options{})
		repeat    = p.Build("TRANSACTION.SUCCESS", payment("T-DONE"), wechatsim.Options{}) // WeChat sends a fact again
		twiceA    = p.Build("TRANSACTION.SUCCESS", payment("T-TWICE"), wechatsim.Options{})
		twiceB    = p.Build("TRANSACTION.SUCCESS", payment("T-TWICE"), wechatsim.Options{})
		refused   = p.Build("TRANSACTION.SUCCESS", payment("T-FAIL"), wechatsim.Options{})
		malformed = p.Build("REFUND.SUCCESS", []byte(`{"out_refund_no":"no refund_id"}`), wechatsim.Options{})
	)
	handle(fresh, repeat, twiceA, twiceB, refused, malformed)

	got := outcomes(t, logs.String())
	for id, want := range map[string]string{
		done.ID:      "published",
		fresh.ID:     "published",
		repeat.ID:    "duplicate",
		twiceA.ID:    "published",
		twiceB.ID:    "retried",
		refused.ID:   "retried",
		malformed.ID: "dead_lettered " + dlq.ReasonMalformed,
	} {
		if got[id] != want {
			t.Errorf("notification %s: %q, want %q", id, got[id], want)
		}
	}
	if n := p.Count(topology.EventsStream); n != 3 {
		t.Errorf("%d events after the batch, want 3 (T-DONE, T-NEW, T-TWICE)", n)
	}
	if n := p.Count(topology.DLQStream); n != 1 {
		t.Errorf("%d dead letters, want 1", n)
	}
	// The refused fact's claim was given back: its retry need not wait for the lease.
	key := dedupe.Key(dedupe.DefaultPrefix, mchid+":payment.succeeded:T-FAIL")
	if err := rc.Get(ctx, key).Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("the refused fact's key %s: %v, want it released", key, err)
	}
	for _, tx := range []string{"T-DONE", "T-NEW", "T-TWICE"} {
		if v, err := rc.Get(ctx, dedupe.Key(dedupe.DefaultPrefix, mchid+":payment.succeeded:"+tx)).Result(); v != "1" {
			t.Errorf("fact %s: %q, %v; want done", tx, v, err)
		}
	}
	logText := logs.String()
	if !strings.Contains(logText, `"error":"consumer: business fact being processed by another worker"`) ||
		!strings.Contains(logText, "publish domain event") {
		t.Errorf("the retried messages' log lines do not say why:\n%s", logText)
	}

	// The retries, through a consumer whose publishes all succeed: every fact ends with one event.
	p.StartConsumer(pipelinetest.ConsumerOptions{})
	p.WaitFor(30*time.Second, "retried messages settled", func() bool { return p.Count(topology.EventsStream) == 4 && p.Settled() })
	seen := map[string]int{}
	for _, e := range p.Events() {
		seen[e.Subject]++
	}
	for _, tx := range []string{"T-DONE", "T-NEW", "T-TWICE", "T-FAIL"} {
		if seen[tx] != 1 {
			t.Errorf("transaction %s: %d events, want 1", tx, seen[tx])
		}
	}
}

// A batch whose Redis is down publishes nothing: every message is retried, none dead-lettered, none
// acknowledged; when Redis is back they are published once each.
func TestBatchWithRedisDown(t *testing.T) {
	p := pipelinetest.Start(t, map[string]string{"CONSUMER_WORKERS": "2", "CONSUMER_BATCH": "8"})
	p.StartConsumer(pipelinetest.ConsumerOptions{})
	p.Redis.Stop()
	for i := range 20 {
		if code := p.Post(p.Build("TRANSACTION.SUCCESS", payment(fmt.Sprintf("T%05d", i)), wechatsim.Options{})); code != http.StatusNoContent {
			t.Fatalf("post %d: %d", i, code)
		}
	}
	p.WaitFor(20*time.Second, "failed deliveries", func() bool {
		return strings.Count(p.Logs.String(), `"outcome":"retried"`) >= 20
	})
	if n := p.Count(topology.EventsStream); n != 0 {
		t.Fatalf("%d events while Redis was down", n)
	}
	p.Redis.Restart()
	p.WaitFor(30*time.Second, "published after Redis returned", func() bool { return p.Count(topology.EventsStream) == 20 && p.Settled() })
	if n := p.Count(topology.DLQStream); n != 0 {
		t.Fatalf("%d dead letters", n)
	}
}
